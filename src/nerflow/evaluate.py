"""Step `evaluate`: score a trained model on the test split with seqeval, at word level.

Writes ``metrics.json`` (overall and per-type P/R/F1, accuracy, throughput; a DVC metric)
and ``predictions.jsonl`` (one sentence a line: tokens, gold and predicted tags).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from nerflow.atomic import atomic_file, write_json
from nerflow.data import load_dataset_dir, read_manifest
from nerflow.metrics import score


def evaluate(
    params: dict[str, Any],
    model_dir: str | Path,
    dataset_dir: str | Path,
    metrics_out: str | Path,
    predictions_out: str | Path,
    split: str = "test",
) -> dict[str, Any]:
    from nerflow.predict import WordTagger

    dataset = load_dataset_dir(dataset_dir)
    manifest = read_manifest(dataset_dir)
    rows = dataset[split]
    names = rows.features["ner_tags"].feature.names
    tokens = rows["tokens"]
    gold = [[names[t] for t in tags] for tags in rows["ner_tags"]]
    tagger = WordTagger(model_dir, precision=params.get("precision", "auto"), batch_size=int(params.get("batch_size", 64)))
    started = time.perf_counter()
    pred, _probs = tagger.predict(tokens)
    seconds = time.perf_counter() - started
    metrics = score(gold, pred, params.get("scheme", "default"))
    metrics.update(
        split=split,
        sentences=len(tokens),
        words=sum(len(t) for t in tokens),
        content_hash=manifest["content_hash"],
        predict_seconds=round(seconds, 2),
        sentences_per_second=round(len(tokens) / seconds, 1),
    )
    with atomic_file(predictions_out) as fh:
        for t, g, p in zip(tokens, gold, pred):
            fh.write(json.dumps({"tokens": t, "gold": g, "pred": p}, ensure_ascii=False) + "\n")
    write_json(metrics_out, metrics)
    return metrics
