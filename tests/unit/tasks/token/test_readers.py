"""The readers on the defects real corpora showed: typed options, GermEval's index column and
comments, line ends, encodings, clear messages, tagging schemes, and leftovers of killed runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nerflow import NerflowError
from nerflow.core.config import DataParams, ReaderOptions, TestSet
from nerflow.core.dataset import content_hash, load_dataset_dir
from nerflow.steps.data import prepare_data
from nerflow.tasks.token.data import read_corpus
from nerflow.tasks.token.readers import read_conll, read_jsonl, read_klue, read_split

SPLITS = ("train", "validation", "test")


def write(tmp_path: Path, content: str | bytes, name: str = "f.txt") -> Path:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


def error(fn, *args) -> str:
    with pytest.raises(NerflowError) as err:
        fn(*args)
    message = str(err.value)
    assert "\n" not in message, message
    return message


def same_file_splits(path: Path, **options) -> dict:
    return {**{s: str(path) for s in SPLITS}, **options}


# ------------------------------------------------------------------ 1. typed params


def test_data_params_typed_or_dict_give_the_same_dataset(conll_dir, tmp_path):
    files = {s: str(conll_dir / f"{s}.txt") for s in SPLITS}
    typed = prepare_data(DataParams(**files, max_sentences=20), tmp_path / "typed")
    plain = prepare_data({**files, "max_sentences": 20}, tmp_path / "plain")
    assert typed == plain and typed["splits"]["train"]["sentences"] == 20
    train = load_dataset_dir(tmp_path / "typed")["train"]
    names = train.features["ner_tags"].feature.names
    assert [(r["tokens"], [names[i] for i in r["ner_tags"]], r["source_line"]) for r in train] == [
        (s.tokens, s.tags, s.line) for s in read_conll(conll_dir / "train.txt")[:20]]
    tables, sources, paths, _ = read_corpus(DataParams(**files))
    assert tables["validation"].num_rows == 60 and paths == [conll_dir / f"{s}.txt" for s in SPLITS]


def test_unknown_data_key_is_refused_with_the_closest_one(conll_dir, tmp_path):
    with pytest.raises(NerflowError, match=r"data\.tag_colum: unknown key; did you mean data\.tag_column\?"):
        prepare_data({**{s: str(conll_dir / f"{s}.txt") for s in SPLITS}, "tag_colum": 1}, tmp_path / "ds")


def test_read_split_takes_reader_options_and_test_sets(tmp_path):
    path = write(tmp_path, "Paris B-LOC NNP\n\nhe O PRP\n")
    by_options = read_split(path, "conll", ReaderOptions(tag_column=1))
    by_test_set = read_split(path, "auto", TestSet(name="extra", path=str(path), tag_column=1))
    assert [s.tags for s in by_options] == [s.tags for s in by_test_set] == [["B-LOC"], ["O"]]


# --------------------------------------------------- 2. GermEval 2014: index column, comments

# GermEval 2014 layout: index, token, outer tag, nested tag; a `#<TAB>source [date]` comment before each sentence
GERMEVAL = """\
#\thttp://de.wikipedia.org/wiki/Manfred_Korfmann [2009-10-17]
1\tAufgrund\tO\tO
2\tseiner\tO\tO
3\tEntdeckungen\tO\tO
4\tin\tO\tO
5\tTroja\tB-LOC\tO
6\twurde\tO\tO
7\tKorfmann\tB-PER\tO
8\tgeehrt\tO\tO
9\t.\tO\tO

#\thttp://www.welt.de/kultur/article4976.html [2009-10-30]
1\tDie\tO\tO
2\tBayerische\tB-ORG\tB-LOCderiv
3\tStaatsoper\tI-ORG\tO
4\tin\tO\tO
5\tMünchen\tB-LOC\tO
6\tspielt\tO\tO
7\tdeutsche\tB-LOCderiv\tO
8\tOpern\tO\tO
9\t.\tO\tO

#\thttp://de.wikipedia.org/wiki/Deutscher_Fu%C3%9Fball-Bund [2009-11-02]
1\tDer\tO\tO
2\tDeutsche\tB-ORG\tB-LOCderiv
3\tFußball-Bund\tI-ORG\tO
4\tsitzt\tO\tO
5\tin\tO\tO
6\tFrankfurt\tB-LOC\tO
7\tam\tI-LOC\tO
8\tMain\tI-LOC\tB-LOC
9\t.\tO\tO

"""
GERMEVAL_OPTIONS = {"token_column": 1, "tag_column": 2, "comment_prefix": "#"}


def test_germeval_index_column_outer_tags_and_comments(tmp_path):
    path = write(tmp_path, GERMEVAL, "NER-de-train.tsv")
    sentences = read_conll(path, GERMEVAL_OPTIONS)
    assert [s.tokens[:3] for s in sentences] == [["Aufgrund", "seiner", "Entdeckungen"], ["Die", "Bayerische", "Staatsoper"],
                                                  ["Der", "Deutsche", "Fußball-Bund"]]
    assert sentences[1].tags == ["O", "B-ORG", "I-ORG", "O", "B-LOC", "O", "B-LOCderiv", "O", "O"]
    assert sentences[2].tags[5:8] == ["B-LOC", "I-LOC", "I-LOC"]
    assert [s.line for s in sentences] == [2, 13, 24]
    manifest = prepare_data(same_file_splits(path, **GERMEVAL_OPTIONS), tmp_path / "ds")
    assert manifest["splits"]["test"] == {"sentences": 3, "tokens": 27, "entities": 7}
    assert manifest["labels"] == ["O", "B-LOC", "I-LOC", "B-LOCderiv", "B-ORG", "I-ORG", "B-PER"]
    row = load_dataset_dir(tmp_path / "ds")["train"][2]
    assert row["tokens"][2] == "Fußball-Bund" and row["source_line"] == 24


@pytest.mark.parametrize("options", [{"token_column": 1, "tag_column": 2}, {}])
def test_germeval_comment_without_comment_prefix_blames_the_comment_line(tmp_path, options):
    path = write(tmp_path, GERMEVAL, "NER-de-train.tsv")
    message = error(read_conll, path, options)
    assert message.startswith(f"{path}:1: ") and 'set data.comment_prefix: "#"' in message


def test_comment_line_inside_the_file_blames_that_line(tmp_path):
    text = GERMEVAL.split("\n", 1)[1]  # no comment before the first sentence: the columns are set by a token line
    path = write(tmp_path, text)
    message = error(read_conll, path, {"token_column": 1, "tag_column": 2})
    assert message.startswith(f"{path}:11: ") and 'set data.comment_prefix: "#"' in message


def test_hash_tokens_still_read_without_comment_prefix(tmp_path):
    path = write(tmp_path, "#\tO\nfun\tO\n\n#NLP\tB-MISC\n")
    assert [s.tokens for s in read_conll(path)] == [["#", "fun"], ["#NLP"]]


# --------------------------------------------------------------------- 3. line ends

ODD_BREAKS = ["\u2028", "\u2029", "\u0085", "\x0c", "\x0b", "\x1c", "\x1d", "\x1e"]


@pytest.mark.parametrize("char", ODD_BREAKS)
def test_only_lf_crlf_cr_end_a_conll_line(tmp_path, char):
    lines = [f"w{i} O" for i in range(322)] + [f"form{char}feed O", "", "next B-PER"]
    path = write(tmp_path, "\n".join(lines) + "\n")
    sentences = read_conll(path)
    assert [len(s.tokens) for s in sentences] == [323, 1]
    assert sentences[0].tokens[322] == f"form{char}feed" and sentences[1].line == 325


def test_a_token_holding_a_form_feed_reaches_validation_at_its_line(tmp_path):
    from nerflow.steps.validate import validate_dataset

    lines = [f"w{i} O" for i in range(322)] + ["form\x0cfeed O", "", "next B-PER"]
    path = write(tmp_path, "\n".join(lines) + "\n")
    prepare_data(same_file_splits(path), tmp_path / "ds")
    summary = validate_dataset({"fail_on_error": False, "tokenizer": None}, tmp_path / "ds", tmp_path / "report")
    check = next(c for c in summary["checks"] if c["name"] == "control_characters")
    assert not check["success"] and f"{path}:323" in json.dumps(check)


def test_cr_and_crlf_line_ends_mixed(tmp_path):
    path = write(tmp_path, b"a O\rb B-PER\r\n\r\nc O\n\nd O\r")
    assert [(s.tokens, s.line) for s in read_conll(path)] == [(["a", "b"], 1), (["c"], 4), (["d"], 6)]


def test_klue_and_jsonl_lines_end_only_at_lf_crlf_cr(tmp_path):
    klue = write(tmp_path, "## id-1\t<x>\n\u2028\tO\n가\tB-PS\r\n\r\n## id-2\n\x0c\tO\r나\tO\n", "k.tsv")
    sentences = read_klue(klue)
    assert [(s.tokens, s.line, s.id) for s in sentences] == [(["\u2028", "가"], 2, "id-1"), (["\x0c", "나"], 6, "id-2")]
    records = [{"tokens": ["a\u2028b"], "ner_tags": ["O"]}, {"tokens": ["c\x85"], "ner_tags": ["O"]}, {"tokens": ["d"], "ner_tags": ["O"]}]
    jsonl = write(tmp_path, "\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n", "r.jsonl")
    assert [(s.tokens, s.line) for s in read_jsonl(jsonl)] == [(["a\u2028b"], 1), (["c\x85"], 2), (["d"], 3)]


# ------------------------------------------------------------------------ 4. encodings

TEXT = "Köln B-LOC\n– O\n€ O\n\n„Zoë“ B-PER\n"


@pytest.mark.parametrize("data, encoding", [
    (TEXT.encode("utf-8"), "utf-8"),
    (b"\xef\xbb\xbf" + TEXT.encode("utf-8"), "utf-8"),
    (TEXT.encode("cp1252"), "cp1252"),
    (TEXT.encode("utf-16"), "utf-8"),  # a BOM is detected whatever data.encoding says
    (TEXT.encode("utf-16-be"), "utf-16-be"),
    (b"\xfe\xff" + TEXT.encode("utf-16-be"), "utf-8"),
])
def test_encodings(tmp_path, data, encoding):
    sentences = read_conll(write(tmp_path, data), {"encoding": encoding})
    assert [(s.tokens, s.tags, s.line) for s in sentences] == [
        (["Köln", "–", "€"], ["B-LOC", "O", "O"], 1), (["„Zoë“"], ["B-PER"], 5)]


def test_utf16_klue_file_is_detected_as_klue(tmp_path):
    path = write(tmp_path, "## id-1\n서\tB-LC\n울\tI-LC\n".encode("utf-16"), "k.tsv")
    assert [(s.tokens, s.tags, s.id) for s in read_split(path, "auto", ReaderOptions())] == [(["서", "울"], ["B-LC", "I-LC"], "id-1")]


def test_latin1_on_request(tmp_path):
    path = write(tmp_path, "Köln B-LOC\nZoë B-PER\n".encode("latin-1"))
    assert read_conll(path, {"encoding": "latin-1"})[0].tokens == ["Köln", "Zoë"]
    message = error(read_conll, path)
    assert message.startswith(f"{path}:1: not UTF-8") and "byte 0xf6" in message and "data.encoding" in message


def test_utf16_without_bom_is_named(tmp_path):
    path = write(tmp_path, TEXT.encode("utf-16-le"))
    message = error(read_conll, path)
    assert "looks like UTF-16 without a byte-order mark" in message and "data.encoding: utf-16-le" in message


def test_byte_invalid_in_the_given_encoding_names_line_and_byte(tmp_path):
    path = write(tmp_path, b"a O\n\nb O\nc\x81d O\n")
    message = error(read_conll, path, {"encoding": "cp1252"})
    assert message.startswith(f"{path}:4: not valid cp1252") and "byte 0x81" in message and "data.encoding" in message
    message = error(read_conll, write(tmp_path, b"a O\n\nb O\nc\xffd O\n"))
    assert ":4: not UTF-8" in message and "byte 0xff" in message


# ---------------------------------------------------------------------- 5. messages


@pytest.mark.parametrize("text", [
    '[\n  {"tokens": ["a"], "ner_tags": ["O"]},\n  {"tokens": ["b"], "ner_tags": ["O"]}\n]\n',
    '[{"tokens": ["a"], "ner_tags": ["O"]}, {"tokens": ["b"], "ner_tags": ["O"]}]\n',
])
def test_json_array_given_as_json_lines(tmp_path, text):
    path = write(tmp_path, text, "train.json")
    message = error(read_jsonl, path)
    assert message.startswith(f"{path}:1: ") and "a JSON array" in message and "one object per line" in message


def test_symlink_loop_is_named(tmp_path, conll_dir):
    loop = tmp_path / "loop.txt"
    loop.symlink_to(loop)
    assert "symlink loop" in error(read_split, loop, "conll", ReaderOptions())
    assert "link loop" in error(prepare_data, {**{s: str(conll_dir / f"{s}.txt") for s in SPLITS}, "test": str(loop)},
                                tmp_path / "ds")


@pytest.mark.parametrize("char", ["\u00a0", "\u2009", "\u3000"])
def test_non_ascii_space_in_a_space_separated_line_is_refused(tmp_path, char):
    path = write(tmp_path, f"in IN O\nNew{char}York NNP B-LOC\n")
    message = error(read_conll, path)
    assert message.startswith(f"{path}:2: ") and repr(f"New{char}York") in message and f"U+{ord(char):04X}" in message


def test_non_ascii_space_inside_a_tab_separated_token_reaches_validation(tmp_path):
    assert read_conll(write(tmp_path, "New\u00a0York\tB-LOC\n"))[0].tokens == ["New\u00a0York"]


# ----------------------------------------------------------------------- 6. schemes


@pytest.mark.parametrize("tag, hint", [("S-PER", "bioes"), ("E-LOC", "bioes"), ("U-PER", "bilou"), ("L-LOC", "bilou")])
def test_other_scheme_tags_refused_under_iob2(tmp_path, tag, hint):
    path = write(tmp_path, f"a O\n\nJohn B-PER\nSmith I-PER\nin O\nBerlin {tag}\n")
    message = error(read_split, path, "conll", ReaderOptions())
    assert message.startswith(f"{path}:6: ") and repr(tag) in message and f"set data.scheme: {hint}" in message
    jsonl = write(tmp_path, json.dumps({"tokens": ["a", "b"], "ner_tags": ["O", tag]}) + "\n", "x.jsonl")
    assert "record 1, token 1" in error(read_split, jsonl, "jsonl", ReaderOptions())


# hand-counted: John Smith, Mary, Bob, Jones, New York (City) = 5 entities; 11 tokens
SCHEME_FILES = {
    "iob1": "John I-PER\nSmith I-PER\nmet O\nMary I-PER\n, O\nBob I-PER\nJones B-PER\nin O\nNew I-LOC\nYork I-LOC\nCity I-LOC\n",
    "bioes": "John B-PER\nSmith E-PER\nmet O\nMary S-PER\n, O\nBob S-PER\nJones S-PER\nin O\nNew B-LOC\nYork I-LOC\nCity E-LOC\n",
    "bilou": "John B-PER\nSmith L-PER\nmet O\nMary U-PER\n, O\nBob U-PER\nJones U-PER\nin O\nNew B-LOC\nYork I-LOC\nCity L-LOC\n",
    "iob2": "John B-PER\nSmith I-PER\nmet O\nMary B-PER\n, O\nBob B-PER\nJones B-PER\nin O\nNew B-LOC\nYork I-LOC\nCity I-LOC\n",
}


@pytest.mark.parametrize("scheme", list(SCHEME_FILES))
def test_entity_counts_after_conversion_in_every_scheme(tmp_path, scheme):
    path = write(tmp_path, (SCHEME_FILES[scheme] + "\n") * 3 + "x O\n")
    manifest = prepare_data(same_file_splits(path, scheme=scheme), tmp_path / "ds")
    assert manifest["splits"]["train"] == {"sentences": 4, "tokens": 34, "entities": 15}
    reference = prepare_data(same_file_splits(write(tmp_path, (SCHEME_FILES["iob2"] + "\n") * 3 + "x O\n", "ref.txt")),
                             tmp_path / "ref")
    assert manifest["content_hash"] == reference["content_hash"]


# ------------------------------------------------------------- 8. leftovers of killed runs

KILLED_RUN = """
import pathlib, sys, time
import nerflow.core.dataset as dataset
import nerflow.steps.data as data
real = dataset.write_json
def write_then_hang(*args, **kwargs):
    real(*args, **kwargs)
    pathlib.Path(sys.argv[2]).touch()  # the dataset is in the temporary folder: kill me now
    time.sleep(600)
dataset.write_json = write_then_hang
data.prepare_data(dict(zip(("train", "validation", "test"), sys.argv[3:6])), sys.argv[1])
"""


def test_rerun_removes_the_temporary_folder_of_a_killed_run(conll_dir, tmp_path):
    out, flag = tmp_path / "dataset", tmp_path / "saving"
    files = [str(conll_dir / f"{s}.txt") for s in SPLITS]
    child = subprocess.Popen([sys.executable, "-c", KILLED_RUN, str(out), str(flag), *files])
    deadline = time.time() + 300
    while not flag.exists() and child.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    assert flag.exists(), "the data step never reached its save"
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    leftovers = [p for p in tmp_path.iterdir() if p.name.startswith(".dataset.tmp-")]
    assert len(leftovers) == 1 and f"-{child.pid}-" in leftovers[0].name
    alive = tmp_path / f".dataset.tmp-{os.getpid()}-running"  # a run still going: kept
    alive.mkdir()
    prepare_data(dict(zip(SPLITS, files)), out)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == [alive.name]
    assert load_dataset_dir(out)["test"].num_rows == 60


def test_content_hash_is_of_tokens_and_tags_only(tmp_path):
    a = read_conll(write(tmp_path, "New B-LOC\nYork I-LOC\n", "a.txt"))
    b = read_conll(write(tmp_path, "\n\nNew\tNNP\tB-LOC\nYork\tNNP\tI-LOC\n", "b.txt"))
    assert content_hash({"train": [(s.tokens, s.tags) for s in a]}) == content_hash({"train": [(s.tokens, s.tags) for s in b]})


def test_comment_lines_are_skipped_before_any_check(tmp_path):
    path = write(tmp_path, "# Quelle:\u00a0Wikipedia, 2009\nBerlin B-LOC\n# zweiter Satz\nist O\n")
    sentences = read_conll(path, {"comment_prefix": "#"})
    assert [(s.tokens, s.line) for s in sentences] == [(["Berlin"], 2), (["ist"], 4)]
