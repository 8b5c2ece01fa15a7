"""Step `data`: read a labelled corpus and write the canonical dataset.

The canonical dataset is a Hugging Face ``DatasetDict`` saved to disk with splits
train/validation/test and columns ``tokens`` (list of str), ``ner_tags`` (list of
ClassLabel ids; the label names travel in the features), ``source_line`` (1-based line
of the sentence's first token in its source file). ``manifest.json`` beside it records the
sources, counts, label list and a content hash that identifies this data version.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nerflow import NerflowError
from nerflow.atomic import atomic_dir, write_json
from nerflow.params import resolve_path

SPLITS = ("train", "validation", "test")
MANIFEST = "manifest.json"


@dataclass
class Sentence:
    tokens: list[str]
    tags: list[str]
    line: int  # 1-based line of the first token in the source file


def read_conll(path: str | Path, tag_column: int = -1) -> list[Sentence]:
    """Read a CoNLL column file: token in the first column, tag in ``tag_column``.

    Columns are separated by tabs or spaces; ``-DOCSTART-`` lines are skipped; a blank line
    ends a sentence. Raises NerflowError naming the file and line on malformed input.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except IsADirectoryError:
        raise NerflowError(f"{path}: is a directory, expected a CoNLL file") from None
    except OSError as exc:
        raise NerflowError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise NerflowError(f"{path}:{line}: not UTF-8 (byte 0x{raw[exc.start]:02x})") from None

    sentences: list[Sentence] = []
    tokens: list[str] = []
    tags: list[str] = []
    first_line = 0
    width = None
    for lineno, line in enumerate(text.splitlines(), start=1):
        if "\x00" in line:
            raise NerflowError(f"{path}:{lineno}: NUL byte (binary file?)")
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
            raise NerflowError(
                f"{path}:{lineno}: {len(cols)} columns where earlier lines have {width}"
            )
        try:
            tag = cols[tag_column]
        except IndexError:
            raise NerflowError(f"{path}:{lineno}: no tag column {tag_column}") from None
        if not tokens:
            first_line = lineno
        tokens.append(cols[0])
        tags.append(tag.strip())
    if tokens:
        sentences.append(Sentence(tokens, tags, first_line))
    if not sentences:
        raise NerflowError(f"{path}: no sentences (empty file, or only -DOCSTART- lines)")
    return sentences


def label_list(tags: set[str]) -> list[str]:
    """'O' first, then by entity type, B- before I-; anything else (invalid) last, sorted."""

    def key(tag: str) -> tuple:
        if tag == "O":
            return (0, "", "")
        prefix, _, etype = tag.partition("-")
        return (1, etype, prefix) if prefix in ("B", "I") and etype else (2, tag, "")

    return sorted(tags, key=key)


def count_entities(tags: list[str]) -> int:
    """Entities in one tag sequence: a B-X, or an I-X not continuing an X (IOB1 style)."""
    count, prev = 0, "O"
    for tag in tags:
        if tag.startswith("B-") or (tag.startswith("I-") and prev[2:] != tag[2:]):
            count += 1
        prev = tag if tag != "O" else "O"
    return count


def content_hash(splits: dict[str, list[Sentence]]) -> str:
    """sha256 of the canonical content (tokens and tags), independent of file layout."""
    digest = hashlib.sha256()
    for split in SPLITS:
        digest.update(f"#{split}\n".encode())
        for s in splits.get(split, []):
            digest.update(json.dumps([s.tokens, s.tags], ensure_ascii=False).encode())
            digest.update(b"\n")
    return digest.hexdigest()


def prepare_data(params: dict[str, Any], out_dir: str | Path) -> dict[str, Any]:
    """Read the splits named in ``params`` (the `data` section) into the canonical dataset."""
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Sequence, Value

    splits: dict[str, list[Sentence]] = {}
    sources: dict[str, str] = {}
    for split in SPLITS:
        spec = params.get(split)
        if not spec:
            raise NerflowError(f"params data.{split}: no file given")
        path = resolve_path(spec)
        sentences = read_conll(path, int(params.get("tag_column", -1)))
        limit = params.get("max_sentences")
        if limit:
            sentences = sentences[: int(limit)]
        splits[split] = sentences
        sources[split] = str(spec)

    labels = label_list({t for ss in splits.values() for s in ss for t in s.tags})
    features = Features(
        {
            "tokens": Sequence(Value("string")),
            "ner_tags": Sequence(ClassLabel(names=labels)),
            "source_line": Value("int32"),
        }
    )
    index = {label: i for i, label in enumerate(labels)}
    dataset = DatasetDict(
        {
            split: Dataset.from_dict(
                {
                    "tokens": [s.tokens for s in ss],
                    "ner_tags": [[index[t] for t in s.tags] for s in ss],
                    "source_line": [s.line for s in ss],
                },
                features=features,
            )
            for split, ss in splits.items()
        }
    )
    manifest = {
        "content_hash": content_hash(splits),
        "labels": labels,
        "sources": sources,
        "splits": {
            split: {
                "sentences": len(ss),
                "tokens": sum(len(s.tokens) for s in ss),
                "entities": sum(count_entities(s.tags) for s in ss),
            }
            for split, ss in splits.items()
        },
    }
    with atomic_dir(out_dir) as tmp:
        dataset.save_to_disk(str(tmp))
        write_json(tmp / MANIFEST, manifest)
    return manifest


def load_dataset_dir(path: str | Path):
    """Load the canonical dataset written by :func:`prepare_data`."""
    from datasets import load_from_disk

    path = Path(path)
    if not (path / "dataset_dict.json").exists():
        raise NerflowError(f"{path}: not a nerflow dataset (run the data step first)")
    return load_from_disk(str(path))


def read_manifest(path: str | Path) -> dict[str, Any]:
    with open(Path(path) / MANIFEST, encoding="utf-8") as fh:
        return json.load(fh)
