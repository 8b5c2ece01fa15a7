"""Steps `register` and `package`: store every trained model as a candidate in the BentoML
model store; build a Bento for a promoted one and make it the production model.

The store lives in ``$BENTOML_HOME`` (the CLI sets it to ``registry.bentoml_home``, default
``.bentoml`` in the project); nerflow.release.registry keeps which model is in production. A model
carries labels (stage, data version, git) and metadata (metrics, params, data hash, git
revision). `package` writes ``package.json`` with the tags and the command that serves the
production model; a model the gate refused stays a candidate and nothing is built.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from nerflow import NerflowError
from nerflow.core.config import (
    TOKEN,
    PackageParams,
    RegistryParams,
    TrainParams,
    section,
)
from nerflow.core.files import read_json, write_json
from nerflow.core.inference import MODEL_INFO
from nerflow.core.paths import bentoml_home, project_root
from nerflow.release.deploy import image_of, write_production_manifests
from nerflow.release.registry import Registry

# Heavy libraries (bentoml) are imported inside the functions that use them, on purpose:
# the CLI starts without them and a step loads only what it runs.

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


def build_bento(model_tag: str, root: str | Path, labels: dict[str, str] | None = None, base_image: str | None = None):
    """Build the Bento described by serving/bentofile.yaml around ``model_tag``.

    The bentofile is completed with the model and ``NERFLOW_MODEL_TAG`` (so the Bento serves
    exactly this model), and ``base_image`` for its container, in a temporary copy; the one in
    serving/ stays as written.
    """

    import bentoml

    root = Path(root).resolve()
    config = yaml.safe_load((root / BENTOFILE).read_text())
    config["name"] = model_tag.split(":")[0].replace("-", "_")  # the Bento is named after its registry: nerflow_ner, ...
    config["models"] = [model_tag]
    config["envs"] = [{"name": "NERFLOW_MODEL_TAG", "value": model_tag}, {"name": "BENTOML_DO_NOT_TRACK", "value": "true"}]
    if base_image:
        config.setdefault("docker", {})["base_image"] = base_image
    os.environ["NERFLOW_MODEL_TAG"] = model_tag  # the service resolves its model at import
    with tempfile.TemporaryDirectory() as tmp:
        bentofile = Path(tmp) / "bentofile.yaml"
        bentofile.write_text(yaml.safe_dump(config))
        return bentoml.bentos.build_bentofile(str(bentofile), build_ctx=str(root), labels=labels)


def registry_for(params: RegistryParams | dict[str, Any]):
    """The registry named by the ``registry`` params section (store: $BENTOML_HOME)."""
    params = section(RegistryParams, params)
    return Registry(params.model_name, bentoml_home(params))


def register(
    params: RegistryParams | dict[str, Any],
    model_dir: str | Path,
    metrics_path: str | Path,
    record_out: str | Path,
    train_params: TrainParams | dict[str, Any] | None = None,
    root: str | Path | None = None,
    origin: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Step `register`: store the trained model in the BentoML model store as a candidate,
    with its metrics, train params, data hash and git revision. ``origin`` (the KFP path: the
    dataset manifest's record of the repository and commit the corpus was read at) gives the
    revision; otherwise it is the checkout's HEAD."""
    model_dir = Path(model_dir)
    if not (model_dir / MODEL_INFO).exists():
        raise NerflowError(f"{model_dir}: not a trained nerflow model (no {MODEL_INFO})")
    info = read_json(model_dir / MODEL_INFO)
    metrics = read_json(metrics_path)
    revision = origin["commit"] if origin else git_revision(root or project_root())
    metadata = {
        "metrics": {k: metrics[k] for k in ("task", "f1", "precision", "recall", "macro_f1", "accuracy", "per_type", "per_class",
                                             "f1_average", "scheme", "split", "sentences", "texts") if k in metrics},
        "task": info.get("task", TOKEN),
        # BentoML metadata takes no None: params travel as JSON text
        "params_json": json.dumps(section(TrainParams, train_params).to_dict() if train_params is not None else {},
                                  sort_keys=True),
        "labels": info["labels"],
        "level": info.get("level", "word"),
        "data_hash": info["content_hash"],
        "base_model": str(info.get("base_model")),
        "git_revision": revision,
        "runtime": info.get("runtime", "torch"),  # what the service runs it with (nerflow.core.runtime)
        **({"int8_export": info["int8_export"]} if info.get("int8_export") else {}),  # which int8 export (INT8_EXPORTS)
    }
    if origin:
        metadata.update(source_repo=origin["repo"], data_version=origin["data_version"],
                        data_sources_json=json.dumps(origin["sources"], sort_keys=True))
    labels = {"data": info["content_hash"][:16], "git": revision[:12]}
    registry = registry_for(params)
    tag = registry.register(model_dir, metadata, labels)
    record = {"model_tag": tag, "data_hash": info["content_hash"], "git_revision": revision, "f1": metrics.get("f1")}
    write_json(record_out, record)
    return record


def package(
    registry_params: RegistryParams | dict[str, Any],
    params: PackageParams | dict[str, Any],
    decision_path: str | Path,
    record_out: str | Path,
    root: str | Path | None = None,
) -> dict[str, Any]:
    """Step `package`: for a promoted challenger, build its Bento, then make it the production
    model (the registry's atomic switch; the previous one is archived). A refused one is left
    a candidate and nothing is built."""
    decision = read_json(decision_path)
    tag = (decision.get("challenger") or {}).get("tag")
    if not decision.get("promote"):
        record = {"packaged": False, "model_tag": tag, "reason": "gate refused: " + "; ".join(decision.get("reasons", []))}
        write_json(record_out, record)
        return record
    registry = registry_for(registry_params)
    return promote(registry, tag, params, record_out, reason="gate: " + "; ".join(decision["reasons"]),
                   decision=decision, root=root or project_root())


def promote(registry, tag: str, params: PackageParams | dict[str, Any], record_out: str | Path | None, reason: str,
            decision: dict[str, Any] | None = None, root: str | Path | None = None) -> dict[str, Any]:
    """Build the Bento for ``tag`` (unless one exists or ``build_bento`` is off), then switch
    production to it. A failure before the switch leaves the old champion in production."""
    registry.model_dir(tag)
    bento = registry.state()["bentos"].get(tag)
    p = section(PackageParams, params)
    if bento is None and p.build_bento:
        bento = str(build_bento(tag, root or project_root(), {"stage": "production"}, p.bento_base_image).tag)
    registry.promote(tag, reason, bento=bento, decision=decision)

    manifest = write_production_manifests(registry, params)
    serve = f"bentoml serve {bento} --port 3000" if bento else \
        f"NERFLOW_MODEL_TAG={tag} bentoml serve serving.service:ModelService --port 3000"
    record: dict[str, Any] = {"packaged": True, "model_tag": tag, "bento_tag": bento, "serve_command": serve,
                              "manifest": str(manifest)}
    if record_out is not None:
        write_json(record_out, record)
    return record


def rollback(registry, params: PackageParams | dict[str, Any] | None, reason: str = "manual rollback") -> dict[str, Any]:
    """Put the previous production model back and write its Kubernetes manifests again."""
    event = registry.rollback(reason)
    return {**event, "manifest": str(write_production_manifests(registry, params))}


def containerize(registry, params: PackageParams | dict[str, Any] | None = None, tag: str | None = None) -> str:
    """`bentoml containerize` the Bento of ``tag`` (default: the production model) into an image
    tagged with the model tag (under ``package.deploy.image_registry``), the image the
    Kubernetes manifests name. Docker's classic builder (BentoML's BuildKit Dockerfile needs a
    frontend image from Docker Hub), on the host network (the build installs packages)."""
    tag = tag or registry.production()
    if tag is None:
        raise NerflowError(f"{registry.name}: no production model to containerize")
    bento = registry.state()["bentos"].get(tag)
    if bento is None:
        raise NerflowError(f"{tag}: has no Bento (package.build_bento was off when it was promoted)")
    image = image_of(tag, section(PackageParams, params).deploy)
    beside = Path(sys.executable).parent / "bentoml"  # this environment's, on PATH or not
    bentoml = str(beside) if beside.exists() else shutil.which("bentoml") or "bentoml"
    env = {**os.environ, "DOCKER_BUILDKIT": "0", "BENTOML_HOME": str(registry.home), "BENTOML_DO_NOT_TRACK": "true"}
    result = subprocess.run([bentoml, "containerize", bento, "--image-tag", image, "--opt", "network=host"], env=env)
    if result.returncode != 0:
        raise NerflowError(f"bentoml containerize {bento} failed (exit {result.returncode}): see its output above")
    return image
