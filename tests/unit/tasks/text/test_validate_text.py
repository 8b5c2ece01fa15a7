"""Great Expectations validation of the canonical text-classification dataset (real GX runs)."""

import itertools
import json

import pytest
from conftest import build_tiny_bert

from nerflow.core.config import Checks
from nerflow.core.files import write_json
from nerflow.core.gx import format_table
from nerflow.steps.validate import ValidationFailed, validate_dataset

SPLITS = ("train", "validation", "test")
ADJECTIVES = ["good", "bad", "great", "poor", "fine", "dull", "nice", "awful"]
NOUNS = ["film", "movie", "plot", "cast", "story", "scene", "ending", "actor"]
TAILS = ["today", "again", "indeed", "overall"]
# distinct short texts, 4 words each (6 sub-tokens with [CLS] and [SEP] in the tiny vocab)
PHRASES = [f"the {a} {n} {t}" for t, n, a in itertools.product(TAILS, NOUNS, ADJECTIVES)]
LONG = "the good film " + " ".join(ADJECTIVES[:7])  # 10 words: 12 sub-tokens

TEXT_CHECKS = {"empty_text", "duplicates", "duplicates.error_fraction", "leakage", "leakage.error_fraction",
               "label_set", "rare_labels", "labels_in_train", "class_balance", "class_drift", "length_outliers",
               "subtoken_overflow"}
NER_ONLY = {"lengths_match", "sentence_length", "empty_token", "control_characters", "control_characters.error_fraction", "tag_format", "iob2",
            "min_entities_per_type", "type_drift"}


def balanced(start: int, n: int) -> list[tuple[str, str]]:
    """``n`` distinct texts from PHRASES[start:], labelled 0, 1, 0, 1, ..."""
    return [(PHRASES[start + i], str(i % 2)) for i in range(n)]


TRAIN, DEV, TEST = balanced(0, 40), balanced(40, 10), balanced(50, 10)


def text_dataset(tmp_path, train=TRAIN, validation=DEV, test=TEST, labels=("0", "1"), label_set_from="params",
                 name="ds"):
    """A canonical text dataset as the data step writes it from TSV files with a header: row i of
    a split is line i + 2 of ``<split>.tsv``."""
    from datasets import Dataset, DatasetDict, Features, Value, disable_progress_bars

    disable_progress_bars()
    features = Features({"text": Value("string"), "label": Value("string"), "source_line": Value("int32"),
                         "id": Value("string"), "source": Value("string")})
    rows = {"train": train, "validation": validation, "test": test}
    out = tmp_path / name
    DatasetDict({split: Dataset.from_dict({
        "text": [t for t, _ in r], "label": [lab for _, lab in r], "source_line": [i + 2 for i in range(len(r))],
        "id": [str(i + 1) for i in range(len(r))], "source": [""] * len(r)}, features=features)
        for split, r in rows.items()}).save_to_disk(str(out))
    write_json(out / "manifest.json", {
        "task": "text-classification", "content_hash": "c0ffee", "level": "text", "labels": list(labels),
        "label_set_from": label_set_from, "formats": {s: "tsv" for s in SPLITS},
        "source_units": {s: "row_lines" for s in SPLITS}, "sources": {s: f"{s}.tsv" for s in SPLITS},
        "splits": {s: {"texts": len(r), "characters": sum(len(t or "") for t, _ in r),
                       "label_counts": {lab: sum(x == lab for _, x in r) for lab in sorted({x for _, x in r})}}
                   for s, r in rows.items()}})
    return out


def checks_of(report_dir):
    return {c["name"]: c for c in json.loads((report_dir / "results.json").read_text())["checks"]}


NO_TOKENIZER = {"tokenizer": None}


@pytest.fixture(scope="module")
def tiny_tokenizer(tmp_path_factory):
    """A WordPiece vocab holding every word of the texts: one sub-token per word."""
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-text-bert"), ["the"] + ADJECTIVES + NOUNS + TAILS)


def test_clean_corpus_passes_with_the_text_checks_only(tmp_path):
    ds = text_dataset(tmp_path)
    summary = validate_dataset(NO_TOKENIZER, ds, tmp_path / "report")
    assert summary["success"] and summary["warnings"] == 0 and summary["task"] == "text-classification"
    names = {c["name"] for c in summary["checks"]}
    assert names == TEXT_CHECKS and not names & NER_ONLY
    assert all(c["failing_rows"] == 0 for c in summary["checks"])
    assert summary["label_counts"] == {"train": {"0": 20, "1": 20}, "validation": {"0": 5, "1": 5},
                                       "test": {"0": 5, "1": 5}}
    assert summary["class_balance"]["train"]["ratio"] == 1.0
    assert [d["distance"] for d in summary["drift"]] == [0.0, 0.0]
    checks = checks_of(tmp_path / "report")
    assert checks["empty_text"]["rows"] == 60 and checks["leakage"]["rows"] == 20 and checks["class_balance"]["rows"] == 3
    html = (tmp_path / "report" / "report.html").read_text()
    assert "Data validation PASSED" in html and "task: text-classification" in html
    assert "<tr><td>train</td><td>40</td><td>" in html and "<td>20</td><td>20</td></tr>" in html
    assert "Entities per type" not in html and "the label_set check runs" in html
    assert format_table(summary).splitlines()[-1] == (
        "texts over max_length 128 sub-tokens: 0 (train 0, validation 0, test 0; tokenizer not given)")


def test_stray_label_in_a_binary_column_is_a_rare_label_at_its_line(tmp_path):
    """NSMC's train file holds one row labelled 3 among 0/1: the label set read from the data
    takes it in (label_set does not run), and rare_labels names the row."""
    train = TRAIN[:7] + [("the fine film overall", "3")] + TRAIN[7:]
    ds = text_dataset(tmp_path, train, labels=("0", "1", "3"), label_set_from="data")
    with pytest.raises(ValidationFailed) as err:
        validate_dataset(NO_TOKENIZER, ds, tmp_path / "report")
    msg = str(err.value)
    assert "1 error check(s)" in msg
    assert ("every label has at least 3 train texts (a rarer one is most likely a typo): 1 row(s) (1.639%), "
            "first at train text 7 (train.tsv:9) label '3' text 'the fine film overall'") in msg
    checks = checks_of(tmp_path / "report")
    assert "label_set" not in checks and checks["rare_labels"]["severity"] == "error"
    results = json.loads((tmp_path / "report" / "results.json").read_text())
    assert results["rare_labels"]["train_counts"] == {"3": 1} and results["label_set"]["from"] == "data"
    html = (tmp_path / "report" / "report.html").read_text()
    assert "the label_set check is not run" in html and "3 (1)" in html
    # min_count 1 lets it through
    assert validate_dataset({**NO_TOKENIZER, "checks": {"rare_labels": {"min_count": 1}}}, ds, tmp_path / "r2")["success"]


def test_label_outside_data_label_names_fails_label_set(tmp_path):
    train = TRAIN[:7] + [("the fine film overall", "3")] + TRAIN[7:]
    test = TEST[:4] + [("the dull cast overall", "2")] + TEST[4:]
    ds = text_dataset(tmp_path, train, test=test)
    with pytest.raises(ValidationFailed) as err:
        validate_dataset(NO_TOKENIZER, ds, tmp_path / "report")
    msg = str(err.value)
    assert "3 error check(s)" in msg
    assert "every label is in data.label_names (0, 1): 2 row(s) (3.226%), first at train text 7 (train.tsv:9) label '3'" in msg
    checks = checks_of(tmp_path / "report")
    assert [e["line"] for e in checks["label_set"]["examples"]] == ["train.tsv:9", "test.tsv:6"]
    assert checks["rare_labels"]["failing_rows"] == 2  # "3" once in train, "2" never
    assert checks["labels_in_train"]["failing_rows"] == 1
    assert checks["labels_in_train"]["examples"][0] == {"split": "test", "text": 4, "line": "test.tsv:6", "label": "2",
                                                        "excerpt": "the dull cast overall"}
    assert json.loads((tmp_path / "report" / "results.json").read_text())["label_set"]["outside"] == {"3": 1, "2": 1}


def test_empty_whitespace_and_null_texts(tmp_path):
    train = TRAIN[:3] + [("", "0"), ("the good cast", "1"), (None, "0"), ("  \u3000\t", "1")] + TRAIN[3:]
    ds = text_dataset(tmp_path, train)
    with pytest.raises(ValidationFailed) as err:
        validate_dataset(NO_TOKENIZER, ds, tmp_path / "report")
    msg = str(err.value)
    assert ("no empty, whitespace-only or null text: 3 row(s) (4.688%), first at train text 3 (train.tsv:5) "
            "label '0' text ''") in msg
    checks = checks_of(tmp_path / "report")
    assert [e["line"] for e in checks["empty_text"]["examples"]] == ["train.tsv:5", "train.tsv:7", "train.tsv:8"]
    assert checks["empty_text"]["examples"][1]["excerpt"] is None
    assert checks["duplicates"]["failing_rows"] == 0  # blank texts are empty_text's, not duplicates


def test_duplicates_within_a_split_name_the_earlier_text(tmp_path):
    train = TRAIN + [(t, "1" if lab == "0" else "0") for t, lab in TRAIN[:12]]  # 12 repeats, the other label
    ds = text_dataset(tmp_path, train)
    summary = validate_dataset(NO_TOKENIZER, ds, tmp_path / "report")
    check = checks_of(tmp_path / "report")["duplicates"]
    assert summary["success"] and summary["warnings"] == 1
    assert check["severity"] == "warning" and not check["success"] and check["failing_rows"] == 12
    assert check["failing_percent"] == 16.667 and "the exact same text" in check["check"]
    first = check["examples"][0]
    assert first["line"] == "train.tsv:42" and first["label"] == "1"
    assert first["same_as"] == "train text 0 (train.tsv:2) label '0'"  # the same text with another label
    # above error_fraction the run stops, whatever the severity
    with pytest.raises(ValidationFailed, match=r"duplicate texts within a split \(the exact same text\) at most 15% "
                                               r"\(error_fraction: above it the run stops\): 12 row\(s\)"):
        validate_dataset({**NO_TOKENIZER, "checks": {"duplicates": {"error_fraction": 0.15}}}, ds, tmp_path / "r2")


def test_leakage_from_train(tmp_path):
    test = TEST[:7] + [TRAIN[5], TRAIN[9], TRAIN[5]]
    ds = text_dataset(tmp_path, test=test)
    summary = validate_dataset(NO_TOKENIZER, ds, tmp_path / "report")
    checks = checks_of(tmp_path / "report")
    assert summary["success"] and not checks["leakage"]["success"] and checks["leakage"]["failing_rows"] == 3
    assert checks["leakage"]["failing_percent"] == 15.0
    first = checks["leakage"]["examples"][0]
    assert first["split"] == "test" and first["line"] == "test.tsv:9"
    assert first["same_as"].startswith("train text 5 (train.tsv:7)")
    assert checks["duplicates"]["failing_rows"] == 1  # the second copy in test
    ds = text_dataset(tmp_path, validation=TRAIN[10:20], test=TRAIN[:10], name="copied")
    with pytest.raises(ValidationFailed, match=r"dev/test texts also in train \(the exact same text\) at most 50% "
                                               r"\(error_fraction: above it the run stops\): 20 row\(s\) \(100.0%\)"):
        validate_dataset(NO_TOKENIZER, ds, tmp_path / "r2")  # leakage is a warning check by default


def test_class_balance_is_a_warning_per_split(tmp_path):
    train = [(PHRASES[i], "0") for i in range(33)] + [(PHRASES[33 + i], "1") for i in range(3)]
    test = [(t, "0") for t, _ in TEST]  # no 1 at all
    ds = text_dataset(tmp_path, train, test=test)
    summary = validate_dataset({**NO_TOKENIZER, "checks": {"class_drift": {"severity": "off"}}}, ds, tmp_path / "r")
    check = checks_of(tmp_path / "r")["class_balance"]
    assert summary["success"] and check["severity"] == "warning" and check["failing_rows"] == 2
    assert check["check"] == "largest / smallest class count at most 10 in every split"
    assert check["examples"] == [
        {"split": "train", "largest_class": "0", "largest": 33, "smallest_class": "1", "smallest": 3, "ratio": 11.0},
        {"split": "test", "largest_class": "0", "largest": 10, "smallest_class": "1", "smallest": 0, "ratio": None}]
    assert summary["class_balance"]["validation"]["ratio"] == 1.0
    html = (tmp_path / "r" / "report.html").read_text()
    assert "a class is absent" in html and "<td>0 (33)</td><td>1 (3)</td><td>11.0</td>" in html
    assert validate_dataset({**NO_TOKENIZER, "checks": {"class_drift": {"severity": "off"},
                                                        "class_balance": {"max_ratio": 11}}}, ds, tmp_path / "r2")[
        "warnings"] == 1  # test still lacks a class


def test_class_drift_against_train_and_a_reference(tmp_path):
    dev = [(PHRASES[40 + i], "0" if i < 8 else "1") for i in range(10)]  # 80% / 20% against train's 50% / 50%
    ds = text_dataset(tmp_path, validation=dev)
    reference = tmp_path / "earlier.json"
    write_json(reference, {"class_shares": {"train": {"0": 0.9, "1": 0.1}}})
    summary = validate_dataset({**NO_TOKENIZER, "drift_reference": str(reference)}, ds, tmp_path / "r")
    check = checks_of(tmp_path / "r")["class_drift"]
    assert summary["success"] and check["failing_rows"] == 2 and check["rows"] == 3
    assert [(d["compared"], round(d["distance"], 6)) for d in summary["drift"]] == [
        ("validation vs train", 0.3), ("test vs train", 0.0), (f"train vs {reference}", 0.4)]
    assert check["examples"][0] == {"compared": "validation vs train", "distance": pytest.approx(0.3)}
    assert summary["class_shares"]["validation"] == {"0": 0.8, "1": 0.2}
    assert "validation vs train: 0.300" in (tmp_path / "r" / "report.html").read_text()
    results = json.loads((tmp_path / "r" / "results.json").read_text())
    assert results["class_shares"]["train"] == {"0": 0.5, "1": 0.5}  # what a later run's drift_reference reads


def test_length_outliers(tmp_path):
    long_text = "the awful ending " * 20  # 340 characters
    train = TRAIN[:10] + [(long_text, "0")] + TRAIN[10:]
    ds = text_dataset(tmp_path, train)
    summary = validate_dataset(NO_TOKENIZER, ds, tmp_path / "r")
    check = checks_of(tmp_path / "r")["length_outliers"]
    assert summary["success"] and check["failing_rows"] == 1 and not check["success"]  # 1 of 61: above 1%
    assert check["examples"][0]["line"] == "train.tsv:12" and check["examples"][0]["excerpt"].endswith("...")
    assert 20 < summary["length_outlier_limit"] < 340


def test_subtoken_overflow_counts_texts_over_max_length(tmp_path, tiny_tokenizer):
    train = TRAIN[:3] + [(LONG, "1"), (LONG + " again", "0")] + TRAIN[3:]
    test = TEST + [(LONG, "1")]
    ds = text_dataset(tmp_path, train, test=test)
    params = {"tokenizer": str(tiny_tokenizer), "max_length": 8, "checks": {"duplicates": {"severity": "off"},
                                                                               "leakage": {"severity": "off"}}}
    summary = validate_dataset(params, ds, tmp_path / "r")
    check = checks_of(tmp_path / "r")["subtoken_overflow"]
    assert summary["success"] and check["failing_rows"] == 3 and check["severity"] == "warning"
    assert [e["line"] for e in check["examples"]] == ["train.tsv:5", "train.tsv:6", "test.tsv:12"]
    over = summary["over_max_length"]
    assert over["texts"] == 3 and over["per_split"] == {"train": 2, "validation": 0, "test": 1}
    assert "head and tail" in over["note"] and "does not window" in over["note"]
    assert format_table(summary).splitlines()[-1].startswith(
        "texts over max_length 8 sub-tokens: 3 (train 2, validation 0, test 1; preprocess keeps each one's head and tail")
    html = (tmp_path / "r" / "report.html").read_text()
    assert "Texts over max_length (8) sub-tokens: 3 (train 2, validation 0, test 1)" in html
    # 12 sub-tokens is over 11, not over 12
    assert validate_dataset({**params, "max_length": 12}, ds, tmp_path / "r2")["over_max_length"]["texts"] == 1


def test_subtoken_lengths_equal_the_tokenizer_on_each_text(tmp_path, tiny_tokenizer):
    from nerflow.core.dataset import load_dataset_dir, read_manifest
    from nerflow.core.inference import load_tokenizer
    from nerflow.tasks.text.encode import encode
    from nerflow.tasks.text.validate import read_texts, subtoken_lengths

    texts = [t for t, _ in TRAIN[:5]] + [LONG, "", None, "Zürich 東京 naïve", LONG, "the good film"]
    ds = text_dataset(tmp_path, [(t, "0") for t in texts])
    counted = subtoken_lengths(str(tiny_tokenizer), read_texts(load_dataset_dir(ds), read_manifest(ds)))
    tokenizer = load_tokenizer(str(tiny_tokenizer))
    assert counted[: len(texts)].tolist() == encode(tokenizer, texts, 512).lengths
    assert counted[5] == 12 and counted[6] == 2


def test_each_task_runs_only_its_own_checks(conll_dir, tmp_path):
    from nerflow.steps.data import prepare_data
    from nerflow.tasks.text import validate as validate_text
    from nerflow.tasks.token import validate

    ner = {e.meta["check"].split(".")[0] for es in validate.expectations(Checks()).values() for e in es}
    text = {e.meta["check"].split(".")[0] for es in validate_text.expectations(
        Checks(), {"label_set": {"from": "params"}}).values() for e in es}
    text_only = {"empty_text", "label_set", "rare_labels", "class_balance", "class_drift"}
    assert not ner & text_only and not text & NER_ONLY
    prepare_data({s: str(conll_dir / f"{s}.txt") for s in SPLITS}, tmp_path / "ner")
    summary = validate_dataset(NO_TOKENIZER, tmp_path / "ner", tmp_path / "r")
    names = {c["name"] for c in summary["checks"]}
    assert summary["task"] == "token-classification" and len(names) == 16 and not names & text_only
    assert format_table(summary).splitlines()[-1] == "sentences over max_length 128 sub-tokens: 0 (0 entities; tokenizer not given)"
    assert "Entities per type" in (tmp_path / "r" / "report.html").read_text()


def test_from_a_tsv_through_the_data_step(tmp_path):
    """The data step's dataset of a TSV with a header (NSMC's layout) validated end to end."""
    from nerflow.steps.data import prepare_data

    def tsv(name, rows):
        path = tmp_path / name
        path.write_text("id\tdocument\tlabel\n" + "".join(f"{i}\t{t}\t{lab}\n" for i, (t, lab) in enumerate(rows, 1)),
                        encoding="utf-8")
        return str(path)

    train = TRAIN[:7] + [("the fine film overall", "3")] + TRAIN[7:]
    paths = {"train": tsv("train.tsv", train), "validation": tsv("dev.tsv", DEV), "test": tsv("test.tsv", TEST)}
    prepare_data({"task": "text-classification", **paths, "label_names": ["0", "1"]}, tmp_path / "ds")
    with pytest.raises(ValidationFailed) as err:
        validate_dataset(NO_TOKENIZER, tmp_path / "ds", tmp_path / "r")
    msg = str(err.value)
    assert "2 error check(s)" in msg and f"first at train text 7 ({paths['train']}:9) label '3'" in msg
    checks = checks_of(tmp_path / "r")
    assert checks["label_set"]["failing_rows"] == 1 and checks["rare_labels"]["failing_rows"] == 1
    assert "<tr><td>train</td><td>41</td>" in (tmp_path / "r" / "report.html").read_text()
