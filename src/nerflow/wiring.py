"""dvc.yaml, derived: each stage depends on exactly the code it runs and the param keys it reads.

The code a stage runs is found, not listed: the stage's entry modules and every ``nerflow``
module they import, at any depth and inside functions too (read from the source with ``ast``),
plus the CLI that calls them. Its param keys are those of the sections it reads that change
its result (config.outcome_keys: ``train.resources`` and the progress bar are left out).

    python -m nerflow.wiring            write dvc.yaml
    python -m nerflow.wiring --check    exit 1 if dvc.yaml differs from what the code implies

A test runs the check, so a new import that a stage's deps miss fails CI instead of leaving
`dvc repro` silently stale.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nerflow.config import outcome_keys

PACKAGE_DIR = Path(__file__).resolve().parent
CALLER = "nerflow.cli"  # every stage runs through the CLI; its lazy imports of other steps are not followed


@dataclass
class Stage:
    cmd: str
    entry: tuple[str, ...]  # modules holding the step's logic
    sections: tuple[str, ...]  # params sections it reads
    doc: str = ""
    deps: tuple[str, ...] = ()  # data inputs and non-Python code
    outs: tuple[Any, ...] = ()
    metrics: tuple[Any, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)
    task_methods: tuple[str, ...] = ()  # the nerflow.tasks.Task methods the step calls


NO_CACHE = {"cache": False}

STAGES: dict[str, Stage] = {
    "data": Stage(
        "nerflow data --out data/dataset", ("nerflow.data",), ("data",),
        "always re-read the corpus (seconds): an edited corpus file is a new data version, and an unchanged "
        "one gives a byte-identical dataset, so the stages after it are skipped",
        outs=("data/dataset",), extra={"always_changed": True}, task_methods=("prepare_data",)),
    "validate": Stage(
        "nerflow validate --dataset data/dataset --report reports/validation", ("nerflow.validate",), ("validate",),
        "Great Expectations; a failed error check stops the run here",
        deps=("data/dataset",), outs=("reports/validation",),
        task_methods=("validation_tables", "expectations", "report_html")),
    "preprocess": Stage(
        "nerflow preprocess --dataset data/dataset --out data/features", ("nerflow.preprocess",), ("preprocess",),
        "runs only after validation passed (its report is a dependency)",
        deps=("data/dataset", "reports/validation"), outs=("data/features",), task_methods=("encode",)),
    "train": Stage(
        "nerflow train --features data/features --out models/candidate --curves reports/training",
        ("nerflow.train",), ("train",), "training curves (dvclive) in reports/training",
        deps=("data/features",), outs=("models/candidate", {"reports/training": NO_CACHE}),
        task_methods=("model_class", "collator", "dev_metrics")),
    "evaluate": Stage(
        "nerflow evaluate --model models/candidate --dataset data/dataset --metrics reports/metrics.json "
        "--predictions reports/predictions.jsonl --report reports/evaluation",
        ("nerflow.evaluate",), ("evaluate",), deps=("models/candidate", "data/dataset"),
        metrics=({"reports/metrics.json": NO_CACHE},), outs=("reports/predictions.jsonl", "reports/evaluation"),
        task_methods=("evaluate",)),
    "register": Stage(
        "nerflow register --model models/candidate --metrics reports/metrics.json --out reports/registered.json",
        ("nerflow.package",), ("registry",), "every trained model is kept in the BentoML model store as a candidate",
        deps=("models/candidate", "reports/metrics.json"), outs=({"reports/registered.json": NO_CACHE},)),
    "gate": Stage(
        "nerflow gate --predictions reports/predictions.jsonl --registered reports/registered.json --out reports/gate.json",
        ("nerflow.gate", "nerflow.package"), ("gate", "registry"),
        "champion/challenger: re-scores the production model on the same test sentences",
        deps=("reports/predictions.jsonl", "reports/registered.json"), outs=({"reports/gate.json": NO_CACHE},),
        task_methods=("read_predictions", "predict_labels", "predictor", "gate_score", "bootstrap_counts")),
    "package": Stage(
        "nerflow package --decision reports/gate.json --out reports/package.json", ("nerflow.package",),
        ("registry", "package"),
        "a promoted model: build its Bento (from serving/), then switch production to it (atomic; old one archived)",
        deps=("reports/gate.json", "serving/service.py", "serving/bentofile.yaml", "serving/static"),
        outs=({"reports/package.json": NO_CACHE},)),
}

PLOTS = [
    {"reports/evaluation/confusion.csv": {"template": "confusion", "x": "predicted", "y": "actual"}},
    {"Training loss": {"x": "step", "y": {"reports/training/plots/metrics/train/loss.tsv": "loss"}}},
    {"Dev F1 per epoch": {"x": "step", "y": {"reports/training/plots/metrics/dev/f1.tsv": "f1"}}},
]
METRICS = ["reports/training/metrics.json"]


TASKS = "nerflow.tasks"  # the task interface: a stage runs only the methods it calls (Stage.task_methods)


def _imports(module: str, task_methods: tuple[str, ...] = ()) -> set[str]:
    """The nerflow modules ``module`` imports anywhere in its source (functions included); in
    nerflow.tasks only those of its module level and of the ``task_methods`` of every task."""
    tree = ast.parse(_file(module).read_text(encoding="utf-8"))
    if module == TASKS:
        keep = [n for n in tree.body if not isinstance(n, ast.ClassDef)]
        keep += [m for c in tree.body if isinstance(c, ast.ClassDef) for m in c.body
                 if isinstance(m, ast.FunctionDef) and m.name in task_methods]
        tree = ast.Module(body=keep, type_ignores=[])
    found = set()
    for node in ast.walk(tree):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
        if isinstance(node, ast.ImportFrom) and node.module == "nerflow":
            names += [f"nerflow.{a.name}" for a in node.names]
        found |= {n for n in names if n == "nerflow" or n.startswith("nerflow.")}
    return {m for m in found if _file(m).exists()}


def _file(module: str) -> Path:
    return PACKAGE_DIR / "__init__.py" if module == "nerflow" else PACKAGE_DIR / (module.split(".", 1)[1] + ".py")


def modules_run_by(stage: str) -> list[str]:
    """Every nerflow module the stage's command can execute."""
    todo, seen = [*STAGES[stage].entry, CALLER, "nerflow"], set()
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        if module != CALLER:
            todo += sorted(_imports(module, STAGES[stage].task_methods) - seen)
    return sorted(seen)


def code_deps(stage: str, root: Path | None = None) -> list[str]:
    root = root or PACKAGE_DIR.parents[1]
    return sorted(str(_file(m).relative_to(root)) for m in modules_run_by(stage))


def param_deps(stage: str) -> list[str]:
    return [key for section in STAGES[stage].sections for key in outcome_keys(section)]


def dvc_yaml() -> str:
    import yaml

    def dump(obj: Any, indent: int) -> str:
        text = yaml.safe_dump(obj, sort_keys=False, width=120, default_flow_style=False)
        return "".join(" " * indent + line + "\n" for line in text.splitlines())

    out = [
        "# GENERATED by `python -m nerflow.wiring` from src/nerflow/wiring.py: edit that, then rerun it.",
        "# Each stage depends on exactly the code it runs (found from the imports) and the param keys it",
        "# reads (tests/test_wiring.py checks this file is current). `dvc repro` runs what changed.",
        "stages:",
    ]
    for name, s in STAGES.items():
        out.append(f"  {name}:")
        if s.doc:
            out.append(f"    # {s.doc}")
        body: dict[str, Any] = {"cmd": s.cmd, **s.extra, "deps": [*s.deps, *code_deps(name)],
                                "params": param_deps(name)}
        if s.metrics:
            body["metrics"] = list(s.metrics)
        body["outs"] = list(s.outs)
        out.append(dump(body, 4).rstrip("\n"))
    out.append("# `dvc metrics show`: test scores (reports/metrics.json) and the last training values")
    out.append(dump({"metrics": METRICS}, 0).rstrip("\n"))
    out.append("# `dvc plots show`: the token confusion matrix and the training curves")
    out.append(dump({"plots": PLOTS}, 0).rstrip("\n"))
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    target = PACKAGE_DIR.parents[1] / "dvc.yaml"
    text = dvc_yaml()
    if "--check" in argv:
        if target.read_text(encoding="utf-8") != text:
            print(f"{target}: out of date with the code; run `python -m nerflow.wiring`", file=sys.stderr)
            return 1
        print(f"{target}: current")
        return 0
    target.write_text(text, encoding="utf-8")
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
