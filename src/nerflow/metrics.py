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
