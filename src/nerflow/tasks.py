"""The tasks nerflow runs, and the one small interface through which the steps reach what
differs between them: reading, validation tables, encoding, model class, metrics, prediction
and output. A step stays one module: it asks the dataset (its manifest) or the model (its
``nerflow.json``) which task it holds, takes the ``Task`` for it, and calls these methods.

- ``token-classification``: a tag per token (NER); the modules data, validate, align,
  preprocess, evaluate, metrics, predict, analysis.
- ``text-classification``: a label per text (sentiment, topic); nerflow.text (reading,
  encoding), validate_text, text_metrics, text_evaluate and classify (prediction).

``data.task`` in params chooses; the data step writes it into the manifest and every step
after it follows the manifest (or the trained model), so one params key switches the whole
workflow, DVC stages and KFP components included.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, NamedTuple

from nerflow import NerflowError

TOKEN, TEXT = "token-classification", "text-classification"


class Task:
    """What a task supplies to the steps."""

    name: str
    auto_model: str  # the transformers Auto class of its models
    unit: str  # what one example is, in messages: sentence | text

    # data ---------------------------------------------------------------------------------
    def prepare_data(self, params, out_dir, origin=None, source_names=None) -> dict[str, Any]:
        """Read the corpus the `data` params name into the canonical dataset; the manifest."""
        raise NotImplementedError

    # validate -----------------------------------------------------------------------------
    def validation_tables(self, dataset, manifest: dict[str, Any], params) -> tuple[dict, dict, Callable]:
        """(GX tables {name: DataFrame}, facts for the report, locate(table, row, check) -> dict)."""
        raise NotImplementedError

    def expectations(self, checks, facts: dict[str, Any]) -> dict[str, list]:
        """{table: [GX expectation]} for the task's checks not switched off."""
        raise NotImplementedError

    def report_html(self, summary: dict[str, Any]) -> str:
        """The task's sections of the validation report (splits, label or type counts, drift)."""
        raise NotImplementedError

    # preprocess / train -------------------------------------------------------------------
    def encode(self, params, dataset, manifest: dict[str, Any], tokenizer) -> tuple[dict[str, dict], dict[str, Any], dict]:
        """({split: feature columns}, {split: stats}, extra info for preprocess.json)."""
        raise NotImplementedError

    def collator(self, tokenizer):
        raise NotImplementedError

    def dev_metrics(self, info: dict[str, Any], features) -> Callable:
        """The Trainer's compute_metrics: at least ``f1`` (the dev score keep-best follows)."""
        raise NotImplementedError

    def model_class(self):
        import transformers

        return getattr(transformers, self.auto_model)

    # evaluate / gate / serve --------------------------------------------------------------
    def evaluate(self, params, model_dir, dataset_dir, metrics_out, predictions_out, report_dir=None,
                 split: str = "test") -> dict[str, Any]:
        raise NotImplementedError

    def predictor(self, model_dir, **kwargs):
        """The model loaded for prediction (WordTagger / TextClassifier)."""
        raise NotImplementedError

    def read_predictions(self, path) -> tuple[list, list, list, list | None]:
        """(inputs, gold, predicted, the label set where the metric needs it) from the evaluate
        step's predictions.jsonl."""
        raise NotImplementedError

    def predict_labels(self, model_dir, inputs: list) -> list:
        """What a model (the champion) predicts for the inputs of predictions.jsonl."""
        raise NotImplementedError

    def gate_score(self, gold, pred, metric: str, scheme: str, labels=None) -> dict[str, Any]:
        """{"value": the gate metric, "precision", "recall", "per_type": {name: {"f1", "support"}}}."""
        raise NotImplementedError

    def bootstrap_counts(self, gold, pred, metric: str, scheme: str, labels=None):
        """(per-example count matrix, function of summed counts [resamples x columns] -> metric):
        summed over all examples they give exactly gate_score's value."""
        raise NotImplementedError


class SentenceInputs(NamedTuple):
    """What the gate re-scores a token-classification champion on: the test sentences and, where
    the corpus has them, each one's (source, document)."""

    tokens: list[list[str]]
    documents: list[tuple] | None


class TokenClassification(Task):
    name, auto_model, unit = TOKEN, "AutoModelForTokenClassification", "sentence"

    def prepare_data(self, params, out_dir, origin=None, source_names=None):
        from nerflow.data import prepare_token_data

        return prepare_token_data(params, out_dir, origin, source_names)

    def validation_tables(self, dataset, manifest, params):
        from nerflow.validate import token_tables

        return token_tables(dataset, manifest, params)

    def expectations(self, checks, facts):
        from nerflow.validate import expectations

        return expectations(checks, facts.get("level", "word"))

    def report_html(self, summary):
        from nerflow.validate import token_report_html

        return token_report_html(summary)

    def encode(self, params, dataset, manifest, tokenizer):
        from nerflow.preprocess import encode_tokens

        return encode_tokens(params, dataset, manifest, tokenizer)

    def collator(self, tokenizer):
        from transformers import DataCollatorForTokenClassification

        return DataCollatorForTokenClassification(tokenizer, pad_to_multiple_of=8)

    def dev_metrics(self, info, features):
        from nerflow.train import _dev_f1

        return _dev_f1(info["labels"], features["validation"]["word_start"])

    def evaluate(self, params, model_dir, dataset_dir, metrics_out, predictions_out, report_dir=None, split="test"):
        from nerflow.evaluate import evaluate_tokens

        return evaluate_tokens(params, model_dir, dataset_dir, metrics_out, predictions_out, report_dir, split)

    def predictor(self, model_dir, **kwargs):
        from nerflow.predict import WordTagger

        return WordTagger(model_dir, **kwargs)

    def read_predictions(self, path):
        from nerflow.gate import read_predictions

        tokens, gold, pred, documents = read_predictions(path)
        return SentenceInputs(tokens, documents), gold, pred, None

    def predict_labels(self, model_dir, inputs):
        # with the documents the evaluate step read them in: a champion trained with document
        # context is scored on the same windows as the challenger, not a sentence at a time
        return self.predictor(model_dir).predict(inputs.tokens, documents=inputs.documents)[0]

    def gate_score(self, gold, pred, metric, scheme, labels=None):
        from nerflow.metrics import score

        if metric != "f1":
            raise NerflowError(f"gate.metric {metric}: token classification gates on entity F1 (gate.metric: f1)")
        s = score(gold, pred, scheme)
        return {"value": s["f1"], "precision": s["precision"], "recall": s["recall"],
                "per_type": {t: {"f1": v["f1"], "support": v["support"]} for t, v in s["per_type"].items()}}

    def bootstrap_counts(self, gold, pred, metric, scheme, labels=None):
        from nerflow.gate import sentence_counts
        from nerflow.metrics import f1_from_counts

        return sentence_counts(gold, pred, scheme), lambda s: f1_from_counts(s[:, 0], s[:, 1], s[:, 2])


class TextClassification(Task):
    name, auto_model, unit = TEXT, "AutoModelForSequenceClassification", "text"

    def prepare_data(self, params, out_dir, origin=None, source_names=None):
        from nerflow.text import prepare_text_data

        return prepare_text_data(params, out_dir, origin, source_names)

    def validation_tables(self, dataset, manifest, params):
        from nerflow.validate_text import build_tables

        return build_tables(dataset, manifest, params)

    def expectations(self, checks, facts):
        from nerflow.validate_text import expectations

        return expectations(checks, facts)

    def report_html(self, summary):
        from nerflow.validate_text import report_html

        return report_html(summary)

    def encode(self, params, dataset, manifest, tokenizer):
        from nerflow.text import encode_dataset

        return encode_dataset(params, dataset, manifest, tokenizer)

    def collator(self, tokenizer):
        from transformers import DataCollatorWithPadding

        return DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8)

    def dev_metrics(self, info, features):
        from nerflow.text_metrics import dev_metrics

        return dev_metrics(info["labels"])

    def evaluate(self, params, model_dir, dataset_dir, metrics_out, predictions_out, report_dir=None, split="test"):
        from nerflow.text_evaluate import evaluate_texts

        return evaluate_texts(params, model_dir, dataset_dir, metrics_out, predictions_out, report_dir, split)

    def predictor(self, model_dir, **kwargs):
        from nerflow.classify import TextClassifier

        return TextClassifier(model_dir, **kwargs)

    def read_predictions(self, path):
        from nerflow.text_metrics import read_text_predictions

        return read_text_predictions(path)

    def predict_labels(self, model_dir, inputs):
        return [p["label"] for p in self.predictor(model_dir).predict(inputs)]

    def gate_score(self, gold, pred, metric, scheme, labels=None):
        from nerflow.text_metrics import gate_score

        return gate_score(gold, pred, metric, labels or sorted(set(gold)))

    def bootstrap_counts(self, gold, pred, metric, scheme, labels=None):
        from nerflow.text_metrics import bootstrap_counts

        return bootstrap_counts(gold, pred, metric, labels or sorted(set(gold)))


TASKS: dict[str, Task] = {TOKEN: TokenClassification(), TEXT: TextClassification()}


def task_named(name: str | None) -> Task:
    try:
        return TASKS[name or TOKEN]
    except KeyError:
        raise NerflowError(f"unknown task {name!r}: expected one of {', '.join(TASKS)}") from None


def task_of(record: dict[str, Any] | str | Path | None) -> Task:
    """The task of a dataset manifest, preprocess.json or model nerflow.json (a dict), or of the
    dataset / features / model folder holding one; a record from before tasks existed is NER."""
    if isinstance(record, (str, Path)):
        from nerflow.atomic import read_json

        folder = Path(record)
        for name in ("manifest.json", "preprocess.json", "nerflow.json"):
            if (folder / name).exists():
                record = read_json(folder / name)
                break
        else:
            record = {}
    return task_named((record or {}).get("task"))
