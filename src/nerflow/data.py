"""Step `data`: read a labelled corpus (any format in nerflow.readers) and write the
canonical dataset.

The canonical dataset is a Hugging Face ``DatasetDict`` saved to disk with splits
train/validation/test and columns ``tokens`` (list of str), ``ner_tags`` (list of ClassLabel
ids; the label names travel in the features), ``source_line`` (1-based line, or record
number, of the sentence in its source) and ``id``. ``manifest.json`` beside it records the
sources, counts, label list, the level (``word``, or ``char`` for character-level corpora
such as KLUE-NER, where ``"".join(tokens)`` is the sentence text) and a content hash that
identifies this data version. ``raw/`` beside it keeps a copy of the source files, so the
raw corpus is versioned (and pushed) with the DVC outputs.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from pathlib import Path
from typing import Any

from nerflow import NerflowError
from nerflow.atomic import atomic_dir, write_json
from nerflow.params import resolve_path
from nerflow.readers import SCHEMES, Sentence, detect_format, read_conll, read_hf_dataset, read_split, to_iob2

__all__ = ["Sentence", "read_conll", "prepare_data", "load_dataset_dir", "read_manifest", "SPLITS"]

SPLITS = ("train", "validation", "test")
MANIFEST = "manifest.json"


def label_list(tags: set[str]) -> list[str]:
    """'O' first, then by entity type, B- before I-; anything else (invalid) last, sorted."""

    def key(tag: str) -> tuple:
        if tag == "O":
            return (0, "", "")
        prefix, _, etype = tag.partition("-")
        return (1, etype, prefix) if prefix in ("B", "I") and etype else (2, tag, "")

    return sorted(tags, key=key)


def entity_types(tags: list[str]) -> list[str]:
    """Types of the entities in one tag sequence, by conlleval's rule: a B-X, or an I-X that
    does not continue an X, starts an entity."""
    out, prev = [], "O"
    for tag in tags:
        if tag.startswith("B-") or (tag.startswith("I-") and prev[2:] != tag[2:]):
            out.append(tag[2:])
        prev = tag
    return out


def count_entities(tags: list[str]) -> int:
    return len(entity_types(tags))


def content_hash(splits: dict[str, list[Sentence]]) -> str:
    """sha256 of the canonical content (tokens and tags), independent of file layout."""
    digest = hashlib.sha256()
    for split in SPLITS:
        digest.update(f"#{split}\n".encode())
        for s in splits.get(split, []):
            digest.update(json.dumps([s.tokens, s.tags], ensure_ascii=False).encode())
            digest.update(b"\n")
    return digest.hexdigest()


def split_by_ratio(sentences: list[Sentence], ratios: dict[str, float], seed: int) -> dict[str, list[Sentence]]:
    """Shuffle with ``seed`` and cut into train/validation/test by ``ratios``."""
    total = sum(float(ratios.get(s, 0)) for s in SPLITS)
    if total <= 0 or any(float(ratios.get(s, 0)) < 0 for s in SPLITS):
        raise NerflowError(f"data.split_ratios {ratios}: expected non-negative train/validation/test shares")
    order = list(range(len(sentences)))
    random.Random(seed).shuffle(order)
    n = len(order)
    n_train = round(n * float(ratios.get("train", 0)) / total)
    n_dev = round(n * float(ratios.get("validation", 0)) / total)
    cuts = {"train": order[:n_train], "validation": order[n_train : n_train + n_dev], "test": order[n_train + n_dev :]}
    return {split: [sentences[i] for i in sorted(idx)] for split, idx in cuts.items()}


def read_corpus(params: dict[str, Any]) -> tuple[dict[str, list[Sentence]], dict[str, str], list[Path]]:
    """The splits named by the `data` params: {split: sentences}, {split: source}, source paths.
    ``Sentence.line`` is a line number for text formats and a record number for the others."""
    fmt = params.get("format", "auto") or "auto"
    splits: dict[str, list[Sentence]] = {}
    sources: dict[str, str] = {}
    paths: list[Path] = []
    if params.get("path"):
        path = resolve_path(params["path"])
        paths.append(path)
        if (fmt == "auto" and detect_format(path) == "hf") or fmt == "hf":
            parts = read_hf_dataset(path, params.get("label_names"))
        else:
            parts = {"all": read_split(path, fmt, params)}
        if set(SPLITS) <= set(parts):
            splits = {s: parts[s] for s in SPLITS}
        else:
            pooled = [s for part in parts.values() for s in part]
            splits = split_by_ratio(pooled, params.get("split_ratios") or {"train": 0.8, "validation": 0.1, "test": 0.1},
                                    int(params.get("split_seed", 42)))
        sources = {s: f"{params['path']}" + ("" if s in parts else f" (seeded split, seed {params.get('split_seed', 42)})")
                   for s in SPLITS}
    else:
        for split in SPLITS:
            spec = params.get(split)
            if not spec:
                raise NerflowError(f"params data.{split}: no file given (or set data.path)")
            path = resolve_path(spec)
            paths.append(path)
            splits[split] = read_split(path, fmt, params)
            sources[split] = str(path)
    scheme = (params.get("scheme") or "iob2").lower()
    if scheme not in SCHEMES:
        raise NerflowError(f"data.scheme {scheme!r}: expected one of {', '.join(SCHEMES)}")
    limit = params.get("max_sentences")
    for split, sentences in splits.items():
        if limit:
            sentences = sentences[: int(limit)]
        if scheme != "iob2":
            sentences = [Sentence(s.tokens, to_iob2(s.tags, scheme), s.line, s.id) for s in sentences]
        splits[split] = sentences
        if not sentences:
            raise NerflowError(f"{sources[split]}: split {split} is empty")
    return splits, sources, paths


def prepare_data(params: dict[str, Any], out_dir: str | Path) -> dict[str, Any]:
    """Read the corpus named in ``params`` (the `data` section) into the canonical dataset."""
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Sequence, Value, disable_progress_bars

    disable_progress_bars()
    splits, sources, paths = read_corpus(params)
    fmt = params.get("format", "auto") or "auto"
    level = params.get("level") or "auto"
    if level == "auto":
        level = "char" if (fmt == "klue" or (fmt == "auto" and paths[0].is_file() and detect_format(paths[0]) == "klue")) else "word"
    elif level not in ("word", "char"):
        raise NerflowError(f"data.level {level!r}: expected auto, word or char")
    labels = label_list({t for ss in splits.values() for s in ss for t in s.tags})
    features = Features(
        {
            "tokens": Sequence(Value("string")),
            "ner_tags": Sequence(ClassLabel(names=labels)),
            "source_line": Value("int32"),
            "id": Value("string"),
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
                    "id": [s.id for s in ss],
                },
                features=features,
            )
            for split, ss in splits.items()
        }
    )
    fmts = [fmt if fmt != "auto" else detect_format(p) for p in paths]
    split_fmts = dict(zip(SPLITS, fmts if len(fmts) == len(SPLITS) else fmts * len(SPLITS)))
    # how source_line reads: a token per line (CoNLL, KLUE), a record per line (JSONL), records
    kinds = {"conll": "token_lines", "klue": "token_lines", "jsonl": "record_lines"}
    manifest = {
        "content_hash": content_hash(splits),
        "level": level,
        "formats": split_fmts,
        "source_units": {split: kinds.get(split_fmts[split], "records") for split in splits},
        "labels": labels,
        "sources": sources,
        "scheme_read": (params.get("scheme") or "iob2").lower(),
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
        (tmp / "raw").mkdir()
        for i, path in enumerate(dict.fromkeys(paths)):
            target = tmp / "raw" / f"{i}-{path.name}"
            (shutil.copytree if path.is_dir() else shutil.copy2)(path, target)
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
