"""Text classification's scores, with scikit-learn: accuracy, macro and per-class
precision/recall/F1, binary F1 for two classes, the confusion matrix; and the gate's view of
them (its metric, and per-example counts for the paired bootstrap)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from nerflow.core.files import read_records
from nerflow.core.stats import f1_from_counts

# Heavy libraries (scikit-learn) are imported inside the functions that use them, on purpose:
# the CLI starts without them and a step loads only what it runs.


def scores(gold: Sequence[str], pred: Sequence[str], labels: Sequence[str]) -> dict:
    """scikit-learn's accuracy, macro and per-class precision/recall/F1 and the confusion
    matrix over ``labels`` (in that order; gold labels the model does not know are added).
    ``f1``/``precision``/``recall``: of the positive class (the second label) for two
    classes, the macro average for more."""
    from sklearn.metrics import (
        accuracy_score,
        confusion_matrix,
        precision_recall_fscore_support,
    )

    labels = list(labels) + sorted(set(gold) - set(labels))
    p, r, f, n = precision_recall_fscore_support(gold, pred, labels=labels, average=None, zero_division=0)
    mp, mr, mf, _ = precision_recall_fscore_support(gold, pred, labels=labels, average="macro", zero_division=0)
    out = {
        "accuracy": float(accuracy_score(gold, pred)),
        "macro_precision": float(mp), "macro_recall": float(mr), "macro_f1": float(mf),
        "per_class": {label: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(n[i])}
                      for i, label in enumerate(labels)},
        "confusion": confusion_matrix(gold, pred, labels=labels).tolist(),
        "labels": labels,
        "support": len(gold),
    }
    if len(labels) == 2:
        positive = out["per_class"][labels[1]]
        out.update(f1=positive["f1"], precision=positive["precision"], recall=positive["recall"],
                   f1_average=f"binary (positive class {labels[1]})")
    else:
        out.update(f1=out["macro_f1"], precision=out["macro_precision"], recall=out["macro_recall"], f1_average="macro")
    return out


def dev_metrics(labels: list[str]):
    """The Trainer's compute_metrics: dev macro F1 (``f1``, what keep-best follows) and accuracy."""
    def compute(eval_pred) -> dict[str, float]:

        preds = np.asarray(eval_pred.predictions)
        if preds.ndim == 2:
            preds = preds.argmax(-1)
        gold = np.asarray(eval_pred.label_ids)
        s = scores([labels[i] for i in gold], [labels[i] for i in preds], labels)
        return {"f1": s["macro_f1"], "accuracy": s["accuracy"]}

    return compute


def gate_value(s: dict, metric: str) -> float:
    return s["macro_f1"] if metric == "macro_f1" else s["accuracy"] if metric == "accuracy" else s["f1"]


def gate_score(gold, pred, metric: str, labels: Sequence[str]) -> dict:
    """The gate's view of a model's test predictions: ``value`` of ``gate.metric`` (f1: as
    metrics.json's f1), precision, recall, and per-class F1 with support."""
    s = scores(gold, pred, labels)
    return {"value": gate_value(s, metric), "precision": s["precision"], "recall": s["recall"],
            "per_type": {c: {"f1": v["f1"], "support": v["support"]} for c, v in s["per_class"].items()}}


def bootstrap_counts(gold, pred, metric: str, labels: Sequence[str]):
    """(per-example counts, metric of summed counts) for the paired bootstrap: accuracy from
    (correct, 1); macro F1 from (tp, predicted, gold) of every class; f1 as ``scores`` has it."""
    labels = list(labels) + sorted(set(gold) - set(labels))
    g, p = np.asarray(gold, dtype=object), np.asarray(pred, dtype=object)
    if metric == "accuracy":
        return np.stack([(g == p).astype(np.int64), np.ones(len(g), np.int64)], 1), lambda s: s[:, 0] / np.maximum(s[:, 1], 1)
    classes = labels[1:2] if metric == "f1" and len(labels) == 2 else labels
    cols = []
    for c in classes:
        cols += [((g == c) & (p == c)), (p == c), (g == c)]
    counts = np.stack(cols, 1).astype(np.int64)
    k = len(classes)

    def value(s):
        return np.mean([f1_from_counts(s[:, 3 * i], s[:, 3 * i + 1], s[:, 3 * i + 2]) for i in range(k)], axis=0)

    return counts, value


def read_text_predictions(path):
    """(texts, gold, predicted, labels in the model's order) from predictions.jsonl."""
    rows = read_records(path, ("text", "gold", "pred", "scores"), "text-classification predictions record")
    return ([r["text"] for r in rows], [r["gold"] for r in rows], [r["pred"] for r in rows],
            list(rows[0]["scores"]) if rows else [])
