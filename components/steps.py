"""KFP components: one lightweight component per pipeline step, each a thin call of the
nerflow library. KFP serialises only the function source, so imports live inside the
functions. They run in the nerflow image (Dockerfile; ``make image`` tags it with the git
revision): on a cluster, with ``pipeline.py run --containers`` locally (kfp.local.DockerRunner),
or in the current interpreter (kfp.local.SubprocessRunner). The image holds kfp, so no
component installs anything when it starts.

A run names a git repository and revision: ``source_op`` reads the params file there (and
resolves the revision to a commit); ``data_op`` reads the corpus there through DVC. Each
component then takes only the params sections it reads (each as JSON text: KFP's struct values
cannot hold a null; the library validates it into the typed section), so an edit of one key
re-runs the steps that read it and no others. register, gate and package share the registry
(the BentoML store at ``$BENTOML_HOME``): a volume mounted in each of them.
"""

import os
import subprocess
from pathlib import Path
from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Model, Output


def _revision() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=Path(__file__).resolve().parents[1],
                              capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "latest"


# the images `make image` / `make image-gpu` build from this checkout (tagged with its revision);
# set NERFLOW_IMAGE / NERFLOW_GPU_IMAGE to where you pushed them
IMAGE = os.environ.get("NERFLOW_IMAGE") or f"nerflow:{_revision()}"
GPU_IMAGE = os.environ.get("NERFLOW_GPU_IMAGE") or IMAGE.replace("nerflow:", "nerflow-gpu:", 1)
component = dsl.component(base_image=IMAGE, install_kfp_package=False)


@component
def source_op(repo: str, revision: str, params_file: str, dvc_remote: str) -> NamedTuple("SourceOutputs", [
        ("commit", str), ("data_version", str), ("data_params", str), ("validate_params", str),
        ("preprocess_params", str), ("train_params", str), ("evaluate_params", str), ("registry_params", str),
        ("gate_params", str), ("package_params", str)]):
    """The params file at (repo, revision), validated, one JSON text per section; the commit the
    revision names now; and the data version (the corpus sources' DVC hashes, not downloaded)."""
    from typing import NamedTuple

    from nerflow.core.paths import configure
    from nerflow.orchestration.versioned import source

    configure()
    s = source(repo, revision, params_file, dvc_remote or None)
    version = s["data_version"]
    print(f"source: {repo}@{revision} = {s['commit']}; data version {version['hash'][:16]} {version['sources']}")
    outputs = NamedTuple("SourceOutputs", [("commit", str), ("data_version", str)] +
                         [(f"{name}_params", str) for name in s["sections"]])
    return outputs(s["commit"], version["hash"], *s["sections"].values())


@component
def data_op(data_params: str, repo: str, revision: str, dvc_remote: str, data_version: str, dataset: Output[Dataset]):
    """The corpus read through DVC at (repo, revision). Cached on the data version, not the
    commit: a commit that changes no data re-runs nothing after it."""
    import json

    from nerflow.core.paths import configure
    from nerflow.orchestration.versioned import prepare_data_at

    configure()
    manifest = prepare_data_at(json.loads(data_params), repo, revision, dataset.path, dvc_remote or None,
                               expected_version=data_version)
    dataset.metadata["content_hash"] = manifest["content_hash"]
    dataset.metadata["splits"] = manifest["splits"]
    dataset.metadata["commit"] = manifest["origin"]["commit"]
    dataset.metadata["data_version"] = manifest["origin"]["data_version"]


@component
def validate_op(validate_params: str, dataset: Input[Dataset], report: Output[Artifact]) -> bool:
    import json

    from nerflow.core.paths import configure
    from nerflow.steps.validate import validate_dataset

    configure()
    summary = validate_dataset(json.loads(validate_params), dataset.path, report.path)
    report.metadata["success"] = summary["success"]
    return summary["success"]


@component
def preprocess_op(preprocess_params: str, dataset: Input[Dataset], validation_report: Input[Artifact],
                  features: Output[Dataset]):
    import json

    from nerflow.core.paths import configure
    from nerflow.steps.preprocess import preprocess

    configure()
    info = preprocess(json.loads(preprocess_params), dataset.path, features.path)
    features.metadata["splits"] = info["splits"]


@component
def train_op(train_params: str, features: Input[Dataset], model: Output[Model], curves: Output[Artifact]):
    import json

    import os

    from nerflow.core.paths import configure
    from nerflow.steps.train import train_processes

    configure()
    # NERFLOW_NPROC: compiled in from train.resources (several GPUs or processes: torchrun)
    summary = train_processes(json.loads(train_params), features.path, model.path, curves.path,
                              nproc=int(os.environ.get("NERFLOW_NPROC", "1")))
    model.metadata.update({k: v for k, v in summary.items() if k != "dev_f1"})


@component
def evaluate_op(
    evaluate_params: str,
    model: Input[Model],
    dataset: Input[Dataset],
    metrics_json: Output[Artifact],
    predictions: Output[Artifact],
    error_analysis: Output[HTML],
    metrics: Output[Metrics],
) -> float:
    import json

    from nerflow.steps.evaluate import evaluate
    from nerflow.core.paths import configure

    configure()
    m = evaluate(json.loads(evaluate_params), model.path, dataset.path, metrics_json.path, predictions.path, error_analysis.path)
    for key in ("f1", "precision", "recall", "accuracy", "macro_f1"):
        if key in m:
            metrics.log_metric(key, m[key])
    for name, v in (m.get("per_type") or m.get("per_class") or {}).items():  # entity types, or classes
        metrics.log_metric(f"f1_{name}", v["f1"])
    # the metrics are metadata; a file at the artifact's path also lets a local run's cache
    # (which treats an artifact with no file as a miss) reuse this task
    with open(metrics.path, "w", encoding="utf-8") as fh:
        json.dump(metrics.metadata, fh)
    return m["f1"]


@component
def register_op(registry_params: str, train_params: str, model: Input[Model], metrics_json: Input[Artifact],
                dataset: Input[Dataset], registered: Output[Artifact]) -> str:
    import json

    from nerflow.core.paths import configure

    configure(json.loads(registry_params))
    from nerflow.core.dataset import read_manifest
    from nerflow.steps.package import register

    # the model's revision: the repository and commit its corpus was read at
    origin = read_manifest(dataset.path).get("origin")
    r = register(json.loads(registry_params), model.path, metrics_json.path, registered.path, json.loads(train_params),
                 origin=origin)
    registered.metadata["model_tag"] = r["model_tag"]
    return r["model_tag"]


@component
def gate_op(gate_params: str, registry_params: str, predictions: Input[Artifact], registered: Input[Artifact],
            decision: Output[Artifact]) -> bool:
    import json

    from nerflow.core.paths import configure

    configure(json.loads(registry_params))
    from nerflow.steps.gate import gate
    from nerflow.steps.package import registry_for

    d = gate(json.loads(gate_params), predictions.path, registered.path, decision.path, registry_for(json.loads(registry_params)))
    decision.metadata["promote"] = d["promote"]
    decision.metadata["reasons"] = d["reasons"]
    return d["promote"]


@component
def package_op(registry_params: str, package_params: str, decision: Input[Artifact], record: Output[Artifact]) -> str:
    import json

    from nerflow.core.paths import configure

    configure(json.loads(registry_params))
    from nerflow.steps.package import package

    r = package(json.loads(registry_params), json.loads(package_params), decision.path, record.path)
    record.metadata.update({k: v for k, v in r.items() if isinstance(v, (str, bool))})
    return r.get("model_tag") or ""


# the train step in the GPU image (torch's CUDA build; nothing else differs): used when
# train.resources asks for GPUs
train_gpu_op = dsl.component(train_op.python_func, base_image=GPU_IMAGE, install_kfp_package=False)
