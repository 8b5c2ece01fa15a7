"""Bad input never gets through: each malformed corpus fails the data or validate step with
one line naming the file, the line (or record) and the problem, exit code 2, and leaves the
previous outputs untouched."""

import json
import re
from pathlib import Path

import pytest
from conftest import write_params

from nerflow.cli import main

GOOD = "EU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\nPeter NNP B-NP B-PER\nBlackburn NNP I-NP I-PER\n"


def conll(body: str) -> bytes:
    return (GOOD + "\n" + body).encode()


def jsonl(*records) -> bytes:
    return ("\n".join(json.dumps(r) for r in records) + "\n").encode()


def parquet(path: Path, columns: dict) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table(columns), path)


OK = {"tokens": ["Paris"], "ner_tags": ["B-LOC"]}

# name: (file name, content or writer, data params, expected (step, substrings after the path))
CASES = {
    "empty file": ("train.txt", b"", {}, ("data", ": no sentences")),
    "only -DOCSTART-": ("train.txt", b"-DOCSTART- -X- -X- O\n\n-DOCSTART- -X- -X- O\n", {}, ("data", ": no sentences")),
    "missing tag column": ("train.txt", conll("London\n"), {}, ("data", ":7: expected a token and a tag")),
    "ragged columns": ("train.txt", conll("London NNP B-LOC\n"), {}, ("data", ":7: 3 columns where earlier lines have 4")),
    "tag column out of range": ("train.txt", conll("London NNP B-NP B-LOC\n"), {"tag_column": 7}, ("data", ":1: no tag column 7")),
    "non-UTF-8 bytes": ("train.txt", conll("M\xfcnchen NNP B-NP B-LOC\n").replace("M\xfc".encode(), b"M\xfc"), {}, ("data", ":7: not UTF-8")),
    "latin-1 file": ("train.txt", "Köln NNP B-NP B-LOC\n".encode("latin-1"), {}, ("data", ":1: not UTF-8")),
    "binary file": ("train.txt", bytes(range(256)) * 4, {}, ("data", ":1: NUL byte")),
    "NUL byte in a line": ("train.txt", conll("Lon\x00don NNP B-NP B-LOC\n"), {}, ("data", ":7: NUL byte")),
    "truncated last line": ("train.txt", GOOD.encode() + b"\nLondon NNP B-N", {}, ("data", ":7: 3 columns where earlier lines have 4")),
    "tag B- with no type": ("train.txt", conll("London NNP B-NP B-\n"), {}, ("validate", ":7) token 'London' tag 'B-'")),
    "lower-case tag": ("train.txt", conll("London NNP B-NP b-loc\n"), {}, ("validate", ":7) token 'London' tag 'b-loc'")),
    "unknown tag": ("train.txt", conll("London NNP B-NP LOCATION\n"), {}, ("validate", "tag 'LOCATION'")),
    "I- after O (invalid IOB2)": ("train.txt", conll("in IN B-PP O\nLondon NNP B-NP I-LOC\n"), {}, ("validate", ":8) token 'London' tag 'I-LOC'")),
    "20,000-token sentence": ("train.txt", conll("word NN B-NP O\n" * 20000), {}, ("validate", "sentence length between 1 and 1000")),
    "JSON tokens/ner_tags lengths differ": ("train.jsonl", jsonl(OK, {"tokens": ["a", "b", "c"], "ner_tags": ["O", "O"]}), {}, ("data", ": record 2: 3 tokens but 2 ner_tags")),
    "JSON null ner_tags": ("train.jsonl", jsonl(OK, {"tokens": ["a"], "ner_tags": None}), {}, ("data", ": record 2: 'ner_tags' is null")),
    "JSON null token": ("train.jsonl", jsonl({"tokens": ["a", None], "ner_tags": ["O", "O"]}), {}, ("data", ": record 1: a token is not a string")),
    "JSON missing field": ("train.jsonl", jsonl({"tokens": ["a"]}), {}, ("data", ": record 1: no 'ner_tags' field")),
    "JSON not an object": ("train.jsonl", jsonl(OK, OK, ["a", "O"]), {}, ("data", ": record 3: expected an object")),
    "invalid JSON": ("train.jsonl", jsonl(OK) + b'{"tokens": ["a"], "ner_tags": [\n', {}, ("data", ":2: not valid JSON")),
    "class id outside label list": ("train.jsonl", jsonl({"tokens": ["a", "b"], "ner_tags": [0, 9]}), {"label_names": ["O", "B-LOC", "I-LOC"]}, ("data", ": record 1: class id 9 at token 1 outside the 3 labels")),
    "class ids without label list": ("train.jsonl", jsonl({"tokens": ["a"], "ner_tags": [0]}), {}, ("data", ": record 1: integer ner_tags need a label list")),
    "empty token": ("train.jsonl", jsonl(OK, {"tokens": ["a", ""], "ner_tags": ["O", "O"]}), {}, ("validate", ":2) token ''")),
    "empty token in Parquet": ("train.parquet", lambda p: parquet(p, {"tokens": [["a"], ["b", ""]], "ner_tags": [["O"], ["O", "O"]]}), {}, ("validate", " record 2) token ''")),
    # over 0.1% of the tokens (the dev and test slices included): a stray one would be a warning
    "control characters in tokens": ("train.jsonl", jsonl(OK, {"tokens": ["a\u0007b"] * 5, "ner_tags": ["O"] * 5}), {},
                                     ("validate", ":2) token 'a\\x07b'")),
    "Parquet missing column": ("train.parquet", lambda p: parquet(p, {"tokens": [["a"]]}), {}, ("data", ": no column(s) ner_tags")),
    "Parquet null values": ("train.parquet", lambda p: parquet(p, {"tokens": [["a"], None], "ner_tags": [["O"], ["O"]]}), {}, ("data", ": record 2: 'tokens' is null")),
    "text posing as Parquet": ("train.parquet", GOOD.encode(), {}, ("data", ": not a Parquet file")),
    "KLUE two characters on a line": ("train.tsv", "## id-1\t<경찰:OG>\n경찰\tB-OG\n".encode(), {"format": "klue"}, ("data", ":2: expected one character")),
    "KLUE line without a tab": ("train.tsv", "## id-1\n경 B-OG\n".encode(), {"format": "klue"}, ("data", ":2: expected CHAR<TAB>TAG")),
    "directory with no splits": ("corpus", "dir", {}, ("data", ": a directory with no dataset in it")),
    "missing path": ("nowhere.txt", None, {}, ("data", ": no such file or directory")),
    "UTF-16 without a BOM": ("train.txt", GOOD.encode("utf-16-le"), {}, ("data", ":1: looks like UTF-16 without a byte-order mark")),
    "cp1252 byte undefined": ("train.txt", conll("caf\x81 NN B-NP O\n").replace(b"\xc2\x81", b"\x81"), {"encoding": "cp1252"}, ("data", ":7: not valid cp1252 (byte 0x81")),
    "JSON array as JSON Lines": ("train.json", json.dumps([OK, OK], indent=1).encode(), {}, ("data", ":1: a JSON array")),
    "no-break space in a token": ("train.txt", conll("New\u00a0York NNP B-NP B-LOC\n"), {}, ("data", ":7: token 'New\\xa0York' holds U+00A0")),
    "BIOES tag read as IOB2": ("train.txt", conll("London NNP B-NP S-LOC\n"), {}, ("data", ":7: tag 'S-LOC'")),
    "comment line without comment_prefix": ("train.txt", conll("# a comment\nLondon NNP B-NP B-LOC\n"), {}, ("data", ':7: 3 columns where earlier lines have 4; a comment? set data.comment_prefix: "#"')),
    "HF dataset without ner_tags": ("hfdata", "hf-no-tags", {}, ("data", "/train: no column(s) ner_tags")),
}


def make_source(tmp_path: Path, name: str, content) -> Path:
    path = tmp_path / name
    if content is None:
        return path
    if content == "dir":
        path.mkdir()
    elif content == "hf-no-tags":
        from datasets import Dataset

        Dataset.from_dict({"tokens": [["a"]]}).save_to_disk(str(path))
    elif callable(content):
        content(path)
    else:
        path.write_bytes(content)
    return path


@pytest.fixture()
def workspace(params, tmp_path, capsys):
    """A workspace holding a previous good run's dataset and validation report."""
    params["validate"]["tokenizer"] = None  # sub-token counts are not what these cases test
    pfile = write_params(params, tmp_path / "params.yaml")
    ws = {"params": params, "dataset": tmp_path / "out" / "dataset", "report": tmp_path / "out" / "validation"}
    assert main(["--params", str(pfile), "data", "--out", str(ws["dataset"])]) == 0
    assert main(["--params", str(pfile), "validate", "--dataset", str(ws["dataset"]), "--report", str(ws["report"])]) == 0
    ws["hash"] = json.loads((ws["dataset"] / "manifest.json").read_text())["content_hash"]
    capsys.readouterr()
    return ws


@pytest.mark.parametrize("case", list(CASES))
def test_malformed_input_is_refused_cleanly(case, workspace, tmp_path, capsys):
    name, content, data_params, (step, expected) = CASES[case]
    source = make_source(tmp_path, name, content)
    params = json.loads(json.dumps(workspace["params"]))
    params["data"].update(train=str(source), **data_params)
    pfile = write_params(params, tmp_path / "bad-params.yaml")
    code = main(["--params", str(pfile), "data", "--out", str(workspace["dataset"])])
    if step == "validate":
        assert code == 0, capsys.readouterr().err
        capsys.readouterr()
        code = main(["--params", str(pfile), "validate", "--dataset", str(workspace["dataset"]), "--report", str(workspace["report"])])
    err = capsys.readouterr().err
    assert code == 2
    # the error is one line; before it only validation's progress (plain lines: stderr is no terminal)
    lines = [line for line in err.strip().splitlines() if not re.match(r"validate: [^:]+: \d+/\d+ .*\(done\)$", line)]
    assert len(lines) == 1 and lines[0].startswith("nerflow: error: "), err
    assert f"{source}{expected}" in lines[0] or (expected in lines[0] and str(source) in lines[0]), lines[0]
    manifest = json.loads((workspace["dataset"] / "manifest.json").read_text())
    if step == "data":  # the previous dataset is untouched, no temporary left behind
        assert manifest["content_hash"] == workspace["hash"]
        assert not [p for p in workspace["dataset"].parent.iterdir() if p.name.startswith(".")]
    else:  # the data step succeeded; validation wrote its failing report
        results = json.loads((workspace["report"] / "results.json").read_text())
        assert results["success"] is False and results["content_hash"] == manifest["content_hash"]


def test_the_corpus_is_large_enough():
    assert len(CASES) >= 25


def test_bad_params_are_named(params, tmp_path, capsys):
    params["data"]["scheme"] = "bio3"
    pfile = write_params(params, tmp_path / "p.yaml")
    assert main(["--params", str(pfile), "data", "--out", str(tmp_path / "ds")]) == 2
    err = capsys.readouterr().err
    assert "data.scheme" in err and "'bio3'" in err
    params["data"]["scheme"] = "iob2"
    params["validate"]["checks"] = {"dupes": {"severity": "error"}}
    pfile = write_params(params, tmp_path / "p.yaml")
    assert main(["--params", str(pfile), "data", "--out", str(tmp_path / "ds")]) == 2  # every section is checked first
    assert "validate.checks.dupes: unknown key; did you mean validate.checks.duplicates?" in capsys.readouterr().err
