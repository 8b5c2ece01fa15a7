"""Every file in examples/ works on a user's machine as written: valid params (an unknown or
misspelled key would stop every step), corpus sources that are Hub ids, the embedded corpus or
a folder of the user's (data/...), never this checkout's ../shared. What runs offline runs here:
the user-data examples as written on files put where they say, and each Hub example's offline
variant (the official files in the layout its comment names) through data and validation."""

import csv
import json
import re
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, SHARED_DATA, write_params

from nerflow.cli import main
from nerflow.core.config import load_params, source_list
from nerflow.tasks.token.readers import read_conll

EXAMPLES = {p.name: p for p in sorted((ROOT / "examples").glob("*.yaml"))}
HUB = {"wnut17.yaml", "klue-ner.yaml", "nsmc.yaml", "cross-lingual.yaml"}
USER = {"my-corpus.yaml", "my-texts.yaml"}
# each Hub example's offline variant: {data key: files under ../shared/data}, named as in its comment
OFFLINE = {
    "wnut17.yaml": {"train": "wnut17/wnut17train.conll", "validation": "wnut17/emerging.dev.conll",
                    "test": "wnut17/emerging.dev.conll"},
    "klue-ner.yaml": {"path": "klue-ner/klue-ner-v1.1_dev.tsv"},
    "nsmc.yaml": {"train": "nsmc/ratings_train.txt", "test": "nsmc/ratings_test.txt"},
    "cross-lingual.yaml": {"train": [{"path": "pkg:neuroner/data/conll2003/en/train.txt", "source": "en"},
                                     {"path": "conll2002-es/esp.train", "source": "es"}],
                           "validation": [{"path": "pkg:neuroner/data/conll2003/en/valid.txt", "source": "en"},
                                          {"path": "conll2002-es/esp.testa", "source": "es"}],
                           "test": [{"path": "pkg:neuroner/data/conll2003/en/test.txt", "source": "en"},
                                    {"path": "conll2002-es/esp.testb", "source": "es"}]},
}


def effective(path: Path, capsys) -> dict:
    capsys.readouterr()
    assert main(["--params", str(path), "params", "--json"]) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


def sources(path: Path) -> list:
    """The corpus sources an example names (nerflow.core.config.Source)."""
    data = load_params(path).data
    return [src for key in (["path"] if data.path else ["train", "validation", "test"])
            for src in source_list(getattr(data, key))]


def test_every_example_is_valid_and_names_only_the_hub_the_package_or_the_users_folder(capsys):
    assert set(EXAMPLES) == HUB | USER
    for name, path in EXAMPLES.items():
        text = path.read_text()
        assert "shared" not in text and "/work" not in text, name
        p = effective(path, capsys)  # valid through the CLI: every key known, every value in range
        for src in sources(path):
            if src.hub:
                assert re.fullmatch(r"[\w.-]+/[\w.-]+(@\w+)?", src.hub), (name, src)
            else:
                assert src.path.startswith(("pkg:", "data/")), (name, src)
        on_hub = any(src.hub for src in sources(path))
        assert on_hub is (name in HUB), name
        # the commands in its header are real: `nerflow --params examples/<name> ...`
        assert f"nerflow --params examples/{name} " in text, name
        # the model the example trains is one a user has without the Hub or an extra step
        assert p["train"]["model"].startswith(("asset:", "pkg:")), (name, p["train"]["model"])
        if name in OFFLINE:  # its offline comment names the files the offline run below reads
            for rel in re.findall(r"[\w.-]+\.(?:conll|tsv|txt|train|testa|testb)\b", json.dumps(OFFLINE[name])):
                if not rel.startswith(("train.txt", "valid.txt", "test.txt")):
                    assert rel in text, (name, rel)


def test_a_misspelled_key_in_an_example_copy_is_refused(tmp_path, capsys):
    broken = yaml.safe_load(EXAMPLES["wnut17.yaml"].read_text())
    broken["gate"]["min_f11"] = 0.4
    pfile = write_params(broken, tmp_path / "wnut17.yaml")
    capsys.readouterr()
    assert main(["--params", str(pfile), "params"]) == 2
    assert "gate.min_f11" in capsys.readouterr().err


def data_and_validate(pfile: Path, work: Path, capsys) -> dict:
    capsys.readouterr()
    assert main(["--params", str(pfile), "data", "--out", str(work / "dataset")]) == 0, capsys.readouterr().err
    code = main(["--params", str(pfile), "validate", "--dataset", str(work / "dataset"), "--report", str(work / "report")])
    assert code == 0, capsys.readouterr().err
    return json.loads((work / "report" / "results.json").read_text())


def test_user_data_examples_run_as_written_on_files_put_where_they_say(conll_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "data" / "my-corpus"
    folder.mkdir(parents=True)
    for split, name in (("train", "train.txt"), ("validation", "dev.txt"), ("test", "test.txt")):
        shutil.copy(conll_dir / f"{split}.txt", folder / name)
    summary = data_and_validate(EXAMPLES["my-corpus.yaml"], tmp_path / "ner", capsys)
    assert summary["success"] and summary["type_counts"]["train"]["PER"] > 0

    rows = [(" ".join(s.tokens), "person" if "B-PER" in s.tags else "other")
            for split in ("train", "validation", "test") for s in read_conll(conll_dir / f"{split}.txt")]
    with open(tmp_path / "data" / "my-texts.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    summary = data_and_validate(EXAMPLES["my-texts.yaml"], tmp_path / "texts", capsys)
    assert summary["success"] and set(summary["label_counts"]["train"]) == {"person", "other"}
    assert sum(summary["label_counts"][s][c] for s in summary["label_counts"] for c in ("person", "other")) == len(rows)


@pytest.mark.parametrize("name", sorted(OFFLINE))
def test_hub_examples_offline_variant_passes_data_and_validation(name, tmp_path, capsys):
    """The example as written but for its corpus, read from the official files in their own layout
    (../shared/data here; skipped where it is absent): its reader options, checks and tokenizer hold
    on the real corpus, and the default data contract passes with at most warnings."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not here (a developer checkout has it beside the repository)")

    def here(value):
        if isinstance(value, list):
            return [here(v) for v in value]
        if isinstance(value, dict):
            return {**value, "path": here(value["path"])}
        return value if value.startswith("pkg:") else str(SHARED_DATA / value)

    p = yaml.safe_load(EXAMPLES[name].read_text())
    for key in ("path", "train", "validation", "test"):
        if p["data"].get(key) is not None:  # the Hub sources; a null (no dev split) stays null
            del p["data"][key]
    p["data"].update({k: here(v) for k, v in OFFLINE[name].items()}, max_sentences=2000)
    summary = data_and_validate(write_params(p, tmp_path / name), tmp_path, capsys)
    assert summary["success"] and summary["errors"] == 0
    assert all(c["success"] for c in summary["checks"] if c["severity"] == "error")
