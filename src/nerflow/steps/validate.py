"""Step `validate`: check the canonical dataset with the Great Expectations suite of its task.

The dataset's task (nerflow.tasks) builds the GX tables, the facts beside them and the
expectations; nerflow.core.gx runs them and locates the failing rows; this step writes
``results.json`` (GX's validation results plus a summary) and ``report.html``, and stops the
run on a failed error check.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nerflow import NerflowError
from nerflow.core.config import ValidateParams, section
from nerflow.core.dataset import load_dataset_dir, read_manifest
from nerflow.core.files import atomic_dir, atomic_file, write_json
from nerflow.core.gx import describe, failure, run_gx, summarise
from nerflow.core.reports import render
from nerflow.tasks.registry import task_of


class ValidationFailed(NerflowError):
    """A failed error check: the run stops here (the report is written first)."""


def validate_dataset(params: ValidateParams | dict[str, Any] | None, dataset_dir: str | Path,
                     report_dir: str | Path) -> dict[str, Any]:
    """Validate the canonical dataset; write the report; raise ValidationFailed on a failed error check."""
    params = section(ValidateParams, params)
    manifest = read_manifest(dataset_dir)
    task = task_of(manifest)
    tables, facts, locate = task.validation_tables(load_dataset_dir(dataset_dir), manifest, params)
    gx_results = run_gx(tables, task.expectations(params.checks, facts))
    checks = summarise(gx_results, locate)
    failed = [c for c in checks if not c["success"] and c["severity"] == "error"]
    summary = {
        "task": task.name,
        "success": not failed,
        "errors": len(failed),
        "warnings": sum(not c["success"] and c["severity"] == "warning" for c in checks),
        "content_hash": manifest["content_hash"],
        "splits": manifest["splits"],
        "labels": manifest["labels"],
        **facts,
        "checks": checks,
    }
    with atomic_dir(report_dir) as tmp:
        write_json(tmp / "results.json", {**summary, "great_expectations": gx_results})
        with atomic_file(tmp / "report.html") as fh:
            fh.write(render_html(summary))
    if failed and params.fail_on_error:
        raise ValidationFailed(f"data validation failed, {len(failed)} error check(s): "
                               + "; ".join(map(failure, failed)) + f"; report: {Path(report_dir) / 'report.html'}")
    return summary


def render_html(summary: dict[str, Any]) -> str:
    """The report: verdict, data version, labels, the task's own sections (HTML the task
    renders, inserted as is), the checks (nerflow.core's templates/validation.html.j2)."""
    task = task_of(summary)
    return render("validation.html.j2", summary=summary, task_name=task.name,
                  task_section=task.report_html(summary), describe=describe)
