"""Text classification's ``Task``: the steps' calls, answered by this package's modules."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from nerflow.core.config import (
    Checks,
    DataParams,
    EvaluateParams,
    PreprocessParams,
    ValidateParams,
)
from nerflow.tasks.base import TEXT, Encoded, Predictions, ValidationTables
from nerflow.tasks.text import data, encode, evaluate, metrics, validate
from nerflow.tasks.text.classify import TextClassifier

# Heavy libraries (transformers) are imported inside the functions that use them, on purpose:
# the CLI starts without them and a step loads only what it runs.


class TextClassification:
    name, auto_model, unit = TEXT, "AutoModelForSequenceClassification", "text"

    def prepare_data(self, params: DataParams, out_dir: str | Path, origin: dict[str, Any] | None = None,
                     source_names: dict[str, str] | None = None) -> dict[str, Any]:
        return data.prepare_text_data(params, out_dir, origin, source_names)

    def validation_tables(self, dataset: Any, manifest: dict[str, Any], params: ValidateParams) -> ValidationTables:
        return validate.build_tables(dataset, manifest, params)

    def expectations(self, checks: Checks, facts: dict[str, Any]) -> dict[str, list]:
        return validate.expectations(checks, facts)

    def report_html(self, summary: dict[str, Any]) -> str:
        return validate.report_html(summary)

    def encode(self, params: PreprocessParams, dataset: Any, manifest: dict[str, Any], tokenizer: Any) -> Encoded:
        return encode.encode_dataset(params, dataset, manifest, tokenizer)

    def collator(self, tokenizer: Any):
        from transformers import (
            DataCollatorWithPadding,  # deferred: heavy (CLI start-up)
        )

        return DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8)

    def dev_metrics(self, info: dict[str, Any], features: Any):
        return metrics.dev_metrics(info["labels"])

    def evaluate(self, params: EvaluateParams, model_dir: str | Path, dataset_dir: str | Path, metrics_out: str | Path,
                 predictions_out: str | Path, report_dir: str | Path | None = None, split: str = "test") -> dict[str, Any]:
        return evaluate.evaluate_texts(params, model_dir, dataset_dir, metrics_out, predictions_out, report_dir, split)

    def predictor(self, model_dir: str | Path, **kwargs: Any) -> TextClassifier:
        return TextClassifier(model_dir, **kwargs)

    def read_predictions(self, path: str | Path) -> Predictions:
        return metrics.read_text_predictions(path)

    def predict_labels(self, model_dir: str | Path, inputs: list[str]) -> list:
        return [p["label"] for p in self.predictor(model_dir).predict(inputs)]

    def gate_score(self, gold: Sequence, pred: Sequence, metric: str, scheme: str,
                   labels: Sequence[str] | None = None) -> dict[str, Any]:
        return metrics.gate_score(gold, pred, metric, labels or sorted(set(gold)))

    def bootstrap_counts(self, gold: Sequence, pred: Sequence, metric: str, scheme: str,
                         labels: Sequence[str] | None = None):
        return metrics.bootstrap_counts(gold, pred, metric, labels or sorted(set(gold)))


TASK = TextClassification()
