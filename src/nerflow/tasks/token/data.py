"""Token classification's dataset: a CoNLL-style corpus (any format of nerflow.tasks.token.readers)
read into the canonical dataset.

The canonical dataset is a Hugging Face ``DatasetDict`` saved to disk with splits
train/validation/test and columns ``tokens`` (list of str), ``ner_tags`` (list of ClassLabel
ids; the label names travel in the features), ``source_line`` (1-based line, or record
number, of the sentence in its source) and ``id``. ``manifest.json`` beside it records the
sources, counts, label list, the level (``word``, or ``char`` for character-level corpora
such as KLUE-NER, where ``"".join(tokens)`` is the sentence text) and a content hash that
identifies this data version. ``raw/`` beside it keeps a copy of the source files, so the
raw corpus is versioned (and pushed) with the DVC outputs.

The corpus is streamed from the readers into Arrow record batches (no Python object per token
is kept), so a 20M-token corpus fits in well under 1 GB.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Iterable, Iterator

import pyarrow as pa
import pyarrow.compute as pc

from nerflow import NerflowError
from nerflow.core.config import DataParams, Source
from nerflow.core.dataset import (
    BATCH,
    content_hash,
    open_source,
    pick_split,
    renamed,
    rows,
    write_dataset,
)
from nerflow.core.dataset import read_corpus as read_sources
from nerflow.tasks.token.readers import (
    Sentence,
    detect_format,
    hf_splits,
    iter_split,
    read_hf_dataset,
)

# Heavy libraries (datasets) are imported inside the functions that use them, on purpose:
# the CLI starts without them and a step loads only what it runs.

# a corpus read into memory: IOB2 tag strings, one row per sentence
TABLE = pa.schema([("tokens", pa.list_(pa.string())), ("tags", pa.list_(pa.string())),
                   ("source_line", pa.int32()), ("id", pa.string()), ("source", pa.string()),
                   ("document", pa.int32())])


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


def to_table(sentences: Iterable[Sentence], source: str = "") -> pa.Table:
    """Sentences into an Arrow table (columns of ``TABLE``; ``source`` names where they come
    from), a record batch at a time: Python objects exist for one batch only, and a list column
    is built from one flat list of values and the offsets (far faster than from a list of lists)."""
    it, batches = iter(sentences), []
    while chunk := list(itertools.islice(it, BATCH)):
        offsets = pa.array(itertools.accumulate((len(s.tokens) for s in chunk), initial=0), pa.int32())
        tokens = pa.array(list(itertools.chain.from_iterable(s.tokens for s in chunk)), pa.string())
        tags = pa.array(list(itertools.chain.from_iterable(s.tags for s in chunk)), pa.string())
        batches.append(pa.record_batch([pa.ListArray.from_arrays(offsets, tokens), pa.ListArray.from_arrays(offsets, tags),
                                        pa.array([s.line for s in chunk], pa.int32()),
                                        pa.array([s.id for s in chunk], pa.string()),
                                        pa.repeat(pa.scalar(source, pa.string()), len(chunk)),
                                        pa.array([s.document for s in chunk], pa.int32())], schema=TABLE))
    return pa.Table.from_batches(batches, schema=TABLE)


def sentences(table: pa.Table) -> Iterator[Sentence]:
    """The rows of a ``to_table`` table as sentences."""
    return (Sentence(*row) for row in rows(table, "tokens", "tags", "source_line", "id", "document"))


def _read_source(src: Source, p: DataParams, fill: str | None = None) -> tuple[dict[str, pa.Table], str, Path | None, str]:
    """One source: ({split: table}, how it is named, its local path (None from the Hub), format).
    ``fill``: the split this source fills (its own ``split``, or that name, is read from a source
    holding several); None: every split it has ("all" for a file of one split)."""
    opts = src.options(p)
    where, path, loaded = open_source(src, fill)
    if loaded is not None:
        fmt, parts = "hf", hf_splits(loaded, where, opts)
    else:
        fmt = detect_format(path) if opts.format == "auto" else opts.format
        parts = read_hf_dataset(path, opts) if fmt == "hf" else {"all": iter_split(path, fmt, opts)}
    parts = pick_split(parts, src, fill, where)
    return {name: to_table(part, src.label()) for name, part in parts.items()}, where, path, fmt


def _canonical(table: pa.Table, labels: list[str], features) -> pa.Table:
    """The canonical columns: ``ner_tags`` as ClassLabel ids in place of the tag strings."""
    value_set = pa.array(labels, pa.string())
    ids = [pa.ListArray.from_arrays(pc.subtract(c.offsets, c.offsets[0]),
                                    pc.index_in(c.flatten(), value_set=value_set).cast(pa.int64()))
           for c in table["tags"].chunks]
    return pa.table([table["tokens"], pa.chunked_array(ids, pa.list_(pa.int64())), table["source_line"], table["id"],
                     table["source"], table["document"]], schema=features.arrow_schema)


def prepare_token_data(p: DataParams, out_dir: str | Path, origin: dict[str, Any] | None = None,
                       source_names: dict[str, str] | None = None) -> dict[str, Any]:
    """prepare_data for token classification: IOB2 tags as ClassLabel ids."""
    from datasets import (
        ClassLabel,
        Dataset,
        DatasetDict,
        DatasetInfo,
        Features,
        Sequence,
        Value,
        disable_progress_bars,
    )

    disable_progress_bars()
    tables, sources, paths, layout = read_corpus(p)
    split_fmts = {split: parts[0][2] for split, parts in layout.items()}
    levels = {"char" if fmt == "klue" else "word" for fmt in split_fmts.values()}
    if p.level == "auto" and len(levels) > 1:
        raise NerflowError("data: the sources mix character-level (KLUE) and word-level corpora; set data.level")
    level = levels.pop() if p.level == "auto" else p.level
    labels = label_list({tag for t in tables.values() for tag in pc.unique(pc.list_flatten(t["tags"])).to_pylist()})
    features = Features(
        {
            "tokens": Sequence(Value("string")),
            "ner_tags": Sequence(ClassLabel(names=labels)),
            "source_line": Value("int32"),
            "id": Value("string"),
            "source": Value("string"),
            "document": Value("int32"),  # consecutive sentences of one document share it (-1: none)
        }
    )
    version = content_hash({split: rows(t, "tokens", "tags", "source") for split, t in tables.items()})
    dataset = DatasetDict({split: Dataset(_canonical(t, labels, features), info=DatasetInfo(features=features),
                                          fingerprint=f"{version[:16]}-{split}")
                           for split, t in tables.items()})
    # how source_line reads: a token per line (CoNLL, KLUE), a record per line (JSONL), records
    kinds = {"conll": "token_lines", "klue": "token_lines", "jsonl": "record_lines"}
    manifest = {
        "task": p.task,
        "content_hash": version,
        "level": level,
        "formats": split_fmts,
        "source_units": {split: kinds.get(split_fmts[split], "records") for split in tables},
        "labels": labels,
        "sources": {split: renamed(src, source_names) for split, src in sources.items()},
        "scheme_read": p.scheme,
        "splits": {
            split: {
                "sentences": t.num_rows,
                "tokens": pc.sum(pc.list_value_length(t["tokens"])).as_py(),
                "entities": sum(count_entities(tags) for (tags,) in rows(t, "tags")),
            }
            for split, t in tables.items()
        },
    }
    return write_dataset(out_dir, dataset, manifest, tables, layout, paths, kinds, p, origin, source_names)


def read_corpus(params: DataParams | dict[str, Any]):
    """The token-classification corpus the `data` params name (core.dataset.read_corpus with
    this task's reader): {split: table of IOB2 sentences}, {split: source}, paths, layout."""
    return read_sources(params, _read_source)
