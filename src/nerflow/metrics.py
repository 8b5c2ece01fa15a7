"""Entity-level scores with seqeval (conlleval-compatible default mode, or strict IOB2)."""

from __future__ import annotations

from typing import Any, Sequence


def score(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]], scheme: str = "default") -> dict[str, Any]:
    """Overall micro/macro P/R/F1, token accuracy and per-type P/R/F1 with support."""
    from seqeval.metrics import accuracy_score, classification_report

    if len(gold) != len(pred) or any(len(g) != len(p) for g, p in zip(gold, pred)):
        raise ValueError("gold and predicted tag sequences differ in shape")
    kwargs: dict[str, Any] = {"output_dict": True, "zero_division": 0}
    if scheme == "strict":
        from seqeval.scheme import IOB2

        kwargs.update(mode="strict", scheme=IOB2)
    elif scheme != "default":
        raise ValueError(f"scheme must be default or strict, not {scheme!r}")
    report = classification_report(list(map(list, gold)), list(map(list, pred)), **kwargs)
    micro, macro = report.pop("micro avg"), report.pop("macro avg")
    report.pop("weighted avg", None)
    return {
        "scheme": scheme,
        "precision": float(micro["precision"]),
        "recall": float(micro["recall"]),
        "f1": float(micro["f1-score"]),
        "macro_f1": float(macro["f1-score"]),
        "accuracy": float(accuracy_score(list(map(list, gold)), list(map(list, pred)))),
        "support": int(micro["support"]),
        "per_type": {
            etype: {"precision": float(r["precision"]), "recall": float(r["recall"]), "f1": float(r["f1-score"]), "support": int(r["support"])}
            for etype, r in sorted(report.items())
        },
    }


def f1_from_counts(tp, n_pred, n_gold):
    """F1 from (true positives, predicted, gold) counts, elementwise over numpy arrays (0 where
    nothing was predicted or expected): what the gate's bootstrap computes per resample."""
    import numpy as np

    denom = n_pred + n_gold
    return np.where(denom > 0, 2.0 * tp / np.maximum(denom, 1), 0.0)


def character_f1(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> float:
    """KLUE-NER's character-level macro F1: per-character labels, macro average over the
    labels other than O (as the KLUE baseline computes it)."""
    from sklearn.metrics import f1_score

    g = [t for row in gold for t in row]
    p = [t for row in pred for t in row]
    labels = sorted(set(g) - {"O"})
    return float(f1_score(g, p, labels=labels, average="macro", zero_division=0)) if labels else 0.0


def all_scores(gold, pred, level: str = "word") -> dict[str, Any]:
    """Both seqeval modes, and for character-level corpora KLUE's two numbers."""
    out = {"default": score(gold, pred, "default"), "strict": score(gold, pred, "strict")}
    if level == "char":
        out["klue"] = {"entity_macro_f1": out["strict"]["macro_f1"], "character_macro_f1": character_f1(gold, pred)}
    return out
