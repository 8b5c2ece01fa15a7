"""Step `gate`: decide whether the evaluated model is promoted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nerflow.atomic import read_json, write_json


def decide(params: dict[str, Any], metrics: dict[str, Any]) -> dict[str, Any]:
    """Promote when test F1 >= gate.min_f1. Returns the decision with every number and reason."""
    min_f1 = float(params.get("min_f1", 0.0))
    f1 = float(metrics["f1"])
    checks = [
        {
            "check": "min_f1",
            "passed": f1 >= min_f1,
            "value": f1,
            "threshold": min_f1,
            "reason": f"test F1 {f1:.4f} {'>=' if f1 >= min_f1 else '<'} gate.min_f1 {min_f1:.4f}",
        }
    ]
    promote = all(c["passed"] for c in checks)
    return {
        "promote": promote,
        "reasons": [c["reason"] for c in checks if c["passed"] != promote] or [c["reason"] for c in checks],
        "checks": checks,
        "metrics": {"f1": f1, "precision": metrics.get("precision"), "recall": metrics.get("recall")},
    }


def gate(params: dict[str, Any], metrics_path: str | Path, decision_out: str | Path) -> dict[str, Any]:
    decision = decide(params, read_json(metrics_path))
    write_json(decision_out, decision)
    return decision
