"""dvc.yaml, derived: each stage depends on exactly the code it runs and the param keys it reads.

The code a stage runs is found, not listed: the stage's entry modules (its step, and the CLI
that calls it), the modules of the task it runs (the one params.yaml's ``data.task`` names,
from nerflow.tasks.registry.TASK_MODULES) and every ``nerflow`` module those import at their
top, at any depth, with the ``templates/`` folder of every package among them (its reports).
Imports inside functions are not followed: in nerflow only the CLI defers imports, each of a
step it may run. Its param keys are those of the sections it reads that change its result
(config.outcome_keys: ``train.resources`` and the progress bar are left out).

    python -m nerflow.orchestration.wiring            write dvc.yaml (when it differs)
    python -m nerflow.orchestration.wiring --check    exit 1 if dvc.yaml differs from what the code implies

A test runs the check, so a new import that a stage's deps miss fails CI instead of leaving
`dvc repro` silently stale; `make run` writes it first, so a changed ``data.task`` rewires.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from nerflow.core.config import load_params, outcome_keys
from nerflow.tasks.base import TOKEN
from nerflow.tasks.registry import TASK_MODULES

PACKAGE_DIR = Path(__file__).resolve().parents[1]
ROOT = PACKAGE_DIR.parents[1]
CALLER = "nerflow.cli.commands"  # every stage runs through the CLI


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
    runs_task: bool = True  # calls its task (nerflow.tasks.base.Task): depends on that task's code


NO_CACHE = {"cache": False}

STAGES: dict[str, Stage] = {
    "data": Stage(
        "nerflow data --out data/dataset", ("nerflow.steps.data",), ("data",),
        "always re-read the corpus (seconds): an edited corpus file is a new data version, and an unchanged "
        "one gives a byte-identical dataset, so the stages after it are skipped",
        outs=("data/dataset",), extra={"always_changed": True}),
    "validate": Stage(
        "nerflow validate --dataset data/dataset --report reports/validation", ("nerflow.steps.validate",), ("validate",),
        "Great Expectations; a failed error check stops the run here",
        deps=("data/dataset",), outs=("reports/validation",)),
    "preprocess": Stage(
        "nerflow preprocess --dataset data/dataset --out data/features", ("nerflow.steps.preprocess",), ("preprocess",),
        "runs only after validation passed (its report is a dependency)",
        deps=("data/dataset", "reports/validation"), outs=("data/features",)),
    "train": Stage(
        "nerflow train --features data/features --out models/candidate --curves reports/training",
        ("nerflow.steps.train",), ("train",), "training curves (dvclive) in reports/training",
        deps=("data/features",), outs=("models/candidate", {"reports/training": NO_CACHE})),
    "evaluate": Stage(
        "nerflow evaluate --model models/candidate --dataset data/dataset --metrics reports/metrics.json "
        "--predictions reports/predictions.jsonl --report reports/evaluation",
        ("nerflow.steps.evaluate",), ("evaluate",), deps=("models/candidate", "data/dataset"),
        metrics=({"reports/metrics.json": NO_CACHE},), outs=("reports/predictions.jsonl", "reports/evaluation")),
    "register": Stage(
        "nerflow register --model models/candidate --metrics reports/metrics.json --out reports/registered.json",
        ("nerflow.steps.package",), ("registry",), "every trained model is kept in the BentoML model store as a candidate",
        deps=("models/candidate", "reports/metrics.json"), outs=({"reports/registered.json": NO_CACHE},), runs_task=False),
    "gate": Stage(
        "nerflow gate --predictions reports/predictions.jsonl --registered reports/registered.json --out reports/gate.json",
        ("nerflow.steps.gate", "nerflow.steps.package"), ("gate", "registry"),
        "champion/challenger: re-scores the production model on the same test sentences",
        deps=("reports/predictions.jsonl", "reports/registered.json"), outs=({"reports/gate.json": NO_CACHE},)),
    "package": Stage(
        "nerflow package --decision reports/gate.json --out reports/package.json", ("nerflow.steps.package",),
        ("registry", "package"),
        "a promoted model: build its Bento (from serving/), then switch production to it (atomic; old one archived)",
        deps=("reports/gate.json", "serving/service.py", "serving/bentofile.yaml", "serving/static"),
        outs=({"reports/package.json": NO_CACHE},), runs_task=False),
}

PLOTS = [
    {"reports/evaluation/confusion.csv": {"template": "confusion", "x": "predicted", "y": "actual"}},
    {"Training loss": {"x": "step", "y": {"reports/training/plots/metrics/train/loss.tsv": "loss"}}},
    {"Dev F1 per epoch": {"x": "step", "y": {"reports/training/plots/metrics/dev/f1.tsv": "f1"}}},
]
METRICS = ["reports/training/metrics.json"]


def _imports(module: str) -> set[str]:
    """The nerflow modules ``module`` imports at its top (``from nerflow.x import y`` names
    module ``nerflow.x.y`` where that is a module), with the packages holding them."""
    tree = ast.parse(_file(module).read_text(encoding="utf-8"))
    found = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    found = {m for m in found if m == "nerflow" or m.startswith("nerflow.")}
    found |= {m.rsplit(".", k)[0] for m in found for k in range(1, m.count(".") + 1)}  # __init__.py runs first
    return {m for m in found if _file(m).exists()}


def _file(module: str) -> Path:
    path = PACKAGE_DIR.parent.joinpath(*module.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def configured_task(root: Path = ROOT) -> str:
    """The task params.yaml's ``data.task`` names."""
    params = root / "params.yaml"
    return (load_params(params).data.task if params.exists() else None) or TOKEN


def modules_run_by(stage: str, task: str | None = None) -> list[str]:
    """Every nerflow module the stage's command can execute, for ``task`` (default: params.yaml's)."""
    s = STAGES[stage]
    todo = [*s.entry, CALLER, *([TASK_MODULES[task or configured_task()]] if s.runs_task else [])]
    seen: set[str] = set()
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo += sorted(_imports(module) - seen)
    return sorted(seen)


def code_deps(stage: str, root: Path | None = None, task: str | None = None) -> list[str]:
    """The files (modules, and the templates folders of their packages) the stage depends on."""
    files = {_file(m) for m in modules_run_by(stage, task)}
    templates = {f.parent / "templates" for f in files if (f.parent / "templates").is_dir()}
    return sorted(str(f.relative_to(root or ROOT)) for f in files | templates)


def param_deps(stage: str) -> list[str]:
    return [key for section in STAGES[stage].sections for key in outcome_keys(section)]


def dvc_yaml() -> str:

    def dump(obj: Any, indent: int) -> str:
        text = yaml.safe_dump(obj, sort_keys=False, width=120, default_flow_style=False)
        return "".join(" " * indent + line + "\n" for line in text.splitlines())

    out = [
        "# GENERATED by `python -m nerflow.orchestration.wiring` from src/nerflow/orchestration/wiring.py: edit that, then rerun it.",
        "# Each stage depends on exactly the code it runs (found from the imports) and the param keys it",
        "# reads, for params.yaml's data.task (a test checks this file is current). `dvc repro` runs what changed.",
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
    target = ROOT / "dvc.yaml"
    text = dvc_yaml()
    current = target.read_text(encoding="utf-8") if target.exists() else None
    if "--check" in argv:
        if current != text:
            print(f"{target}: out of date with the code; run `python -m nerflow.orchestration.wiring`", file=sys.stderr)
            return 1
        print(f"{target}: current")
        return 0
    if current != text:
        target.write_text(text, encoding="utf-8")
        print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
