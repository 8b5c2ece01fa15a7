"""Token classification's ``Task``: the steps' calls, answered by this package's modules."""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple, Sequence

from nerflow import NerflowError
from nerflow.core.config import (
    Checks,
    DataParams,
    EvaluateParams,
    PreprocessParams,
    ValidateParams,
)
from nerflow.core.stats import f1_from_counts
from nerflow.tasks.base import TOKEN, Encoded, Predictions, ValidationTables
from nerflow.tasks.token import data, encode, evaluate, metrics, validate
from nerflow.tasks.token.predict import WordTagger

# Heavy libraries (transformers) are imported inside the functions that use them, on purpose:
# the CLI starts without them and a step loads only what it runs.


class SentenceInputs(NamedTuple):
    """What the gate re-scores a token-classification champion on: the test sentences and, where
    the corpus has them, each one's (source, document)."""

    tokens: list[list[str]]
    documents: list[tuple] | None


class TokenClassification:
    name, auto_model, unit = TOKEN, "AutoModelForTokenClassification", "sentence"

    def prepare_data(self, params: DataParams, out_dir: str | Path, origin: dict[str, Any] | None = None,
                     source_names: dict[str, str] | None = None) -> dict[str, Any]:
        return data.prepare_token_data(params, out_dir, origin, source_names)

    def validation_tables(self, dataset: Any, manifest: dict[str, Any], params: ValidateParams) -> ValidationTables:
        return validate.token_tables(dataset, manifest, params)

    def expectations(self, checks: Checks, facts: dict[str, Any]) -> dict[str, list]:
        return validate.expectations(checks, facts.get("level", "word"))

    def report_html(self, summary: dict[str, Any]) -> str:
        return validate.token_report_html(summary)

    def encode(self, params: PreprocessParams, dataset: Any, manifest: dict[str, Any], tokenizer: Any) -> Encoded:
        return encode.encode_tokens(params, dataset, manifest, tokenizer)

    def collator(self, tokenizer: Any):
        from transformers import (
            DataCollatorForTokenClassification,  # deferred: heavy (CLI start-up)
        )

        return DataCollatorForTokenClassification(tokenizer, pad_to_multiple_of=8)

    def dev_metrics(self, info: dict[str, Any], features: Any):
        return metrics.dev_metrics(info["labels"], features["validation"]["word_start"])

    def evaluate(self, params: EvaluateParams, model_dir: str | Path, dataset_dir: str | Path, metrics_out: str | Path,
                 predictions_out: str | Path, report_dir: str | Path | None = None, split: str = "test") -> dict[str, Any]:
        return evaluate.evaluate(params, model_dir, dataset_dir, metrics_out, predictions_out, report_dir, split)

    def predictor(self, model_dir: str | Path, **kwargs: Any) -> WordTagger:
        return WordTagger(model_dir, **kwargs)

    def read_predictions(self, path: str | Path) -> Predictions:
        tokens, gold, pred, documents = evaluate.read_predictions(path)
        return SentenceInputs(tokens, documents), gold, pred, None

    def predict_labels(self, model_dir: str | Path, inputs: SentenceInputs) -> list:
        # with the documents the evaluate step read them in: a champion trained with document
        # context is scored on the same windows as the challenger, not a sentence at a time
        return self.predictor(model_dir).predict(inputs.tokens, documents=inputs.documents)[0]

    def gate_score(self, gold: Sequence, pred: Sequence, metric: str, scheme: str,
                   labels: Sequence[str] | None = None) -> dict[str, Any]:
        if metric != "f1":
            raise NerflowError(f"gate.metric {metric}: token classification gates on entity F1 (gate.metric: f1)")
        s = metrics.score(gold, pred, scheme)
        return {"value": s["f1"], "precision": s["precision"], "recall": s["recall"],
                "per_type": {t: {"f1": v["f1"], "support": v["support"]} for t, v in s["per_type"].items()}}

    def bootstrap_counts(self, gold: Sequence, pred: Sequence, metric: str, scheme: str,
                         labels: Sequence[str] | None = None):
        return metrics.sentence_counts(gold, pred, scheme), lambda s: f1_from_counts(s[:, 0], s[:, 1], s[:, 2])


TASK = TokenClassification()
