"""The canonical dataset on disk, whatever the task: its splits, its manifest (sources, counts,
labels, the content hash that names the data version), and the corpus reading every task
shares: sources into Arrow tables, split by ratio or held out of train, copied raw beside
the dataset.

A task supplies how one source is read (``read`` in :func:`read_corpus`) and what its rows
hold; everything here is task-agnostic.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from nerflow import NerflowError
from nerflow.core import hub
from nerflow.core.config import DataParams, Source, SplitRatios, section, source_list
from nerflow.core.files import atomic_dir, write_json
from nerflow.core.paths import resolve_path

# Heavy libraries (datasets) are imported inside the functions that use them, on purpose:
# the CLI starts without them and a step loads only what it runs.

SPLIT_ALIASES = {"dev": "validation", "valid": "validation", "val": "validation"}
FEATURES_INFO = "preprocess.json"  # beside the features: labels, settings, per-split counts
VOCABULARY = "vocabulary.json"  # with a trimmed vocabulary: the kept ids in the model's numbering

SPLITS = ("train", "validation", "test")


MANIFEST = "manifest.json"


BATCH = 20_000  # sentences per Arrow record batch: Python objects exist for one batch at a time


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


def rows(table: pa.Table, *columns: str) -> Iterator[tuple]:
    """The values of ``columns`` in each row, as Python objects for one batch at a time."""
    for batch in table.select(list(columns)).to_batches(max_chunksize=BATCH):
        yield from zip(*(column.to_pylist() for column in batch.columns))


def shuffled(table: pa.Table, idx) -> pa.Table:
    """Rows ``idx`` of a table; drawn out of order, they are no longer consecutive sentences of
    a document (``document`` -1, when the table has one)."""
    out = table.take(pa.array(idx))
    if "document" in out.column_names:
        out = out.set_column(out.column_names.index("document"), "document",
                             pa.repeat(pa.scalar(-1, pa.int32()), out.num_rows))
    return out


def open_source(src: Source, fill: str | None = None) -> tuple[str, Path | None, Any]:
    """A source of the `data` params: (how it is named, its local path, None) for a path, or
    (its Hub name, None, the dataset loaded from the Hub) for a Hub id. ``fill``: the split it is
    read for, named in errors."""
    if src.hub:
        return hub.describe(src), None, hub.load_dataset(src.hub, src.name, key=f"data.{fill or 'path'}")
    return src.path, resolve_path(src.path), None


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


def read_corpus(params: DataParams | dict[str, Any], read: Callable) -> tuple[dict[str, pa.Table], dict[str, str], list[Path], dict[str, list]]:
    """The splits named by the `data` params: {split: table of IOB2 sentences (see ``TABLE``)},
    {split: source}, local source paths, and {split: [(source, sentences, format) of each of its
    sources]}. ``source_line`` is a line number for text formats and a record number for the
    others. A split of several sources is their sentences in the order listed. ``read``: how one
    source is read, the task's (``read(source, params, fill) -> ({split: table}, name, path, format)``)."""
    p = section(DataParams, params)
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


def renamed(source: str, names: dict[str, str] | None) -> str:
    """``source`` with each local path in ``names`` replaced by the name it is known by (a
    scratch copy of a versioned source named as in its repository)."""
    for local, name in (names or {}).items():
        source = source.replace(local, name)
    return source


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
        manifest["source_files"] = {split: [{"source": renamed(where, source_names), "sentences": n,
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


def folder_format(path: Path) -> str:
    """The format of a folder given as a source: a Hugging Face dataset saved to disk (``hf``)."""
    if (path / "dataset_dict.json").exists() or (path / "dataset_info.json").exists() or (path / "state.json").exists():
        return "hf"
    raise NerflowError(f"{path}: a directory with no dataset in it (expected dataset_dict.json or state.json)")


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
