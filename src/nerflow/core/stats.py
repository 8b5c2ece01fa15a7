"""Scores from counts, and the paired bootstrap the gate decides with: task-agnostic numbers."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np


def f1_from_counts(tp, n_pred, n_gold):
    """F1 from (true positives, predicted, gold) counts, elementwise over numpy arrays (0 where
    nothing was predicted or expected): what the gate's bootstrap computes per resample."""
    denom = n_pred + n_gold
    return np.where(denom > 0, 2.0 * tp / np.maximum(denom, 1), 0.0)


def paired_bootstrap(challenger, champion, samples: int, seed: int, min_delta: float, confidence: float,
                     value: Callable | None = None) -> dict[str, Any]:
    """Resample test examples with replacement (the same resample for both models) and compare
    the metric each time. ``challenger``/``champion``: per-example count matrices; ``value``:
    the metric of summed counts [resamples x columns] (default: micro F1 of (tp, predicted,
    gold) per sentence, as ``sentence_counts`` gives them)."""
    value = value or (lambda s: f1_from_counts(s[:, 0], s[:, 1], s[:, 2]))
    n = len(challenger)
    rng = np.random.default_rng(seed)
    a, b = np.asarray(challenger, np.float64), np.asarray(champion, np.float64)
    deltas = []
    for start in range(0, samples, 250):
        k = min(250, samples - start)
        idx = rng.integers(0, n, size=(k, n))
        weights = np.zeros((k, n))
        np.add.at(weights, (np.repeat(np.arange(k), n), idx.ravel()), 1.0)
        deltas.append(value(weights @ a) - value(weights @ b))
    d = np.concatenate(deltas)
    alpha = 1 - confidence
    return {
        "samples": samples, "seed": seed, "confidence": confidence,
        "share_ahead": float(np.mean(d > min_delta)),
        "delta_mean": float(d.mean()),
        "delta_interval": [float(np.quantile(d, alpha / 2)), float(np.quantile(d, 1 - alpha / 2))],
    }


def by_group(groups: Sequence[str], gold: Sequence, pred: Sequence, summarise: Callable[[list, list], Any]) -> dict[str, Any]:
    """{group: summarise(gold, pred) of the group's examples}, groups in name order ("(unnamed)"
    for an empty name): scores per source (corpus, language) or per any other grouping."""
    out = {}
    for name in sorted(set(groups)):
        idx = [i for i, g in enumerate(groups) if g == name]
        out[name or "(unnamed)"] = summarise([gold[i] for i in idx], [pred[i] for i in idx])
    return out
