"""Text classification's evaluation (the evaluate step, nerflow.steps.evaluate): the model's test scores, its
predictions with every class's probability, and the error analysis."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from nerflow.core.config import EvaluateParams, ReaderOptions, Source, section
from nerflow.core.dataset import load_dataset_dir, read_manifest
from nerflow.core.files import atomic_dir, atomic_file, write_json
from nerflow.core.reports import render, write_confusion
from nerflow.core.stats import by_group
from nerflow.tasks.base import TEXT
from nerflow.tasks.text.classify import TextClassifier
from nerflow.tasks.text.metrics import scores
from nerflow.tasks.text.readers import read_text_source

TEMPLATES = Path(__file__).parent / "templates"  # errors.html.j2


def evaluate_texts(params: EvaluateParams | dict[str, Any], model_dir: str | Path, dataset_dir: str | Path,
                   metrics_out: str | Path, predictions_out: str | Path, report_dir: str | Path | None = None,
                   split: str = "test") -> dict[str, Any]:
    """Evaluate for text classification: metrics.json (accuracy, macro and per-class P/R/F1,
    binary F1 for two classes, confusion matrix, per source), predictions.jsonl (text, gold,
    predicted, every class's probability) and the report: confusion.csv (DVC plot),
    confusion.png, errors.json and errors.html with the highest-loss texts."""
    params = section(EvaluateParams, params)
    dataset, manifest = load_dataset_dir(dataset_dir), read_manifest(dataset_dir)
    rows = dataset[split]
    texts, gold = list(rows["text"]), list(rows["label"])
    clf = TextClassifier(model_dir, precision=params.precision, batch_size=params.batch_size)
    started = time.perf_counter()
    probs, cut = clf.run(texts)  # the texts cut to max_length come with the probabilities: no second tokenization
    seconds = time.perf_counter() - started
    labels = clf.labels
    pred = [labels[i] for i in probs.argmax(1)]
    s = scores(gold, pred, labels)
    metrics = {k: v for k, v in s.items() if k not in ("confusion",)}
    metrics.update(task=TEXT, split=split, texts=len(texts), content_hash=manifest["content_hash"],
                   truncated_texts=int(sum(cut)), predict_seconds=round(seconds, 2),
                   texts_per_second=round(len(texts) / max(seconds, 1e-9), 1),
                   test_sets={split: _summary(s, len(texts)), **_other_test_sets(params, clf)})
    if split != "train" and "train" in dataset:  # the same text in train: scored apart (NSMC's test shares reviews with train)
        seen_texts = set(dataset["train"]["text"])
        seen = ["in_train" if t in seen_texts else "not_in_train" for t in texts]
        if "in_train" in seen:
            metrics["by_train_overlap"] = by_group(seen, gold, pred, lambda g, p: _summary(scores(g, p, labels), len(g)))
    groups = list(rows["source"])
    if any(groups):
        metrics["per_source"] = by_group(groups, gold, pred, lambda g, p: _summary(scores(g, p, labels), len(g)))
    _write_predictions(predictions_out, texts, gold, pred, probs, labels)
    if report_dir is not None:
        top = _highest_loss(rows, texts, gold, pred, probs, labels, params.top_loss_sentences)
        with atomic_dir(report_dir) as tmp:
            write_confusion(tmp, zip(gold, pred), s["confusion"], s["labels"])
            write_json(tmp / "errors.json", {"labels": s["labels"], "confusion": s["confusion"], "highest_loss_texts": top})
            (tmp / "errors.html").write_text(errors_html(metrics, s, top, manifest.get("sources", {}).get(split, "")),
                                             encoding="utf-8")
    write_json(metrics_out, metrics)
    return metrics


def _summary(s: dict[str, Any], n: int) -> dict[str, Any]:
    """A test set's (or a group's) line in metrics.json."""
    return {"texts": n, "accuracy": s["accuracy"], "macro_f1": s["macro_f1"], "f1": s["f1"]}


def _other_test_sets(params: EvaluateParams, clf: TextClassifier) -> dict[str, Any]:
    """The scores on ``evaluate.test_sets``, each read as the data section reads a source."""
    out = {}
    for spec in params.test_sets:
        src = Source.model_validate({**{k: getattr(spec, k) for k in ReaderOptions.model_fields}, "path": spec.path})
        table = next(iter(read_text_source(src, spec, "test")[0].values()))
        texts, gold = table["text"].to_pylist(), table["label"].to_pylist()
        pred = [clf.labels[i] for i in clf.probabilities(texts).argmax(1)]
        out[spec.name] = _summary(scores(gold, pred, clf.labels), len(texts))
    return out


def _write_predictions(path: str | Path, texts: list, gold: list, pred: list, probs: np.ndarray, labels: list[str]) -> None:
    """predictions.jsonl: text, gold, predicted and every class's probability, a line per text."""
    with atomic_file(path) as fh:
        for k, (t, g, p) in enumerate(zip(texts, gold, pred)):
            fh.write(json.dumps({"text": t, "gold": g, "pred": p,
                                 "scores": {label: round(float(probs[k, j]), 5) for j, label in enumerate(labels)}},
                                ensure_ascii=False) + "\n")


def _highest_loss(rows, texts: list, gold: list, pred: list, probs: np.ndarray, labels: list[str], top_n: int) -> list[dict]:
    """The ``top_n`` texts with the highest loss (-log p(gold)), with where they are."""
    index = {label: i for i, label in enumerate(labels)}
    p_gold = np.array([probs[k, index[g]] if g in index else 0.0 for k, g in enumerate(gold)])
    losses = -np.log(np.clip(p_gold, 1e-12, 1.0))
    order = np.argsort(-losses, kind="stable")[:top_n]
    return [{"index": int(i), "loss": round(float(losses[i]), 4), "text": texts[i], "gold": gold[i], "pred": pred[i],
             "p_gold": round(float(p_gold[i]), 4), "line": int(rows[int(i)]["source_line"])} for i in order]


def errors_html(metrics: dict, s: dict, top: list[dict], source: str) -> str:
    """The error analysis page: scores per class, the confusion matrix, the highest-loss texts
    (templates/errors.html.j2)."""
    return render("errors.html.j2", TEMPLATES, metrics=metrics, s=s, top=top, source=source,
                  matrix=list(zip(s["labels"], s["confusion"])))
