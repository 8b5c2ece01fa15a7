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
from nerflow.core.config import GateParams, section
from nerflow.core.files import read_json, write_json
from nerflow.core.stats import paired_bootstrap
from nerflow.tasks.base import Task
from nerflow.tasks.registry import task_named, task_of


def _gate_params(params: GateParams | dict[str, Any]) -> dict[str, Any]:
    """The gate's settings, flat, as the decision records them."""
    g = section(GateParams, params)
    return {
        "min_f1": g.min_f1, "type_min_f1": dict(g.type_min_f1), "default_type_min_f1": g.default_type_min_f1,
        "max_type_regression": g.max_type_regression, "min_delta": g.min_delta, "samples": g.bootstrap.samples,
        "seed": g.bootstrap.seed, "confidence": g.bootstrap.confidence, "scheme": g.scheme, "metric": g.metric,
    }


METRIC_NAMES = {"f1": "F1", "macro_f1": "macro F1", "accuracy": "accuracy"}


def decide(
    params: GateParams | dict[str, Any],
    gold: Sequence,
    challenger_pred: Sequence,
    champion_pred: Sequence | None = None,
    challenger_tag: str | None = None,
    champion_tag: str | None = None,
    task: Task | None = None,
    labels: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The decision, with every number and the reason for each check. ``task`` (nerflow.tasks;
    default token classification) scores the predictions: tag sequences per sentence, or a
    label per text (``labels``: the model's label set, in its order)."""
    task = task or task_named(None)
    p = _gate_params(params)
    challenger = task.gate_score(gold, challenger_pred, p["metric"], p["scheme"], labels)
    checks = _threshold_checks(p, challenger)
    decision: dict[str, Any] = {
        "challenger": _scored(challenger_tag, challenger), "champion": None, "task": task.name, "metric": p["metric"],
        "scheme": p["scheme"], "sentences": len(gold), "params": p,
    }
    if champion_pred is not None:
        champion = task.gate_score(gold, champion_pred, p["metric"], p["scheme"], labels)
        decision["champion"] = _scored(champion_tag, champion)
        checks += _regression_checks(p, challenger, champion)
        mine_counts, value = task.bootstrap_counts(gold, challenger_pred, p["metric"], p["scheme"], labels)
        theirs_counts, _ = task.bootstrap_counts(gold, champion_pred, p["metric"], p["scheme"], labels)
        boot = paired_bootstrap(mine_counts, theirs_counts, p["samples"], p["seed"], p["min_delta"], p["confidence"], value)
        decision["bootstrap"] = boot
        checks.append(_bootstrap_check(p, boot))
    failed = [c["reason"] for c in checks if not c["passed"]]
    decision.update(
        promote=all(c["passed"] for c in checks),
        reasons=failed if failed else [c["reason"] for c in checks if c["check"] in ("min_f1", "beats_champion", "bootstrap")]
        + ([] if champion_pred is not None else ["no production model yet: thresholds only"]),
        checks=checks,
        metrics={"f1": challenger["value"], "precision": challenger["precision"], "recall": challenger["recall"]},
    )
    return decision


def _check(name: str, passed: bool, reason: str, **numbers: Any) -> dict[str, Any]:
    return {"check": name, "passed": bool(passed), "reason": reason, **numbers}


def _scored(tag: str | None, s: dict[str, Any]) -> dict[str, Any]:
    """A model's line in the decision: its tag and scores."""
    return {"tag": tag, "f1": s["value"], "precision": s["precision"], "recall": s["recall"],
            "per_type": {t: v["f1"] for t, v in s["per_type"].items()}}


def _threshold_checks(p: dict[str, Any], challenger: dict[str, Any]) -> list[dict[str, Any]]:
    """Checks 1-2: the challenger's overall score and each type's (class's) against its floor."""
    f1, what = challenger["value"], METRIC_NAMES[p["metric"]]
    passed = f1 >= p["min_f1"]
    hint = "" if passed else " (the bar for this corpus: set gate.min_f1 in the params file; docs/evaluation.md)"
    checks = [_check("min_f1", passed,
                     f"test {what} {f1:.4f} {'>=' if passed else '<'} gate.min_f1 {p['min_f1']:.4f}{hint}",
                     value=f1, threshold=p["min_f1"])]
    for etype, v in challenger["per_type"].items():
        floor = p["type_min_f1"].get(etype, p["default_type_min_f1"])
        if floor > 0 and v["support"] > 0:
            ok = v["f1"] >= floor
            checks.append(_check(f"type_min_f1:{etype}", ok, f"{etype} F1 {v['f1']:.4f} {'>=' if ok else '<'} floor {floor:.4f}",
                                 value=v["f1"], threshold=floor))
    return checks


def _regression_checks(p: dict[str, Any], challenger: dict[str, Any], champion: dict[str, Any]) -> list[dict[str, Any]]:
    """Checks 3-4 against the champion: no type falls too far, and the score gains more than min_delta."""
    checks = []
    for etype, v in champion["per_type"].items():
        if v["support"] == 0:
            continue
        mine = challenger["per_type"].get(etype, {"f1": 0.0})["f1"]
        drop = v["f1"] - mine
        ok = drop <= p["max_type_regression"] + 1e-12
        checks.append(_check(f"type_regression:{etype}", ok,
                             f"{etype} F1 {mine:.4f} vs champion {v['f1']:.4f} (drop {max(drop, 0):.4f} "
                             f"{'<=' if ok else '>'} gate.max_type_regression {p['max_type_regression']:.4f})",
                             value=mine, champion=v["f1"], threshold=p["max_type_regression"]))
    f1, what = challenger["value"], METRIC_NAMES[p["metric"]]
    delta = f1 - champion["value"]
    ok = delta > p["min_delta"]
    checks.append(_check("beats_champion", ok, f"{what} {f1:.4f} vs champion {champion['value']:.4f}: gain {delta:+.4f} "
                         f"{'>' if ok else '<='} gate.min_delta {p['min_delta']:.4f}", value=delta, threshold=p["min_delta"]))
    return checks


def _bootstrap_check(p: dict[str, Any], boot: dict[str, Any]) -> dict[str, Any]:
    """Check 4's second half: ahead by more than min_delta in at least ``confidence`` of the resamples."""
    ok = boot["share_ahead"] >= p["confidence"]
    lo, hi = boot["delta_interval"]
    return _check("bootstrap", ok, f"ahead by more than {p['min_delta']:.4f} in {boot['share_ahead']:.1%} of {p['samples']} "
                  f"paired resamples ({'>=' if ok else '<'} {p['confidence']:.0%}); gain interval [{lo:+.4f}, {hi:+.4f}]",
                  value=boot["share_ahead"], threshold=p["confidence"])


def gate(
    params: GateParams | dict[str, Any],
    predictions_path: str | Path,
    registered_path: str | Path,
    decision_out: str | Path,
    registry=None,
) -> dict[str, Any]:
    """Decide on the registered challenger; the champion is the registry's production model,
    re-scored here on the challenger's test examples. The challenger's task (its model's
    nerflow.json) says how predictions read and score; a champion of another task (a registry
    name reused for a new task) is refused as a comparison, never silently promoted over."""
    Path(predictions_path).stat()  # a missing predictions file is named before the registered record
    challenger_tag = read_json(registered_path)["model_tag"]
    task = task_of(registry.model_dir(challenger_tag)) if registry is not None else task_of(None)
    inputs, gold, pred, labels = task.read_predictions(predictions_path)
    champion_tag = registry.production() if registry is not None else None
    if champion_tag == challenger_tag:
        decision = decide(params, gold, pred, None, challenger_tag, task=task, labels=labels)
        decision.update(promote=False, reasons=[f"{challenger_tag} is already the production model"])
    else:
        champion_pred = None
        if champion_tag is not None:
            champion_dir = registry.model_dir(champion_tag)
            if task_of(champion_dir).name != task.name:
                raise NerflowError(f"gate: the production model {champion_tag} is a {task_of(champion_dir).name} model and "
                                   f"the challenger {challenger_tag} a {task.name} one: use another registry.model_name")
            champion_pred = task.predict_labels(champion_dir, inputs)
        decision = decide(params, gold, pred, champion_pred, challenger_tag, champion_tag, task=task, labels=labels)
    write_json(decision_out, decision)
    return decision
