"""Step `gate`: champion/challenger decision.

The challenger (the model just trained, registered as a candidate) is promoted only when

1. its test F1 is at least ``gate.min_f1``;
2. every entity type's F1 is at least its floor (``gate.type_min_f1[type]``, else
   ``gate.default_type_min_f1``);
and, when a production model (the champion) exists, re-scored on the challenger's test set:
3. no type's F1 falls more than ``gate.max_type_regression`` below the champion's;
4. its F1 beats the champion's by more than ``gate.min_delta``, and a paired bootstrap over
   test sentences (``gate.bootstrap``: samples, seed, confidence) finds it ahead by more than
   ``min_delta`` in at least ``confidence`` of the resamples: the gain is not noise.

No champion: checks 1-2 only. A challenger that scores below the champion is never promoted
(check 4 needs a positive gain, and ``min_delta`` may not be negative). The decision JSON
records every number and the reason for each check.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from nerflow import NerflowError
from nerflow.atomic import read_json, write_json
from nerflow.config import GateParams, section
from nerflow.metrics import score


def _gate_params(params: GateParams | dict[str, Any]) -> dict[str, Any]:
    """The gate's settings, flat, as the decision records them."""
    g = section(GateParams, params)
    return {
        "min_f1": g.min_f1, "type_min_f1": dict(g.type_min_f1), "default_type_min_f1": g.default_type_min_f1,
        "max_type_regression": g.max_type_regression, "min_delta": g.min_delta, "samples": g.bootstrap.samples,
        "seed": g.bootstrap.seed, "confidence": g.bootstrap.confidence, "scheme": g.scheme,
    }


def sentence_counts(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]], scheme: str = "default"):
    """(true positives, predicted entities, gold entities) per sentence, as seqeval counts them:
    summed over sentences they give exactly seqeval's micro P/R/F1."""
    import numpy as np

    if scheme == "strict":
        from seqeval.scheme import IOB2, Entities

        def entities(tags):
            return set(e.to_tuple() for e in Entities([list(tags)], IOB2).entities[0])
    else:
        from nerflow.analysis import entities as spans

        def entities(tags):
            return set(spans(tags))

    out = np.zeros((len(gold), 3), dtype=np.int64)
    for i, (g, p) in enumerate(zip(gold, pred)):
        ge, pe = entities(g), entities(p)
        out[i] = (len(ge & pe), len(pe), len(ge))
    return out


def _f1(tp, n_pred, n_gold):
    import numpy as np

    denom = n_pred + n_gold
    return np.where(denom > 0, 2.0 * tp / np.maximum(denom, 1), 0.0)


def paired_bootstrap(challenger, champion, samples: int, seed: int, min_delta: float, confidence: float) -> dict[str, Any]:
    """Resample test sentences with replacement (the same resample for both models) and
    compare micro F1 each time. ``challenger``/``champion``: per-sentence counts."""
    import numpy as np

    n = len(challenger)
    rng = np.random.default_rng(seed)
    counts = np.concatenate([challenger, champion[:, :2]], axis=1).astype(np.float64)  # tp_a, pred_a, gold, tp_b, pred_b
    deltas = []
    for start in range(0, samples, 250):
        k = min(250, samples - start)
        idx = rng.integers(0, n, size=(k, n))
        weights = np.zeros((k, n))
        np.add.at(weights, (np.repeat(np.arange(k), n), idx.ravel()), 1.0)
        s = weights @ counts
        deltas.append(_f1(s[:, 0], s[:, 1], s[:, 2]) - _f1(s[:, 3], s[:, 4], s[:, 2]))
    d = np.concatenate(deltas)
    alpha = 1 - confidence
    return {
        "samples": samples, "seed": seed, "confidence": confidence,
        "share_ahead": float(np.mean(d > min_delta)),
        "delta_mean": float(d.mean()),
        "delta_interval": [float(np.quantile(d, alpha / 2)), float(np.quantile(d, 1 - alpha / 2))],
    }


def decide(
    params: GateParams | dict[str, Any],
    gold: Sequence[Sequence[str]],
    challenger_pred: Sequence[Sequence[str]],
    champion_pred: Sequence[Sequence[str]] | None = None,
    challenger_tag: str | None = None,
    champion_tag: str | None = None,
) -> dict[str, Any]:
    """The decision, with every number and the reason for each check."""
    p = _gate_params(params)
    challenger = score(gold, challenger_pred, p["scheme"])
    checks: list[dict[str, Any]] = []

    def check(name: str, passed: bool, reason: str, **numbers: Any) -> None:
        checks.append({"check": name, "passed": bool(passed), "reason": reason, **numbers})

    f1 = challenger["f1"]
    check("min_f1", f1 >= p["min_f1"], f"test F1 {f1:.4f} {'>=' if f1 >= p['min_f1'] else '<'} gate.min_f1 {p['min_f1']:.4f}",
          value=f1, threshold=p["min_f1"])
    for etype, v in challenger["per_type"].items():
        floor = p["type_min_f1"].get(etype, p["default_type_min_f1"])
        if floor > 0 and v["support"] > 0:
            ok = v["f1"] >= floor
            check(f"type_min_f1:{etype}", ok, f"{etype} F1 {v['f1']:.4f} {'>=' if ok else '<'} floor {floor:.4f}",
                  value=v["f1"], threshold=floor)

    decision: dict[str, Any] = {
        "challenger": {"tag": challenger_tag, "f1": f1, "precision": challenger["precision"], "recall": challenger["recall"],
                       "per_type": {t: v["f1"] for t, v in challenger["per_type"].items()}},
        "champion": None, "scheme": p["scheme"], "sentences": len(gold), "params": p,
    }
    if champion_pred is not None:
        champion = score(gold, champion_pred, p["scheme"])
        decision["champion"] = {"tag": champion_tag, "f1": champion["f1"], "precision": champion["precision"],
                                "recall": champion["recall"], "per_type": {t: v["f1"] for t, v in champion["per_type"].items()}}
        for etype, v in champion["per_type"].items():
            if v["support"] == 0:
                continue
            mine = challenger["per_type"].get(etype, {"f1": 0.0})["f1"]
            drop = v["f1"] - mine
            ok = drop <= p["max_type_regression"] + 1e-12
            check(f"type_regression:{etype}", ok,
                  f"{etype} F1 {mine:.4f} vs champion {v['f1']:.4f} (drop {max(drop, 0):.4f} "
                  f"{'<=' if ok else '>'} gate.max_type_regression {p['max_type_regression']:.4f})",
                  value=mine, champion=v["f1"], threshold=p["max_type_regression"])
        delta = f1 - champion["f1"]
        ok = delta > p["min_delta"]
        check("beats_champion", ok, f"F1 {f1:.4f} vs champion {champion['f1']:.4f}: gain {delta:+.4f} "
              f"{'>' if ok else '<='} gate.min_delta {p['min_delta']:.4f}", value=delta, threshold=p["min_delta"])
        boot = paired_bootstrap(sentence_counts(gold, challenger_pred, p["scheme"]), sentence_counts(gold, champion_pred, p["scheme"]),
                                p["samples"], p["seed"], p["min_delta"], p["confidence"])
        decision["bootstrap"] = boot
        ok = boot["share_ahead"] >= p["confidence"]
        lo, hi = boot["delta_interval"]
        check("bootstrap", ok, f"ahead by more than {p['min_delta']:.4f} in {boot['share_ahead']:.1%} of {p['samples']} paired "
              f"resamples ({'>=' if ok else '<'} {p['confidence']:.0%}); gain interval [{lo:+.4f}, {hi:+.4f}]",
              value=boot["share_ahead"], threshold=p["confidence"])

    promote = all(c["passed"] for c in checks)
    failed = [c["reason"] for c in checks if not c["passed"]]
    decision.update(
        promote=promote,
        reasons=failed if failed else [c["reason"] for c in checks if c["check"] in ("min_f1", "beats_champion", "bootstrap")]
        + ([] if champion_pred is not None else ["no production model yet: thresholds only"]),
        checks=checks,
        metrics={"f1": f1, "precision": challenger["precision"], "recall": challenger["recall"]},
    )
    return decision


def read_predictions(path: str | Path) -> tuple[list[list[str]], list[list[str]], list[list[str]]]:
    """tokens, gold and predicted tags from the evaluate step's predictions.jsonl."""
    import json

    tokens, gold, pred = [], [], []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            try:
                row = json.loads(line)
                tokens.append(row["tokens"])
                gold.append(row["gold"])
                pred.append(row["pred"])
            except (json.JSONDecodeError, KeyError) as exc:
                raise NerflowError(f"{path}:{n}: not a predictions record ({exc})") from None
    return tokens, gold, pred


def gate(
    params: GateParams | dict[str, Any],
    predictions_path: str | Path,
    registered_path: str | Path,
    decision_out: str | Path,
    registry=None,
) -> dict[str, Any]:
    """Decide on the registered challenger; the champion is the registry's production model,
    re-scored here on the challenger's test sentences."""
    tokens, gold, pred = read_predictions(predictions_path)
    challenger_tag = read_json(registered_path)["model_tag"]
    champion_tag = registry.production() if registry is not None else None
    if champion_tag == challenger_tag:
        decision = decide(params, gold, pred, None, challenger_tag)
        decision.update(promote=False, reasons=[f"{challenger_tag} is already the production model"])
    else:
        champion_pred = None
        if champion_tag is not None:
            from nerflow.predict import WordTagger

            champion_pred, _ = WordTagger(registry.model_dir(champion_tag)).predict(tokens)
        decision = decide(params, gold, pred, champion_pred, challenger_tag, champion_tag)
    write_json(decision_out, decision)
    return decision
