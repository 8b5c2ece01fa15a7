"""Step `package`: store a promoted model in the BentoML model store and build a Bento.

The model store lives in ``$BENTOML_HOME`` (the CLI sets it to ``package.bentoml_home``,
default ``.bentoml`` in the project). The model carries labels (stage, data version) and
metadata (metrics, params, data hash, git revision). Writes ``package.json`` with the tags
and the command that serves the result; a model the gate refused is not packaged.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from nerflow import NerflowError
from nerflow.atomic import read_json, write_json
from nerflow.predict import MODEL_INFO

BENTOFILE = Path("serving") / "bentofile.yaml"


def git_revision(root: str | Path = ".") -> str:
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True, timeout=30
        ).stdout.strip()
        return rev + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def save_model(name: str, model_dir: str | Path, metadata: dict[str, Any], labels: dict[str, str]):
    """Copy a trained model folder into the BentoML model store; returns the bentoml Model."""
    import bentoml

    with bentoml.models.create(name, labels=labels, metadata=metadata) as model:
        shutil.copytree(model_dir, model.path, dirs_exist_ok=True)
    return model


def build_bento(model_tag: str, root: str | Path, labels: dict[str, str] | None = None):
    """Build the Bento described by serving/bentofile.yaml around ``model_tag``.

    The bentofile is completed with the model and ``NERFLOW_MODEL_TAG`` (so the Bento serves
    exactly this model) in a temporary copy; the one in serving/ stays as written.
    """
    import os
    import tempfile

    import bentoml

    root = Path(root).resolve()
    config = yaml.safe_load((root / BENTOFILE).read_text())
    config["models"] = [model_tag]
    config["envs"] = [{"name": "NERFLOW_MODEL_TAG", "value": model_tag}]
    os.environ["NERFLOW_MODEL_TAG"] = model_tag  # the service resolves its model at import
    with tempfile.TemporaryDirectory() as tmp:
        bentofile = Path(tmp) / "bentofile.yaml"
        bentofile.write_text(yaml.safe_dump(config))
        return bentoml.bentos.build_bentofile(str(bentofile), build_ctx=str(root), labels=labels)


def package(
    params: dict[str, Any],
    model_dir: str | Path,
    decision_path: str | Path,
    metrics_path: str | Path,
    record_out: str | Path,
    train_params: dict[str, Any] | None = None,
    root: str | Path | None = None,
) -> dict[str, Any]:
    from nerflow.params import project_root

    root = root or project_root()
    decision = read_json(decision_path)
    if not decision.get("promote"):
        record = {"packaged": False, "reason": "gate refused: " + "; ".join(decision.get("reasons", []))}
        write_json(record_out, record)
        return record
    model_dir = Path(model_dir)
    if not (model_dir / MODEL_INFO).exists():
        raise NerflowError(f"{model_dir}: not a trained nerflow model (no {MODEL_INFO})")
    info = read_json(model_dir / MODEL_INFO)
    metrics = read_json(metrics_path)
    revision = git_revision(root)
    metadata = {
        "stage": "production",
        "metrics": {k: metrics[k] for k in ("f1", "precision", "recall", "macro_f1", "accuracy", "per_type", "scheme", "split") if k in metrics},
        # BentoML metadata takes no None: params and the gate decision travel as JSON text
        "params_json": json.dumps(train_params or {}, sort_keys=True),
        "labels": info["labels"],
        "data_hash": info["content_hash"],
        "base_model": str(info.get("base_model")),
        "git_revision": revision,
        "gate_json": json.dumps(decision, sort_keys=True),
    }
    labels = {"stage": "production", "data": info["content_hash"][:16], "git": revision[:12]}
    model = save_model(params.get("model_name", "nerflow-ner"), model_dir, metadata, labels)
    record: dict[str, Any] = {"packaged": True, "model_tag": str(model.tag), "data_hash": info["content_hash"]}
    serve = f"NERFLOW_MODEL_TAG={model.tag} bentoml serve serving.service:NERService --port 3000"
    if params.get("build_bento", True):
        bento = build_bento(str(model.tag), root, labels)
        record["bento_tag"] = str(bento.tag)
        serve = f"bentoml serve {bento.tag} --port 3000"
    record["serve_command"] = serve
    write_json(record_out, record)
    return record
