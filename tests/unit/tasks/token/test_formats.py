"""Every seed corpus format loads to the same canonical dataset and passes validation."""

import json
from pathlib import Path

import pytest
from conftest import SHARED_DATA

from nerflow import NerflowError
from nerflow.core.dataset import split_by_ratio
from nerflow.steps.data import prepare_data
from nerflow.steps.validate import validate_dataset
from nerflow.tasks.token.data import read_corpus, sentences
from nerflow.tasks.token.readers import read_conll, read_klue, to_iob2

needs_shared = pytest.mark.skipif(not SHARED_DATA.exists(), reason="../shared/data is not on this machine")
SPLIT_FILES = ("train", "validation", "test")


def conll_params(conll_dir):
    return {s: str(conll_dir / f"{s}.txt") for s in SPLIT_FILES}


def resave(splits: dict, tmp_path: Path, level: str = "word") -> dict[str, dict]:
    """{split: sentences} re-saved as HF-on-disk (ClassLabel ids), JSONL (tag strings) and
    Parquet (integer ids + label list); returns the data params for each."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Sequence, Value

    tmp_path.mkdir(parents=True, exist_ok=True)
    labels = sorted({t for ss in splits.values() for s in ss for t in s.tags})
    features = Features({"tokens": Sequence(Value("string")), "ner_tags": Sequence(ClassLabel(names=labels))})
    DatasetDict({
        s: Dataset.from_dict({"tokens": [x.tokens for x in ss], "ner_tags": [[labels.index(t) for t in x.tags] for x in ss]},
                             features=features)
        for s, ss in splits.items()
    }).save_to_disk(str(tmp_path / "hf"))
    out = {"hf": {"path": str(tmp_path / "hf")}, "jsonl": {}, "parquet": {"label_names": labels}}
    for s, ss in splits.items():
        with open(tmp_path / f"{s}.jsonl", "w", encoding="utf-8") as fh:
            for x in ss:
                fh.write(json.dumps({"tokens": x.tokens, "ner_tags": x.tags}, ensure_ascii=False) + "\n")
        pq.write_table(pa.table({"tokens": [x.tokens for x in ss], "ner_tags": [[labels.index(t) for t in x.tags] for x in ss]}),
                       tmp_path / f"{s}.parquet")
        out["jsonl"][s] = str(tmp_path / f"{s}.jsonl")
        out["parquet"][s] = str(tmp_path / f"{s}.parquet")
    return {fmt: {**p, "level": level} for fmt, p in out.items()}


def assert_same_dataset_in_every_format(reference_params: dict, tmp_path: Path, level: str = "word",
                                        validate: dict | None = None) -> dict:
    """The reference corpus and its HF / JSONL / Parquet copies give one canonical dataset,
    and every one of them passes validation (with the ``validate`` params)."""
    validate = validate or {}
    reference = prepare_data(reference_params, tmp_path / "reference")
    assert validate_dataset(validate, tmp_path / "reference", tmp_path / "report-reference")["errors"] == 0
    tables, *_ = read_corpus(reference_params)
    splits = {split: list(sentences(table)) for split, table in tables.items()}
    for fmt, params in resave(splits, tmp_path / "resaved", level).items():
        manifest = prepare_data(params, tmp_path / f"out-{fmt}")
        assert manifest["content_hash"] == reference["content_hash"], fmt
        assert manifest["labels"] == reference["labels"] and manifest["splits"] == reference["splits"], fmt
        assert manifest["level"] == reference["level"], fmt
        assert validate_dataset(validate, tmp_path / f"out-{fmt}", tmp_path / f"report-{fmt}")["errors"] == 0, fmt
    return reference


def test_conll_hf_jsonl_parquet_give_identical_datasets(conll_dir, tmp_path):
    assert_same_dataset_in_every_format(conll_params(conll_dir), tmp_path)


def test_seeded_ratio_split_is_repeatable_and_complete(conll_dir):
    n = len(read_conll(conll_dir / "train.txt"))
    a = split_by_ratio(n, {"train": 0.8, "validation": 0.1, "test": 0.1}, seed=7)
    b = split_by_ratio(n, {"train": 0.8, "validation": 0.1, "test": 0.1}, seed=7)
    c = split_by_ratio(n, {"train": 0.8, "validation": 0.1, "test": 0.1}, seed=8)
    assert [len(a[s]) for s in SPLIT_FILES] == [192, 24, 24]
    assert a == b and a["test"] != c["test"]
    assert sorted(i for s in SPLIT_FILES for i in a[s]) == list(range(n))


@pytest.mark.parametrize("scheme, tags, expected", [
    ("iob1", ["I-PER", "I-PER", "O", "I-LOC", "B-LOC", "I-ORG"], ["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "B-ORG"]),
    ("bioes", ["S-PER", "B-LOC", "I-LOC", "E-LOC", "O"], ["B-PER", "B-LOC", "I-LOC", "I-LOC", "O"]),
    ("bilou", ["U-PER", "B-LOC", "L-LOC"], ["B-PER", "B-LOC", "I-LOC"]),
])
def test_scheme_conversion_to_iob2(scheme, tags, expected):
    assert to_iob2(tags, scheme) == expected


def test_iob1_file_is_refused_unless_declared(tmp_path):
    text = "John NNP I-PER\nlives VBZ O\nin IN O\nNew NNP I-LOC\nYork NNP I-LOC\n"
    for split in SPLIT_FILES:  # one sentence per split, not the same in two (that would be leakage)
        (tmp_path / f"{split}.txt").write_text(text + f"{split} NN O\n")
    params = {s: str(tmp_path / f"{s}.txt") for s in SPLIT_FILES}
    prepare_data(params, tmp_path / "ds")
    summary = validate_dataset({"fail_on_error": False}, tmp_path / "ds", tmp_path / "r")
    iob2 = next(c for c in summary["checks"] if c["name"] == "iob2")
    assert iob2["failing_rows"] == 6 and "data.scheme" in iob2["check"]
    prepare_data({**params, "scheme": "iob1"}, tmp_path / "ds")
    assert validate_dataset({}, tmp_path / "ds", tmp_path / "r")["errors"] == 0


@needs_shared
def test_wnut17_counts_and_validation(tmp_path):
    wnut = SHARED_DATA / "wnut17"
    train, dev = read_conll(wnut / "wnut17train.conll"), read_conll(wnut / "emerging.dev.conll")
    from nerflow.tasks.token.data import count_entities

    assert (len(train), sum(len(s.tokens) for s in train), sum(count_entities(s.tags) for s in train)) == (3394, 62730, 1975)
    assert (len(dev), sum(len(s.tokens) for s in dev), sum(count_entities(s.tags) for s in dev)) == (1009, 15733, 836)
    params = {"train": str(wnut / "wnut17train.conll"), "validation": str(wnut / "emerging.dev.conll"),
              "test": str(wnut / "emerging.dev.conll")}
    # 4 dev tokens hold a zero-width space (e.g. 'watched\u200bwas'), 0.004% of the tokens: with the default
    # params a warning that names them, not a stopped run (the official corpus of the HF guide)
    manifest = assert_same_dataset_in_every_format(params, tmp_path)
    assert len(manifest["labels"]) == 13
    summary = validate_dataset({}, tmp_path / "reference", tmp_path / "r")
    assert summary["errors"] == 0 and summary["success"]
    control = next(c for c in summary["checks"] if c["name"] == "control_characters")
    assert control["failing_rows"] == 4 and "emerging.dev.conll:15556" in json.dumps(control)
    assert control["severity"] == "warning" and not control["success"]
    stops = next(c for c in summary["checks"] if c["name"] == "control_characters.error_fraction")
    assert stops["success"] and stops["severity"] == "error"
    # the strict contract is one setting away: any such token stops the run
    strict = {"checks": {"control_characters": {"severity": "error"}}}
    assert validate_dataset(dict(strict, fail_on_error=False), tmp_path / "reference", tmp_path / "s")["errors"] >= 1
    # the emerging-entities dev set is known to shift the type mix: reported as a warning
    drift = {d["compared"]: d["distance"] for d in summary["drift"]}
    assert drift["validation vs train"] == pytest.approx(0.347, abs=0.001)


@needs_shared
def test_klue_ner_characters_counts_and_validation(tmp_path):
    path = SHARED_DATA / "klue-ner" / "klue-ner-v1.1_dev.tsv"
    sentences = read_klue(path)
    from nerflow.tasks.token.data import count_entities

    assert len(sentences) == 5000
    assert sum(len(s.tokens) for s in sentences) == 285929
    assert sum(count_entities(s.tags) for s in sentences) == 14257
    first = sentences[0]
    assert first.id == "klue-ner-v1_dev_00000-wikitree" and "".join(first.tokens).startswith("경찰은 또 성매매")
    assert first.tags[:3] == ["B-OG", "I-OG", "O"] and first.line == 7
    manifest = assert_same_dataset_in_every_format({"path": str(path), "split_seed": 0}, tmp_path, level="char")
    assert manifest["level"] == "char" and sum(v["sentences"] for v in manifest["splits"].values()) == 5000
    assert len(manifest["labels"]) == 13


CONLL2002 = {"train": "esp.train", "validation": "esp.testa", "test": "esp.testb"}


@needs_shared
def test_conll2002_spanish_official_counts_and_latin1_copy(tmp_path):
    """UTF-8 bytes, IOB2 tags (B- starts, I- continues; one sentence per file starts inside an
    entity, a sentence cut at a period): the defaults read it; the counts are the official ones."""
    source = SHARED_DATA / "conll2002-es"
    params = {**{s: str(source / f) for s, f in CONLL2002.items()}, "scheme": "iob2", "encoding": "utf-8"}
    manifest = prepare_data(params, tmp_path / "utf8")
    assert manifest["splits"] == {"train": {"sentences": 8323, "tokens": 264715, "entities": 18798},
                                  "validation": {"sentences": 1915, "tokens": 52923, "entities": 4352},
                                  "test": {"sentences": 1517, "tokens": 51533, "entities": 3559}}
    assert manifest["labels"] == ["O", "B-LOC", "I-LOC", "B-MISC", "I-MISC", "B-ORG", "I-ORG", "B-PER", "I-PER"]
    for split, name in CONLL2002.items():  # the same corpus re-encoded in latin-1
        (tmp_path / name).write_bytes((source / name).read_text(encoding="utf-8").encode("latin-1"))
    latin1 = {**{s: str(tmp_path / f) for s, f in CONLL2002.items()}, "scheme": "iob2", "encoding": "latin-1"}
    assert prepare_data(latin1, tmp_path / "latin1")["content_hash"] == manifest["content_hash"]
    with pytest.raises(NerflowError, match=r"esp\.train:\d+: not UTF-8 .*data\.encoding"):
        prepare_data({**latin1, "encoding": "utf-8"}, tmp_path / "wrong")


def test_full_report_on_the_default_corpus_slice(conll_dir, tiny_model, tmp_path):
    prepare_data(conll_params(conll_dir), tmp_path / "ds")
    summary = validate_dataset({"tokenizer": str(tiny_model), "max_length": 32}, tmp_path / "ds", tmp_path / "r")
    names = {c["name"] for c in summary["checks"]}
    assert names == {"lengths_match", "sentence_length", "duplicates", "duplicates.error_fraction", "length_outliers",
                     "subtoken_overflow", "leakage", "leakage.error_fraction", "empty_token", "control_characters", "control_characters.error_fraction", "tag_format", "iob2",
                     "labels_in_train", "min_entities_per_type", "type_drift"}
    assert summary["type_counts"]["train"]["PER"] > 0
    # with max_length 32 the tiny char-level vocab overflows often: counted and reported, never an error
    over = summary["over_max_length"]
    assert over["sentences"] > 0 and over["entities"] > 0
    assert next(c for c in summary["checks"] if c["name"] == "subtoken_overflow")["severity"] == "warning"
    html = (tmp_path / "r" / "report.html").read_text()
    assert "Entities per type" in html and "Sentences over max_length (32)" in html
