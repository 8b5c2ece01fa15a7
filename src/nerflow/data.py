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

The corpus is streamed from the readers into Arrow record batches (no Python object per token
is kept), so a 20M-token corpus fits in well under 1 GB.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
import shutil
from pathlib import Path
from typing import Any, Iterable, Iterator

import pyarrow as pa
import pyarrow.compute as pc

from nerflow import NerflowError
from nerflow.atomic import atomic_dir, write_json
from nerflow.config import DataParams, Source, SplitRatios, section, source_list
from nerflow.params import resolve_path
from nerflow.readers import SPLIT_ALIASES, Sentence, detect_format, hf_splits, iter_split, read_conll, read_hf_dataset

__all__ = ["Sentence", "read_conll", "read_corpus", "prepare_data", "load_dataset_dir", "read_manifest", "SPLITS"]

SPLITS = ("train", "validation", "test")
MANIFEST = "manifest.json"
BATCH = 20_000  # sentences per Arrow record batch: Python objects exist for one batch at a time
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


def content_hash(splits: dict[str, Iterable[tuple]]) -> str:
    """sha256 of the canonical content, {split: (tokens, tags[, source]) of each sentence},
    independent of file layout (an unnamed source is left out)."""
    digest = hashlib.sha256()
    for split in SPLITS:
        digest.update(f"#{split}\n".encode())
        for row in splits.get(split, ()):
            digest.update(json.dumps(list(row[:2] if len(row) > 2 and not row[2] else row), ensure_ascii=False).encode())
            digest.update(b"\n")
    return digest.hexdigest()


def split_by_ratio(n: int, ratios: SplitRatios | dict[str, float], seed: int) -> dict[str, list[int]]:
    """Shuffle the indices 0..n-1 with ``seed`` and cut them into train/validation/test by
    ``ratios``: {split: sorted indices}."""
    ratios = section(SplitRatios, ratios, "data.split_ratios")
    total = ratios.train + ratios.validation + ratios.test
    order = list(range(n))
    random.Random(seed).shuffle(order)
    n_train = round(n * ratios.train / total)
    n_dev = round(n * ratios.validation / total)
    cuts = {"train": order[:n_train], "validation": order[n_train : n_train + n_dev], "test": order[n_train + n_dev :]}
    return {split: sorted(idx) for split, idx in cuts.items()}


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


def rows(table: pa.Table, *columns: str) -> Iterator[tuple]:
    """The values of ``columns`` in each row, as Python objects for one batch at a time."""
    for batch in table.select(list(columns)).to_batches(max_chunksize=BATCH):
        yield from zip(*(column.to_pylist() for column in batch.columns))


def sentences(table: pa.Table) -> Iterator[Sentence]:
    """The rows of a ``to_table`` table as sentences."""
    return (Sentence(*row) for row in rows(table, "tokens", "tags", "source_line", "id", "document"))


def shuffled(table: pa.Table, idx) -> pa.Table:
    """Rows ``idx`` of a table; drawn out of order, they are no longer consecutive sentences of
    a document (``document`` -1, when the table has one)."""
    out = table.take(pa.array(idx))
    if "document" in out.column_names:
        out = out.set_column(out.column_names.index("document"), "document",
                             pa.repeat(pa.scalar(-1, pa.int32()), out.num_rows))
    return out


def _read_source(src: Source, p: DataParams, fill: str | None = None) -> tuple[dict[str, pa.Table], str, Path | None, str]:
    """One source: ({split: table}, how it is named, its local path (None from the Hub), format).
    ``fill``: the split this source fills (its own ``split``, or that name, is read from a source
    holding several); None: every split it has ("all" for a file of one split)."""
    from nerflow import hub

    opts = src.options(p)
    if src.hub:
        where, path, fmt = hub.describe(src), None, "hf"
        parts = hf_splits(hub.load_dataset(src.hub, src.name, key=f"data.{fill or 'path'}"), where, opts)
    else:
        where, path = src.path, resolve_path(src.path)
        fmt = detect_format(path) if opts.format == "auto" else opts.format
        parts = read_hf_dataset(path, opts) if fmt == "hf" else {"all": iter_split(path, fmt, opts)}
    parts = pick_split(parts, src, fill, where)
    return {name: to_table(part, src.label()) for name, part in parts.items()}, where, path, fmt


def pick_split(parts: dict[str, Any], src: Source, fill: str | None, where: str) -> dict[str, Any]:
    """Of a source's {split: rows}, the one that fills split ``fill`` (the source's own ``split``,
    else that name; a file of one split fills any), as {fill: rows}; all of them when ``fill``
    is None."""
    if fill is None:
        return parts
    want = "all" if "all" in parts else SPLIT_ALIASES.get(src.split, src.split) if src.split else fill
    if want not in parts and not (len(parts) == 1 and not src.split):
        raise NerflowError(f"{where}: no split {want!r} (has {', '.join(parts)}); name the one to read as split:")
    return {fill: parts.get(want) or next(iter(parts.values()))}


def _held_out(tables: dict[str, pa.Table], sources: dict[str, str], layout: dict[str, list], p: DataParams):
    """Validation as ``data.validation_share`` of train, drawn with ``split_seed``; both keep
    their rows' source lines (in the train file), so validation still names file and line."""
    import numpy as np

    train = tables["train"]
    order = np.random.default_rng(p.split_seed).permutation(train.num_rows)
    n_dev = max(1, int(round(train.num_rows * p.validation_share)))
    dev_idx, train_idx = np.sort(order[:n_dev]), np.sort(order[n_dev:])
    if len(layout["train"]) > 1:
        raise NerflowError("data.validation_share needs a train split of one source (a list was given)")
    where, _, fmt = layout["train"][0]
    tables = {**tables, "train": shuffled(train, train_idx), "validation": shuffled(train, dev_idx)}
    sources = {**sources, "validation": sources["train"]}
    layout = {**layout, "train": [(where, len(train_idx), fmt)], "validation": [(where, n_dev, fmt)]}
    return tables, sources, layout


def read_corpus(params: DataParams | dict[str, Any], read=None) -> tuple[dict[str, pa.Table], dict[str, str], list[Path], dict[str, list]]:
    """The splits named by the `data` params: {split: table of IOB2 sentences (see ``TABLE``)},
    {split: source}, local source paths, and {split: [(source, sentences, format) of each of its
    sources]}. ``source_line`` is a line number for text formats and a record number for the
    others. A split of several sources is their sentences in the order listed. ``read``: how one
    source is read (``_read_source``'s signature; text classification reads texts and labels)."""
    p = section(DataParams, params)
    read = read or _read_source
    paths, layout = [], {}
    if p.path:
        parts, where, path, fmt = read(p.path, p)
        paths = [path] if path else []
        if set(SPLITS) <= set(parts):
            tables = {s: parts[s] for s in SPLITS}
        else:
            pooled = pa.concat_tables(parts.values())
            tables = {s: shuffled(pooled, idx) for s, idx in split_by_ratio(pooled.num_rows, p.split_ratios, p.split_seed).items()}
        sources = {s: where + ("" if s in parts else f" (seeded split, seed {p.split_seed})") for s in SPLITS}
        layout = {s: [(sources[s], tables[s].num_rows, fmt)] for s in SPLITS}
    else:
        tables, sources = {}, {}
        for split in SPLITS:
            done = [read(src, p, split) for src in source_list(getattr(p, split))]
            if not done:  # validation carved out of train below (data.validation_share)
                continue
            tables[split] = pa.concat_tables(parts[split] for parts, *_ in done)
            sources[split] = " + ".join(where for _, where, _, _ in done)
            paths += [path for _, _, path, _ in done if path]
            layout[split] = [(where, parts[split].num_rows, fmt) for parts, where, _, fmt in done]
        if "validation" not in tables:
            tables, sources, layout = _held_out(tables, sources, layout, p)
        tables, sources, layout = ({s: d[s] for s in SPLITS} for d in (tables, sources, layout))
    for split, table in tables.items():
        if p.max_sentences:
            tables[split] = table = table.slice(0, p.max_sentences)
            left, clipped = p.max_sentences, []
            for where, n, fmt in layout[split]:
                clipped.append((where, min(n, left), fmt))
                left -= clipped[-1][1]
            layout[split] = [part for part in clipped if part[1]]
        if not table.num_rows:
            raise NerflowError(f"{sources[split]}: split {split} is empty")
    return tables, sources, paths, layout


def _canonical(table: pa.Table, labels: list[str], features) -> pa.Table:
    """The canonical columns: ``ner_tags`` as ClassLabel ids in place of the tag strings."""
    value_set = pa.array(labels, pa.string())
    ids = [pa.ListArray.from_arrays(pc.subtract(c.offsets, c.offsets[0]),
                                    pc.index_in(c.flatten(), value_set=value_set).cast(pa.int64()))
           for c in table["tags"].chunks]
    return pa.table([table["tokens"], pa.chunked_array(ids, pa.list_(pa.int64())), table["source_line"], table["id"],
                     table["source"], table["document"]], schema=features.arrow_schema)


def _renamed(source: str, names: dict[str, str]) -> str:
    for local, name in names.items():
        source = source.replace(local, name)
    return source


def prepare_data(params: DataParams | dict[str, Any], out_dir: str | Path, origin: dict[str, Any] | None = None,
                 source_names: dict[str, str] | None = None) -> dict[str, Any]:
    """Read the corpus named in ``params`` (the `data` section) into the canonical dataset of
    its task (``data.task``). ``origin`` (KFP path, nerflow.versioned): the repository, commit
    and source versions the corpus was read at, kept in the manifest; ``source_names``: how to
    name a scratch copy."""
    from nerflow.tasks import task_named

    p = section(DataParams, params)
    return task_named(p.task).prepare_data(p, out_dir, origin, source_names)


def prepare_token_data(p: DataParams, out_dir: str | Path, origin: dict[str, Any] | None = None,
                       source_names: dict[str, str] | None = None) -> dict[str, Any]:
    """prepare_data for token classification: IOB2 tags as ClassLabel ids."""
    from datasets import ClassLabel, Dataset, DatasetDict, DatasetInfo, Features, Sequence, Value, disable_progress_bars

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
        "sources": {split: _renamed(src, source_names or {}) for split, src in sources.items()},
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


def write_dataset(out_dir, dataset, manifest: dict[str, Any], tables: dict[str, pa.Table], layout: dict[str, list],
                  paths: list[Path], kinds: dict[str, str], p: DataParams, origin: dict[str, Any] | None,
                  source_names: dict[str, str] | None) -> dict[str, Any]:
    """What every task's dataset records beside its rows (examples per named source, where a
    split of several files starts in each, held-out validation, the origin), written atomically
    with a copy of the raw sources; the manifest."""
    named = {split: dict(zip(*(v.to_pylist() for v in pc.value_counts(t["source"]).flatten())))
             for split, t in tables.items()}
    if any(name for counts in named.values() for name in counts):  # several corpora: sentences per source
        manifest["source_sentences"] = named
    if any(len(parts) > 1 for parts in layout.values()):  # where each sentence's source_line points
        manifest["source_files"] = {split: [{"source": _renamed(where, source_names or {}), "sentences": n,
                                             "unit": kinds.get(fmt, "records")} for where, n, fmt in parts]
                                    for split, parts in layout.items()}
    if p.validation_share and not source_list(p.validation) and not p.path:
        manifest["validation_share"] = {"share": p.validation_share, "seed": p.split_seed, "of": "train"}
    if origin:
        manifest["origin"] = origin
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
