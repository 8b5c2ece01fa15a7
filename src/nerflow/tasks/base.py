"""The interface through which the steps reach what differs between tasks: reading, validation
tables, encoding, the model class, metrics, prediction and the gate's scores.

A step stays task-agnostic: it asks the dataset (its manifest) or the model (its
``nerflow.json``) which task it holds, takes the ``Task`` for it from nerflow.tasks.registry,
and calls these methods. ``data.task`` in params chooses; the data step writes it into the
manifest and every step after it follows the manifest (or the trained model), so one params
key switches the whole workflow, DVC stages and KFP components included.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

from nerflow.core.config import (
    TEXT,
    TOKEN,
    Checks,
    DataParams,
    EvaluateParams,
    PreprocessParams,
    ValidateParams,
)

__all__ = ["TEXT", "TOKEN", "Task", "ValidationTables", "Encoded", "Predictions"]

# {table: DataFrame}, the facts the report shows, and locate(table, row, check) -> where the row comes from
ValidationTables = tuple[dict[str, Any], dict[str, Any], Callable[[str, int, str], dict[str, Any]]]
# ({split: feature columns}, {split: stats}, extra info for preprocess.json)
Encoded = tuple[dict[str, dict[str, list]], dict[str, dict[str, Any]], dict[str, Any]]
# (inputs, gold, predicted, the label set where the metric needs it)
Predictions = tuple[Any, list, list, list[str] | None]


class Task(Protocol):
    """What a task supplies to the steps."""

    name: str  # TOKEN or TEXT
    auto_model: str  # the transformers Auto class of its models
    unit: str  # what one example is, in messages: sentence | text

    # data ----------------------------------------------------------------------------------
    def prepare_data(self, params: DataParams, out_dir: str | Path, origin: dict[str, Any] | None = None,
                     source_names: dict[str, str] | None = None) -> dict[str, Any]:
        """Read the corpus the `data` params name into the canonical dataset; the manifest."""
        ...

    # validate ------------------------------------------------------------------------------
    def validation_tables(self, dataset: Any, manifest: dict[str, Any], params: ValidateParams) -> ValidationTables:
        """The GX tables, the facts for the report, and ``locate(table, row, check)``."""
        ...

    def expectations(self, checks: Checks, facts: dict[str, Any]) -> dict[str, list]:
        """{table: [GX expectation]} for the task's checks not switched off."""
        ...

    def report_html(self, summary: dict[str, Any]) -> str:
        """The task's sections of the validation report (splits, label or type counts, drift)."""
        ...

    # preprocess / train --------------------------------------------------------------------
    def encode(self, params: PreprocessParams, dataset: Any, manifest: dict[str, Any], tokenizer: Any) -> Encoded:
        """The features of every split, their stats, and what preprocess.json records beside them."""
        ...

    def collator(self, tokenizer: Any) -> Callable:
        """The Trainer's data collator (dynamic padding)."""
        ...

    def dev_metrics(self, info: dict[str, Any], features: Any) -> Callable[[Any], dict[str, float]]:
        """The Trainer's compute_metrics: at least ``f1`` (the dev score keep-best follows)."""
        ...

    # evaluate / gate / serve ---------------------------------------------------------------
    def evaluate(self, params: EvaluateParams, model_dir: str | Path, dataset_dir: str | Path,
                 metrics_out: str | Path, predictions_out: str | Path, report_dir: str | Path | None = None,
                 split: str = "test") -> dict[str, Any]:
        """Score the model on ``split``; write metrics, predictions and the error analysis."""
        ...

    def predictor(self, model_dir: str | Path, **kwargs: Any) -> Any:
        """The model loaded for prediction (WordTagger / TextClassifier)."""
        ...

    def read_predictions(self, path: str | Path) -> Predictions:
        """(inputs, gold, predicted, the label set where the metric needs it) from the evaluate
        step's predictions.jsonl."""
        ...

    def predict_labels(self, model_dir: str | Path, inputs: Any) -> list:
        """What a model (the champion) predicts for the inputs of predictions.jsonl."""
        ...

    def gate_score(self, gold: Sequence, pred: Sequence, metric: str, scheme: str,
                   labels: Sequence[str] | None = None) -> dict[str, Any]:
        """{"value": the gate metric, "precision", "recall", "per_type": {name: {"f1", "support"}}}."""
        ...

    def bootstrap_counts(self, gold: Sequence, pred: Sequence, metric: str, scheme: str,
                         labels: Sequence[str] | None = None) -> tuple[Any, Callable]:
        """(per-example count matrix, function of summed counts [resamples x columns] -> metric):
        summed over all examples they give exactly gate_score's value."""
        ...
