"""Readers for the corpus formats nerflow accepts, all into one list of ``Sentence``.

- CoNLL column files (CoNLL-2003, WNUT-17, ...): token first, tag in a chosen column.
- KLUE-NER character-level TSV: ``char<TAB>tag``, spaces are tokens, ``##`` comment lines,
  the sentence id in the last comment before each sentence.
- Records with ``tokens`` + ``ner_tags`` (integer class ids with a label list, or tag strings):
  JSON Lines, Parquet, and Hugging Face datasets saved to disk (WikiANN / PAN-X / WNUT layouts).

Every reader raises NerflowError naming the file, the line (or record) and the problem.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from nerflow import NerflowError

FORMATS = ("auto", "conll", "klue", "jsonl", "parquet", "hf")
SCHEMES = ("iob2", "iob1", "bioes", "bilou")


@dataclass
class Sentence:
    tokens: list[str]
    tags: list[str]
    line: int  # 1-based line of the first token (text formats) or 1-based record number
    id: str = ""  # the corpus' own sentence id, where it has one (KLUE)


def _read_text(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except IsADirectoryError:
        raise NerflowError(f"{path}: is a directory, expected a file") from None
    except FileNotFoundError:
        raise NerflowError(f"{path}: no such file") from None
    except OSError as exc:
        raise NerflowError(f"{path}: cannot read: {exc.strerror}") from None
    nul = raw.find(b"\x00")
    if nul >= 0:
        line = raw[:nul].count(b"\n") + 1
        raise NerflowError(f"{path}:{line}: NUL byte (binary file?)")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise NerflowError(f"{path}:{line}: not UTF-8 (byte 0x{raw[exc.start]:02x})") from None


def read_conll(path: str | Path, tag_column: int = -1) -> list[Sentence]:
    """CoNLL column file: token in the first column, tag in ``tag_column`` (-1 = last).

    Tab or space separated; ``-DOCSTART-`` lines skipped; a blank line ends a sentence.
    """
    path = Path(path)
    text = _read_text(path)
    sentences: list[Sentence] = []
    tokens: list[str] = []
    tags: list[str] = []
    first_line = 0
    width = None
    for lineno, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped:
            if tokens:
                sentences.append(Sentence(tokens, tags, first_line))
                tokens, tags = [], []
            continue
        cols = stripped.split("\t") if "\t" in stripped else stripped.split()
        if cols[0] == "-DOCSTART-":
            continue
        if len(cols) < 2:
            raise NerflowError(f"{path}:{lineno}: expected a token and a tag, found {stripped!r}")
        if width is None:
            width = len(cols)
        elif len(cols) != width:
            raise NerflowError(f"{path}:{lineno}: {len(cols)} columns where earlier lines have {width}")
        try:
            tag = cols[tag_column].strip()
        except IndexError:
            raise NerflowError(f"{path}:{lineno}: no tag column {tag_column} in {len(cols)} columns") from None
        if not tag:
            raise NerflowError(f"{path}:{lineno}: empty tag")
        if not tokens:
            first_line = lineno
        tokens.append(cols[0].strip())
        tags.append(tag)
    if tokens:
        sentences.append(Sentence(tokens, tags, first_line))
    if not sentences:
        raise NerflowError(f"{path}: no sentences (empty file, or only -DOCSTART- lines)")
    return sentences


def read_klue(path: str | Path) -> list[Sentence]:
    """KLUE-NER character-level TSV. Tokens are characters (spaces included, tagged O), so
    ``"".join(tokens)`` is the sentence text and character offsets are token indices."""
    path = Path(path)
    text = _read_text(path)
    sentences: list[Sentence] = []
    chars: list[str] = []
    tags: list[str] = []
    first_line, sentence_id = 0, ""
    for lineno, line in enumerate(text.split("\n"), start=1):
        line = line.rstrip("\r")
        if line.startswith("##"):
            if chars:
                raise NerflowError(f"{path}:{lineno}: comment inside a sentence (missing blank line?)")
            sentence_id = line[2:].strip().split("\t")[0]
            continue
        if not line:
            if chars:
                sentences.append(Sentence(chars, tags, first_line, sentence_id))
                chars, tags, sentence_id = [], [], ""
            continue
        char, sep, tag = line.partition("\t")
        if not sep:
            raise NerflowError(f"{path}:{lineno}: expected CHAR<TAB>TAG, found {line!r}")
        if len(char) != 1:
            raise NerflowError(f"{path}:{lineno}: expected one character, found {char!r}")
        if not tag.strip():
            raise NerflowError(f"{path}:{lineno}: empty tag")
        if not chars:
            first_line = lineno
        chars.append(char)
        tags.append(tag.strip())
    if chars:
        sentences.append(Sentence(chars, tags, first_line, sentence_id))
    if not sentences:
        raise NerflowError(f"{path}: no sentences")
    return sentences


def _from_records(
    where: str, records, label_names: Sequence[str] | None, first_record: int = 1
) -> list[Sentence]:
    """Sentences from dict-like records with ``tokens`` and ``ner_tags``."""
    sentences = []
    for n, rec in enumerate(records, start=first_record):
        at = f"{where}: record {n}"
        if not isinstance(rec, dict):
            raise NerflowError(f"{at}: expected an object with tokens and ner_tags")
        for key in ("tokens", "ner_tags"):
            if key not in rec:
                raise NerflowError(f"{at}: no {key!r} field")
            if rec[key] is None:
                raise NerflowError(f"{at}: {key!r} is null")
        tokens, ids = list(rec["tokens"]), list(rec["ner_tags"])
        if len(tokens) != len(ids):
            raise NerflowError(f"{at}: {len(tokens)} tokens but {len(ids)} ner_tags")
        if any(not isinstance(t, str) for t in tokens):
            raise NerflowError(f"{at}: a token is not a string ({next(t for t in tokens if not isinstance(t, str))!r})")
        tags = []
        for i, tag in enumerate(ids):
            if isinstance(tag, str):
                tags.append(tag)
            elif isinstance(tag, int) and not isinstance(tag, bool):
                if label_names is None:
                    raise NerflowError(f"{at}: integer ner_tags need a label list (params data.label_names)")
                if not 0 <= tag < len(label_names):
                    raise NerflowError(f"{at}: class id {tag} at token {i} outside the {len(label_names)} labels")
                tags.append(label_names[tag])
            else:
                raise NerflowError(f"{at}: ner_tags[{i}] is {tag!r}, expected a class id or a tag")
        sentences.append(Sentence(tokens, tags, n, str(rec.get("id", "") or "")))
    if not sentences:
        raise NerflowError(f"{where}: no records")
    return sentences


def read_jsonl(path: str | Path, label_names: Sequence[str] | None = None) -> list[Sentence]:
    path = Path(path)
    text = _read_text(path)
    records = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append((lineno, json.loads(line)))
        except json.JSONDecodeError as exc:
            raise NerflowError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
    sentences = []
    for lineno, rec in records:  # JSON Lines: the record number is the line number
        sentences += _from_records(str(path), [rec], label_names, first_record=lineno)
    if not sentences:
        raise NerflowError(f"{path}: no records")
    return sentences


def read_parquet(path: str | Path, label_names: Sequence[str] | None = None) -> list[Sentence]:
    import pyarrow.parquet as pq

    path = Path(path)
    try:
        table = pq.read_table(path)
    except FileNotFoundError:
        raise NerflowError(f"{path}: no such file") from None
    except Exception as exc:  # pyarrow raises ArrowInvalid/OSError for non-Parquet input
        raise NerflowError(f"{path}: not a Parquet file ({str(exc).splitlines()[0]})") from None
    missing = [c for c in ("tokens", "ner_tags") if c not in table.column_names]
    if missing:
        raise NerflowError(f"{path}: no column(s) {', '.join(missing)} (has {', '.join(table.column_names)})")
    return _from_records(str(path), table.to_pylist(), label_names)


def _hf_label_names(dataset) -> list[str] | None:
    feature = dataset.features.get("ner_tags")
    inner = getattr(feature, "feature", None)
    return list(inner.names) if hasattr(inner, "names") else None


def read_hf_dataset(path: str | Path, label_names: Sequence[str] | None = None) -> dict[str, list[Sentence]]:
    """A Hugging Face ``Dataset`` or ``DatasetDict`` saved with ``save_to_disk``; returns
    {split: sentences} ("dev" and "valid" are read as validation). Label names come from the
    ClassLabel feature, else from ``label_names``."""
    from datasets import Dataset, load_from_disk

    path = Path(path)
    try:
        loaded = load_from_disk(str(path))
    except FileNotFoundError as exc:
        raise NerflowError(f"{path}: not a Hugging Face dataset saved to disk ({exc})") from None
    parts = {"train": loaded} if isinstance(loaded, Dataset) else dict(loaded)
    out = {}
    for split, ds in parts.items():
        missing = [c for c in ("tokens", "ner_tags") if c not in ds.column_names]
        if missing:
            raise NerflowError(f"{path}/{split}: no column(s) {', '.join(missing)}")
        names = _hf_label_names(ds) or label_names
        out[SPLIT_ALIASES.get(split, split)] = _from_records(f"{path}/{split}", iter(ds), names)
    return out


SPLIT_ALIASES = {"dev": "validation", "valid": "validation", "val": "validation"}


def detect_format(path: Path) -> str:
    if path.is_dir():
        if (path / "dataset_dict.json").exists() or (path / "dataset_info.json").exists() or (path / "state.json").exists():
            return "hf"
        raise NerflowError(f"{path}: a directory with no dataset in it (expected dataset_dict.json or state.json)")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json", ".ndjson"):
        return "jsonl"
    if suffix in (".parquet", ".pq"):
        return "parquet"
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
    except OSError as exc:
        raise NerflowError(f"{path}: cannot read: {exc.strerror}") from None
    if head.lstrip(b"\xef\xbb\xbf").startswith(b"##"):
        return "klue"
    return "conll"


def read_split(path: Path, fmt: str, params: dict[str, Any]) -> list[Sentence]:
    """One split from one file (any format but a multi-split HF DatasetDict)."""
    fmt = detect_format(path) if fmt == "auto" else fmt
    names = params.get("label_names")
    if fmt == "conll":
        return read_conll(path, int(params.get("tag_column", -1)))
    if fmt == "klue":
        return read_klue(path)
    if fmt == "jsonl":
        return read_jsonl(path, names)
    if fmt == "parquet":
        return read_parquet(path, names)
    if fmt == "hf":
        parts = read_hf_dataset(path, names)
        if len(parts) != 1:
            raise NerflowError(f"{path}: holds splits {', '.join(parts)}; name it as data.path instead")
        return next(iter(parts.values()))
    raise NerflowError(f"data.format {fmt!r}: expected one of {', '.join(FORMATS)}")


def to_iob2(tags: Sequence[str], scheme: str) -> list[str]:
    """Convert one tag sequence from ``scheme`` (iob1, bioes, bilou, iob2) to IOB2."""
    if scheme == "iob2":
        return list(tags)
    out, prev = [], "O"
    for tag in tags:
        prefix, _, etype = tag.partition("-")
        if scheme == "iob1" and prefix == "I" and (prev == "O" or prev[2:] != etype):
            tag = f"B-{etype}"
        elif scheme in ("bioes", "bilou"):
            if prefix in ("S", "U"):
                tag = f"B-{etype}"
            elif prefix in ("E", "L"):
                tag = f"I-{etype}"
        out.append(tag)
        prev = tag
    return out
