"""Step `evaluate`: score a trained model on the dataset's test split (and any further named test
sets) as its task does, with an error analysis.

Token classification: seqeval at word (or character) level (nerflow.tasks.token.evaluate); text
classification: scikit-learn's classification scores (nerflow.tasks.text.evaluate). Either writes
``metrics.json`` (a DVC metric), ``predictions.jsonl`` (what the gate re-scores the champion on)
and a report folder with ``confusion.csv`` (a DVC plot), ``confusion.png``, ``errors.json`` and
``errors.html``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nerflow.core.config import EvaluateParams
from nerflow.core.dataset import read_manifest
from nerflow.tasks.registry import task_of


def evaluate(
    params: EvaluateParams | dict[str, Any],
    model_dir: str | Path,
    dataset_dir: str | Path,
    metrics_out: str | Path,
    predictions_out: str | Path,
    report_dir: str | Path | None = None,
    split: str = "test",
) -> dict[str, Any]:
    """Score the model on the dataset's ``split`` as the dataset's task does; the metrics."""
    return task_of(read_manifest(dataset_dir)).evaluate(params, model_dir, dataset_dir, metrics_out, predictions_out,
                                                        report_dir, split)
