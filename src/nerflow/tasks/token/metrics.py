"""Entity-level scores with seqeval (conlleval-compatible default mode, or strict IOB2): the
test scores, the dev F1 the trainer keeps the best epoch by, and the per-sentence counts the
gate's bootstrap resamples.

seqeval and scikit-learn are imported inside the functions that use them (CLI start-up)."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from nerflow.tasks.token.analysis import entities as spans


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


def word_level(preds, gold, starts: list[list[int]], labels: list[str]) -> tuple[list[list[str]], list[list[str]]]:
    """Gold and predicted tags at the first sub-token of each word only, whatever the
    alignment mode (all-sub-token labels would otherwise count an entity per sub-token)."""
    g_seqs, p_seqs = [], []
    for p_row, g_row, s_row in zip(preds, gold, starts):
        keep = np.zeros(len(g_row), dtype=bool)
        keep[: len(s_row)] = np.asarray(s_row, dtype=bool)[: len(g_row)]
        keep &= np.asarray(g_row) != -100
        g_seqs.append([labels[i] for i in np.asarray(g_row)[keep]])
        p_seqs.append([labels[i] for i in np.asarray(p_row)[keep]])
    return g_seqs, p_seqs


def dev_metrics(labels: list[str], starts: list[list[int]]):
    """The Trainer's compute_metrics: dev entity F1 (what keep-best follows), precision and recall,
    at the first sub-token of each word."""
    def compute(eval_pred) -> dict[str, float]:
        preds, gold = eval_pred.predictions, eval_pred.label_ids
        if preds.ndim == 3:
            preds = preds.argmax(-1)
        g_seqs, p_seqs = word_level(preds, gold, starts, labels)
        s = score(g_seqs, p_seqs)
        return {"f1": s["f1"], "precision": s["precision"], "recall": s["recall"]}

    return compute


def sentence_counts(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]], scheme: str = "default"):
    """(true positives, predicted entities, gold entities) per sentence, as seqeval counts them:
    summed over sentences they give exactly seqeval's micro P/R/F1."""
    if scheme == "strict":
        from seqeval.scheme import IOB2, Entities

        def entities(tags):
            return set(e.to_tuple() for e in Entities([list(tags)], IOB2).entities[0])
    else:
        def entities(tags):
            return set(spans(tags))

    out = np.zeros((len(gold), 3), dtype=np.int64)
    for i, (g, p) in enumerate(zip(gold, pred)):
        ge, pe = entities(g), entities(p)
        out[i] = (len(ge & pe), len(pe), len(ge))
    return out
