"""Great Expectations validation of the canonical dataset (real GX runs)."""

import json
import shutil

import pytest

from nerflow.data import prepare_data
from nerflow.validate import ValidationFailed, validate_dataset


def make_dataset(conll_dir, tmp_path, train_extra: str = "", test_extra: str = ""):
    d = tmp_path / "src"
    d.mkdir(exist_ok=True)
    for split in ("train", "validation", "test"):
        shutil.copy(conll_dir / f"{split}.txt", d / f"{split}.txt")
    for split, extra in (("train", train_extra), ("test", test_extra)):
        if extra:
            with open(d / f"{split}.txt", "a", encoding="utf-8") as fh:
                fh.write("\n" + extra)
    params = {s: str(d / f"{s}.txt") for s in ("train", "validation", "test")}
    prepare_data(params, tmp_path / "ds")
    return tmp_path / "ds", d


def test_real_slice_passes_with_report(conll_dir, tmp_path):
    ds, _ = make_dataset(conll_dir, tmp_path)
    summary = validate_dataset({}, ds, tmp_path / "report")
    assert summary["success"] and len(summary["checks"]) == 13
    assert all(c["failing_rows"] == 0 for c in summary["checks"] if c["severity"] == "error")
    results = json.loads((tmp_path / "report" / "results.json").read_text())
    assert results["great_expectations"][0]["success"] is True
    html = (tmp_path / "report" / "report.html").read_text()
    assert "Data validation PASSED" in html and "valid IOB2" in html


def test_invalid_iob2_stops_with_split_sentence_and_line(conll_dir, tmp_path):
    lines_before = (conll_dir / "train.txt").read_text().count("\n")
    ds, src = make_dataset(conll_dir, tmp_path, train_extra="In IN B-PP O\nParis NNP B-NP I-LOC\n")
    with pytest.raises(ValidationFailed) as err:
        validate_dataset({}, ds, tmp_path / "report")
    msg = str(err.value)
    assert "valid IOB2" in msg and "1 row(s)" in msg and "train sentence 240" in msg
    assert f"{src / 'train.txt'}:{lines_before + 3}" in msg and "'Paris'" in msg
    # the report is written even though the run stops
    results = json.loads((tmp_path / "report" / "results.json").read_text())
    assert results["success"] is False
    assert "Data validation FAILED" in (tmp_path / "report" / "report.html").read_text()


def test_unknown_and_malformed_labels(conll_dir, tmp_path):
    ds, _ = make_dataset(conll_dir, tmp_path, test_extra="Bob NNP B-NP B-PERSON\nsaw VBD B-VP O\nb-per NN B-NP x\n")
    with pytest.raises(ValidationFailed):
        validate_dataset({}, ds, tmp_path / "report")
    checks = {c["check"]: c for c in json.loads((tmp_path / "report" / "results.json").read_text())["checks"]}
    assert checks["every tag is O, B-<type> or I-<type>"]["failing_rows"] == 1
    assert checks["every dev/test label occurs in train"]["failing_rows"] == 2  # B-PERSON and "x"


def test_warning_mode_reports_without_stopping(conll_dir, tmp_path):
    ds, _ = make_dataset(conll_dir, tmp_path, train_extra="In IN B-PP O\nParis NNP B-NP I-LOC\n")
    summary = validate_dataset({"fail_on_error": False}, ds, tmp_path / "report")
    assert summary["success"] is False
