"""The CoNLL reader and the canonical dataset."""

from pathlib import Path

import pytest

from nerflow import NerflowError
from nerflow.core.dataset import content_hash, load_dataset_dir
from nerflow.steps.data import prepare_data
from nerflow.tasks.token.data import count_entities, label_list
from nerflow.tasks.token.readers import read_conll


def write(tmp_path: Path, text: str | bytes, name: str = "f.txt") -> Path:
    p = tmp_path / name
    p.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return p


def test_reads_conll2003_columns_and_skips_docstart(tmp_path):
    p = write(tmp_path, "-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\nPeter NNP B-NP B-PER\nBlackburn NNP I-NP I-PER\n")
    sents = read_conll(p)
    assert [s.tokens for s in sents] == [["EU", "rejects"], ["Peter", "Blackburn"]]
    assert [s.tags for s in sents] == [["B-ORG", "O"], ["B-PER", "I-PER"]]
    assert [s.line for s in sents] == [3, 6]


def test_tab_separated_crlf_and_bom_read_the_same_as_spaces(tmp_path):
    spaced = write(tmp_path, "New B-LOC\nYork I-LOC\n\nhi O\n", "a.txt")
    tabbed = write(tmp_path, b"\xef\xbb\xbfNew\tB-LOC\r\nYork\tI-LOC\r\n\r\nhi\tO\r\n", "b.txt")
    a, b = read_conll(spaced), read_conll(tabbed)
    assert [(s.tokens, s.tags) for s in a] == [(s.tokens, s.tags) for s in b]
    assert content_hash({"train": [(s.tokens, s.tags) for s in a]}) == content_hash({"train": [(s.tokens, s.tags) for s in b]})


def test_tag_column_is_configurable(tmp_path):
    p = write(tmp_path, "Paris B-LOC NNP\n")
    assert read_conll(p, {"tag_column": 1})[0].tags == ["B-LOC"]


@pytest.mark.parametrize(
    "content, problem",
    [
        (b"", "no sentences"),
        (b"-DOCSTART- -X- -X- O\n\n", "no sentences"),
        (b"EU B-ORG\nrejects\n", ":2: expected a token and a tag"),
        (b"EU NNP B-ORG\nrejects O\n", ":2: 2 columns where earlier lines have 3"),
        (b"EU B-ORG\nM\xfcnchen B-LOC\n", ":2: not UTF-8"),
        (b"EU B-ORG\nx\x00y O\n", ":2: NUL byte"),
    ],
)
def test_malformed_files_name_file_line_and_problem(tmp_path, content, problem):
    p = write(tmp_path, content)
    with pytest.raises(NerflowError) as err:
        read_conll(p)
    assert str(p) in str(err.value) and problem in str(err.value)


def test_label_order_and_entity_counts():
    assert label_list({"I-PER", "O", "B-LOC", "B-PER", "I-LOC"}) == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    assert count_entities(["B-PER", "I-PER", "O", "I-LOC", "I-LOC", "B-LOC", "I-ORG"]) == 4


def test_prepare_data_on_real_conll_slice(conll_dir, tmp_path):
    params = {"train": str(conll_dir / "train.txt"), "validation": str(conll_dir / "validation.txt"),
              "test": str(conll_dir / "test.txt")}
    manifest = prepare_data(params, tmp_path / "ds")
    assert {s: v["sentences"] for s, v in manifest["splits"].items()} == {"train": 240, "validation": 60, "test": 60}
    assert manifest["labels"] == ["O", "B-LOC", "I-LOC", "B-MISC", "I-MISC", "B-ORG", "I-ORG", "B-PER", "I-PER"]
    ds = load_dataset_dir(tmp_path / "ds")
    first = ds["train"][0]
    names = ds["train"].features["ner_tags"].feature.names
    assert first["tokens"][:3] == ["EU", "rejects", "German"]
    assert [names[t] for t in first["ner_tags"][:3]] == ["B-ORG", "O", "B-MISC"]
    assert first["source_line"] == 3
    # the same content always gives the same version
    assert prepare_data(params, tmp_path / "ds2")["content_hash"] == manifest["content_hash"]


def test_failed_data_step_leaves_previous_output_untouched(conll_dir, tmp_path):
    good = {"train": str(conll_dir / "train.txt"), "validation": str(conll_dir / "validation.txt"),
            "test": str(conll_dir / "test.txt")}
    out = tmp_path / "ds"
    before = prepare_data(good, out)["content_hash"]
    bad = dict(good, test=str(write(tmp_path, b"x B-PER\ny\n", "bad.txt")))
    with pytest.raises(NerflowError, match="bad.txt:2"):
        prepare_data(bad, out)
    assert load_dataset_dir(out)["test"].num_rows == 60
    assert (out / "manifest.json").read_text().count(before) == 1
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".ds")]


def test_full_conll2003_counts():
    """The embedded default corpus reads completely (CoNLL-2003 English, as distributed)."""
    from conftest import conll_source

    counts = {split: len(read_conll(conll_source(split))) for split in ("train", "validation", "test")}
    assert counts == {"train": 14041, "validation": 3250, "test": 3453}
