"""Step `preprocess`: tokenize the canonical dataset into training windows with aligned labels.

Writes a ``DatasetDict`` (train/validation/test; columns input_ids, attention_mask,
[token_type_ids], labels) plus ``tokenizer/`` and ``preprocess.json`` (labels, settings and
how many sentences needed more than one window).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nerflow.core.config import PreprocessParams, section
from nerflow.core.dataset import (
    FEATURES_INFO,
    VOCABULARY,
    load_dataset_dir,
    read_manifest,
)
from nerflow.core.files import atomic_dir, write_json
from nerflow.core.inference import load_tokenizer
from nerflow.core.vocab import keep_ids, remap_ids, trimmed_tokenizer
from nerflow.tasks.registry import task_of

# Heavy libraries (datasets) are imported inside the functions that use them, on purpose:
# the CLI starts without them and a step loads only what it runs.


def preprocess(params: PreprocessParams | dict[str, Any], dataset_dir: str | Path, out_dir: str | Path) -> dict[str, Any]:
    """Encode the dataset for its task (nerflow.tasks.registry: windows with aligned tags, or texts cut
    to max_length as preprocess.truncation says), optionally trim the vocabulary, and write the
    features, the tokenizer and preprocess.json."""
    from datasets import Dataset, DatasetDict, disable_progress_bars


    params = section(PreprocessParams, params)
    disable_progress_bars()
    dataset = load_dataset_dir(dataset_dir)
    manifest = read_manifest(dataset_dir)
    task = task_of(manifest)
    tokenizer = load_tokenizer(params.model)
    out, stats, extra = task.encode(params, dataset, manifest, tokenizer)
    words = extra.pop("words")
    vocabulary = None
    if params.trim_vocabulary:  # keep the pieces the corpus uses; renumber the ids
        kept = keep_ids(tokenizer, {i for columns in out.values() for ids in columns["input_ids"] for i in ids}, words())
        original, tokenizer = len(tokenizer), trimmed_tokenizer(tokenizer, kept)
        for columns in out.values():
            columns["input_ids"] = remap_ids(columns["input_ids"], kept)
        vocabulary = {"original": original, "kept": len(kept), "kept_ids": kept}
    info = {
        "task": task.name,
        "labels": manifest["labels"],
        "content_hash": manifest["content_hash"],
        "tokenizer": params.model,
        "max_length": params.max_length,
        **extra,
        "splits": stats,
    }
    if vocabulary:
        info["vocabulary"] = {k: v for k, v in vocabulary.items() if k != "kept_ids"}
    with atomic_dir(out_dir) as tmp:
        DatasetDict({split: Dataset.from_dict(columns) for split, columns in out.items()}).save_to_disk(str(tmp))
        tokenizer.save_pretrained(str(tmp / "tokenizer"))
        if vocabulary:
            write_json(tmp / VOCABULARY, vocabulary)
        write_json(tmp / FEATURES_INFO, info)
    return info


