"""Readers for the corpus formats nerflow accepts, each a stream of ``Sentence``.

- CoNLL column files (CoNLL-2003, WNUT-17, GermEval 2014, ...): token and tag in chosen columns,
  optional comment lines.
- KLUE-NER character-level TSV: ``char<TAB>tag``, spaces are tokens, ``##`` comment lines,
  the sentence id in the last comment before each sentence.
- Records with ``tokens`` + ``ner_tags`` (integer class ids with a label list, or tag strings):
  JSON Lines, Parquet, and Hugging Face datasets saved to disk (WikiANN / PAN-X / WNUT layouts).

How a file is read is a ``config.ReaderOptions`` (a ``DataParams`` or an evaluate test set is
one); the defaults live there. Text files are decoded in ``options.encoding`` (a byte-order mark
wins) and lines end only at ``\\n``, ``\\r\\n`` and ``\\r``. ``iter_split`` and ``read_split`` give
IOB2 tags whatever ``options.scheme`` the source uses.

Every reader raises NerflowError naming the file, the line (or record) and the problem.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import pyarrow.parquet as pq

from nerflow import NerflowError
from nerflow.core.config import ReaderOptions, section
from nerflow.core.dataset import SPLIT_ALIASES, folder_format
from nerflow.core.files import bom_encoding, open_binary, text_lines

# Heavy libraries (datasets) are imported inside the functions that use them, on purpose:
# the CLI starts without them and a step loads only what it runs.

FORMATS = ("auto", "conll", "klue", "jsonl", "parquet", "hf")
TOKEN_LINES = ("conll", "klue")  # formats with one token per line: token i of a sentence is on line + i
Options = ReaderOptions | dict[str, Any] | None


@dataclass
class Sentence:
    tokens: list[str]
    tags: list[str]
    line: int  # 1-based line of the first token (text formats) or 1-based record number
    id: str = ""  # the corpus' own sentence id, where it has one (KLUE)
    document: int = -1  # which document of its file the sentence is in (CoNLL -DOCSTART-); -1: none


# ----------------------------------------------------------------------------- CoNLL

# space separators (Unicode Zs) but the ASCII space: not column separators, yet look like one
OTHER_SPACES = re.compile("[\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]")


def _conll(path: Path, opts: ReaderOptions) -> Iterator[Sentence]:
    """CoNLL column file: tab separated, or separated by runs of ASCII spaces; ``-DOCSTART-``
    lines and lines starting with ``comment_prefix`` skipped; a blank line ends a sentence (so
    does a skipped line: the tokens of a sentence are on consecutive lines)."""
    tokens: list[str] = []
    tags: list[str] = []
    first = 0
    document = -1  # counts -DOCSTART- lines: consecutive sentences of one document share it
    width = width_line = None
    comment = opts.comment_prefix

    def fail(lineno: int, problem: str, line: str) -> NerflowError:
        hint = '; a comment? set data.comment_prefix: "#"' if comment is None and line.startswith("#") else ""
        return NerflowError(f"{path}:{lineno}: {problem}{hint}")

    for lineno, line in text_lines(path, opts.encoding):
        stripped = line.strip(" \t")
        cols = _columns(stripped)
        if not cols or cols[0] == "-DOCSTART-" or (comment is not None and line.startswith(comment)):
            if tokens:
                yield Sentence(tokens, tags, first, "", document)
                tokens, tags = [], []
            if cols and cols[0] == "-DOCSTART-":
                document += 1
            continue
        if not stripped.isascii() and "\t" not in stripped and (space := OTHER_SPACES.search(stripped)):
            char = space.group()
            raise NerflowError(f"{path}:{lineno}: token {next(c for c in cols if char in c)!r} holds U+{ord(char):04X} "
                               f"({unicodedata.name(char, 'a space')}), which does not separate columns "
                               "(only ASCII spaces and tabs do): replace it")
        if len(cols) < 2:
            raise fail(lineno, f"expected a token and a tag, found {stripped!r}", line)
        if width is None:
            width, width_line = len(cols), (lineno, line)
            for name, col in (("token", opts.token_column), ("tag", opts.tag_column)):
                if not -width <= col < width:
                    raise fail(lineno, f"no {name} column {col} in {width} columns", line)
        elif len(cols) != width:
            if comment is None and width_line[1].startswith("#"):  # the columns were set by a comment line
                raise fail(width_line[0], f"{width} columns where line {lineno} has {len(cols)}", width_line[1])
            raise fail(lineno, f"{len(cols)} columns where earlier lines have {width}", line)
        tag = cols[opts.tag_column]
        if not tag:
            raise fail(lineno, "empty tag", line)
        if not tokens:
            first = lineno
        tokens.append(cols[opts.token_column])
        tags.append(tag)
    if tokens:
        yield Sentence(tokens, tags, first, "", document)


def _columns(line: str) -> list[str]:
    """Tab-separated columns, else columns separated by runs of ASCII spaces (never by other
    whitespace: a form feed or U+2028 inside a token stays in it, for validation to flag)."""
    if "\t" in line:
        return [c.strip(" ") for c in line.split("\t")]
    cols = line.split(" ")
    return [c for c in cols if c] if "" in cols else cols


# ----------------------------------------------------------------------------- KLUE


def _klue(path: Path, opts: ReaderOptions) -> Iterator[Sentence]:
    """KLUE-NER character-level TSV. Tokens are characters (spaces included, tagged O), so
    ``"".join(tokens)`` is the sentence text and character offsets are token indices."""
    chars: list[str] = []
    tags: list[str] = []
    first, sentence_id = 0, ""
    for lineno, line in text_lines(path, opts.encoding):
        if line.startswith("##"):
            if chars:
                raise NerflowError(f"{path}:{lineno}: comment inside a sentence (missing blank line?)")
            sentence_id = line[2:].strip().split("\t")[0]
            continue
        if not line:
            if chars:
                yield Sentence(chars, tags, first, sentence_id)
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
            first = lineno
        chars.append(char)
        tags.append(tag.strip())
    if chars:
        yield Sentence(chars, tags, first, sentence_id)


# --------------------------------------------------------------------------- records


def _record(at: str, rec: Any, n: int, label_names: Sequence[str] | None) -> Sentence:
    """A sentence from one dict-like record with ``tokens`` and ``ner_tags``."""
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
    return Sentence(tokens, tags, n, str(rec.get("id", "") or ""))


def _records(where: str, records: Iterable[Any], label_names: Sequence[str] | None) -> Iterator[Sentence]:
    for n, rec in enumerate(records, start=1):
        yield _record(f"{where}: record {n}", rec, n, label_names)


def _jsonl(path: Path, opts: ReaderOptions) -> Iterator[Sentence]:
    """JSON Lines: one object per line; the record number is the line number."""
    first = True
    for lineno, line in text_lines(path, opts.encoding):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            rec = exc
        if first and line.lstrip().startswith("[") and (isinstance(rec, Exception) or all(isinstance(r, dict) for r in rec)):
            raise NerflowError(f"{path}:{lineno}: a JSON array; JSON Lines needs one object per line "
                               f"(convert with: jq -c '.[]' {path.name})")
        if isinstance(rec, Exception):
            raise NerflowError(f"{path}:{lineno}: not valid JSON ({rec.msg})")
        first = False
        yield _record(f"{path}: record {lineno}", rec, lineno, opts.label_names)


def _parquet(path: Path, opts: ReaderOptions) -> Iterator[Sentence]:

    try:
        source = pq.ParquetFile(path)
    except FileNotFoundError:
        raise NerflowError(f"{path}: no such file") from None
    except Exception as exc:  # pyarrow raises ArrowInvalid/OSError for non-Parquet input
        raise NerflowError(f"{path}: not a Parquet file ({str(exc).splitlines()[0]})") from None
    names = source.schema_arrow.names
    missing = [c for c in ("tokens", "ner_tags") if c not in names]
    if missing:
        raise NerflowError(f"{path}: no column(s) {', '.join(missing)} (has {', '.join(names)})")
    rows = (row for batch in source.iter_batches(batch_size=10_000) for row in batch.to_pylist())
    yield from _records(str(path), rows, opts.label_names)


def _hf_label_names(dataset) -> list[str] | None:
    feature = dataset.features.get("ner_tags")
    inner = getattr(feature, "feature", None)
    return list(inner.names) if hasattr(inner, "names") else None


def read_hf_dataset(path: str | Path, opts: Options = None) -> dict[str, Iterator[Sentence]]:
    """A Hugging Face ``Dataset`` or ``DatasetDict`` saved with ``save_to_disk``: {split: IOB2
    sentences} ("dev" and "valid" are read as validation). Label names come from the ClassLabel
    feature, else from ``label_names``."""
    from datasets import load_from_disk

    path = Path(path)
    try:
        loaded = load_from_disk(str(path))
    except FileNotFoundError as exc:
        raise NerflowError(f"{path}: not a Hugging Face dataset saved to disk ({exc})") from None
    return hf_splits(loaded, str(path), opts)


def hf_splits(loaded, where: str, opts: Options = None) -> dict[str, Iterator[Sentence]]:
    """{split: IOB2 sentences} of a loaded ``Dataset`` (one split, "train") or ``DatasetDict``."""
    from datasets import Dataset

    opts = section(ReaderOptions, opts)
    parts = {"train": loaded} if isinstance(loaded, Dataset) else dict(loaded)
    out = {}
    for split, ds in parts.items():
        at = f"{where}/{split}"
        missing = [c for c in ("tokens", "ner_tags") if c not in ds.column_names]
        if missing:
            raise NerflowError(f"{at}: no column(s) {', '.join(missing)} (has {', '.join(ds.column_names)})")
        sentences = _records(at, iter(ds), _hf_label_names(ds) or opts.label_names)
        out[SPLIT_ALIASES.get(split, split)] = _in_iob2(_nonempty(sentences, at, "records"), "hf", at, opts.scheme)
    return out


# ---------------------------------------------------------------------- any format

READERS: dict[str, Callable[[Path, ReaderOptions], Iterator[Sentence]]] = {
    "conll": _conll, "klue": _klue, "jsonl": _jsonl, "parquet": _parquet}


def detect_format(path: Path) -> str:
    if path.is_dir():
        return folder_format(path)
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json", ".ndjson"):
        return "jsonl"
    if suffix in (".parquet", ".pq"):
        return "parquet"
    with open_binary(path) as fh:
        head = fh.read(4096)
    return "klue" if head.decode(bom_encoding(head) or "latin-1", errors="ignore").startswith("##") else "conll"


def iter_split(path: str | Path, fmt: str, opts: Options = None) -> Iterator[Sentence]:
    """One split from one file (any format but a multi-split HF DatasetDict), as IOB2 sentences."""
    path, opts = Path(path), section(ReaderOptions, opts)
    fmt = detect_format(path) if fmt == "auto" else fmt
    if fmt == "hf":
        parts = read_hf_dataset(path, opts)
        if len(parts) != 1:
            raise NerflowError(f"{path}: holds splits {', '.join(parts)}; name it as data.path instead")
        return next(iter(parts.values()))
    if fmt not in READERS:
        raise NerflowError(f"data.format {fmt!r}: expected one of {', '.join(FORMATS)}")
    kind = "sentences (empty file, or only -DOCSTART- lines)" if fmt == "conll" else "sentences" if fmt == "klue" else "records"
    return _in_iob2(_nonempty(READERS[fmt](path, opts), str(path), kind), fmt, str(path), opts.scheme)


def read_split(path: str | Path, fmt: str, opts: Options = None) -> list[Sentence]:
    return list(iter_split(path, fmt, opts))


def _nonempty(sentences: Iterator[Sentence], where: str, kind: str) -> Iterator[Sentence]:
    empty = True
    for s in sentences:
        empty = False
        yield s
    if empty:
        raise NerflowError(f"{where}: no {kind}")


def read_conll(path: str | Path, opts: Options = None) -> list[Sentence]:
    """A CoNLL column file as written (tags in the file's own scheme)."""
    path = Path(path)
    return list(_nonempty(_conll(path, section(ReaderOptions, opts)), str(path), "sentences (empty file, or only -DOCSTART- lines)"))


def read_klue(path: str | Path, opts: Options = None) -> list[Sentence]:
    path = Path(path)
    return list(_nonempty(_klue(path, section(ReaderOptions, opts)), str(path), "sentences"))


def read_jsonl(path: str | Path, opts: Options = None) -> list[Sentence]:
    path = Path(path)
    return list(_nonempty(_jsonl(path, section(ReaderOptions, opts)), str(path), "records"))


# --------------------------------------------------------------------------- schemes

OTHER_SCHEME = {"S": "bioes", "E": "bioes", "L": "bilou", "U": "bilou"}  # prefixes IOB1/IOB2 do not have


def _in_iob2(sentences: Iterable[Sentence], fmt: str, where: str, scheme: str) -> Iterator[Sentence]:
    """The sentences with their tags converted from ``scheme`` to IOB2. A tag of BIOES/BILOU
    in an IOB1/IOB2 source is refused, naming its line (or record) and the scheme to declare."""
    seen: set[str] = set()
    for s in sentences:
        if not seen.issuperset(s.tags):  # check each distinct tag once
            for i, tag in enumerate(s.tags):
                prefix, _, etype = tag.partition("-")
                if etype and prefix in OTHER_SCHEME and scheme in ("iob1", "iob2"):
                    at = f"{where}:{s.line + i}" if fmt in TOKEN_LINES else f"{where}: record {s.line}, token {i}"
                    raise NerflowError(f"{at}: tag {tag!r} is not {scheme.upper()}: set data.scheme: {OTHER_SCHEME[prefix]}")
            seen.update(s.tags)
        if scheme != "iob2":
            s.tags = to_iob2(s.tags, scheme)
        yield s


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
