"""Text classification's dataset (a label per text: sentiment, topic, intent).

The canonical text dataset is a ``DatasetDict`` (train/validation/test) with columns ``text``
(str; empty or null kept as read, so validation can report it), ``label`` (str: the label's
name; one outside the label set is kept as written, so validation can name its line),
``source_line`` (1-based line, or record number, in the source), ``id`` and ``source``.
``manifest.json`` records ``task: text-classification``, the label set (``labels``, from
``data.label_names`` or the labels the data has), ``label_set_from`` (params | data) and per
split the texts, characters and label counts.
"""

from __future__ import annotations

import pyarrow.compute as pc

from nerflow.core.dataset import (
    SPLITS,
    content_hash,
    read_corpus,
    renamed,
    rows,
    write_dataset,
)
from nerflow.tasks.base import TEXT
from nerflow.tasks.text.readers import read_text_source

# Heavy libraries (datasets) are imported inside the functions that use them, on purpose:
# the CLI starts without them and a step loads only what it runs.


def label_order(labels) -> list[str]:
    """The label set in a stable order: numerically when every label is an integer, else by name."""
    labels = set(labels)
    if all(label.lstrip("-").isdigit() for label in labels):
        return sorted(labels, key=int)
    return sorted(labels)


def prepare_text_data(p, out_dir, origin=None, source_names=None) -> dict:
    """prepare_data for text classification (the canonical text dataset, see the module doc)."""
    from datasets import (
        Dataset,
        DatasetDict,
        DatasetInfo,
        Features,
        Value,
        disable_progress_bars,
    )

    disable_progress_bars()
    tables, sources, paths, layout = read_corpus(p, read=read_text_source)
    seen = {label for t in tables.values() for label in pc.unique(t["label"]).to_pylist()}
    labels = list(p.label_names) if p.label_names else label_order(seen)
    features = Features({"text": Value("string"), "label": Value("string"), "source_line": Value("int32"),
                         "id": Value("string"), "source": Value("string")})
    version = content_hash({split: ((t, lab, src) for t, lab, src in rows(table, "text", "label", "source"))
                            for split, table in tables.items()})
    dataset = DatasetDict({split: Dataset(t.cast(features.arrow_schema), info=DatasetInfo(features=features),
                                          fingerprint=f"{version[:16]}-{split}") for split, t in tables.items()})
    kinds = {"tsv": "row_lines", "csv": "row_lines", "jsonl": "record_lines"}
    split_fmts = {split: parts[0][2] for split, parts in layout.items()}
    manifest = {
        "task": TEXT,
        "content_hash": version,
        "level": "text",
        "formats": split_fmts,
        "source_units": {split: kinds.get(split_fmts[split], "records") for split in tables},
        "labels": labels,
        "label_set_from": "params" if p.label_names else "data",
        "sources": {split: renamed(src, source_names) for split, src in sources.items()},
        "splits": {split: _split_facts(t) for split, t in tables.items() if split in SPLITS},
    }
    return write_dataset(out_dir, dataset, manifest, tables, layout, paths, kinds, p, origin, source_names)


def _split_facts(table) -> dict:
    counts = pc.value_counts(table["label"]).flatten()
    return {"texts": table.num_rows,
            "characters": int(pc.sum(pc.fill_null(pc.utf8_length(table["text"]), 0)).as_py() or 0),
            "label_counts": dict(sorted(zip(*(v.to_pylist() for v in counts))))}
