"""KFP components: one lightweight component per pipeline step, each a thin call of the
nerflow library. KFP serialises only the function source, so imports live inside the
functions; on a cluster they run in ``NERFLOW_IMAGE`` (built from the repo's Dockerfile),
locally in the current interpreter (kfp.local.SubprocessRunner).

Each component takes only the params sections it reads (each as JSON text: KFP's struct
values cannot hold a null; the library validates it into the typed section), so an edit of one key invalidates the cached results of the steps
that read it and no others. register, gate and package share the registry (the BentoML store
at ``registry.bentoml_home``): on a cluster, mount one volume there.
"""

import os

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Model, Output

IMAGE = os.environ.get("NERFLOW_IMAGE", "nerflow:0.1.0")


@dsl.component(base_image=IMAGE)
def data_op(data_params: str, dataset: Output[Dataset]):
    import json

    from nerflow.data import prepare_data
    from nerflow.params import configure

    configure()
    manifest = prepare_data(json.loads(data_params), dataset.path)
    dataset.metadata["content_hash"] = manifest["content_hash"]
    dataset.metadata["splits"] = manifest["splits"]


@dsl.component(base_image=IMAGE)
def validate_op(validate_params: str, dataset: Input[Dataset], report: Output[Artifact]) -> bool:
    import json

    from nerflow.params import configure
    from nerflow.validate import validate_dataset

    configure()
    summary = validate_dataset(json.loads(validate_params), dataset.path, report.path)
    report.metadata["success"] = summary["success"]
    return summary["success"]


@dsl.component(base_image=IMAGE)
def preprocess_op(preprocess_params: str, dataset: Input[Dataset], validation_report: Input[Artifact],
                  features: Output[Dataset]):
    import json

    from nerflow.params import configure
    from nerflow.preprocess import preprocess

    configure()
    info = preprocess(json.loads(preprocess_params), dataset.path, features.path)
    features.metadata["splits"] = info["splits"]


@dsl.component(base_image=IMAGE)
def train_op(train_params: str, features: Input[Dataset], model: Output[Model], curves: Output[Artifact]):
    import json

    from nerflow.params import configure
    from nerflow.train import train

    configure()
    summary = train(json.loads(train_params), features.path, model.path, curves.path)
    model.metadata.update({k: v for k, v in summary.items() if k != "dev_f1"})


@dsl.component(base_image=IMAGE)
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

    from nerflow.evaluate import evaluate
    from nerflow.params import configure

    configure()
    m = evaluate(json.loads(evaluate_params), model.path, dataset.path, metrics_json.path, predictions.path, error_analysis.path)
    for key in ("f1", "precision", "recall", "accuracy"):
        metrics.log_metric(key, m[key])
    for etype, v in m["per_type"].items():
        metrics.log_metric(f"f1_{etype}", v["f1"])
    # the metrics are metadata; a file at the artifact's path also lets a local run's cache
    # (which treats an artifact with no file as a miss) reuse this task
    with open(metrics.path, "w", encoding="utf-8") as fh:
        json.dump(metrics.metadata, fh)
    return m["f1"]


@dsl.component(base_image=IMAGE)
def register_op(registry_params: str, train_params: str, model: Input[Model], metrics_json: Input[Artifact],
                registered: Output[Artifact]) -> str:
    import json

    from nerflow.params import configure

    configure(json.loads(registry_params))
    from nerflow.package import register

    r = register(json.loads(registry_params), model.path, metrics_json.path, registered.path, json.loads(train_params))
    registered.metadata["model_tag"] = r["model_tag"]
    return r["model_tag"]


@dsl.component(base_image=IMAGE)
def gate_op(gate_params: str, registry_params: str, predictions: Input[Artifact], registered: Input[Artifact],
            decision: Output[Artifact]) -> bool:
    import json

    from nerflow.params import configure

    configure(json.loads(registry_params))
    from nerflow.gate import gate
    from nerflow.package import registry_for

    d = gate(json.loads(gate_params), predictions.path, registered.path, decision.path, registry_for(json.loads(registry_params)))
    decision.metadata["promote"] = d["promote"]
    decision.metadata["reasons"] = d["reasons"]
    return d["promote"]


@dsl.component(base_image=IMAGE)
def package_op(registry_params: str, package_params: str, decision: Input[Artifact], record: Output[Artifact]) -> str:
    import json

    from nerflow.params import configure

    configure(json.loads(registry_params))
    from nerflow.package import package

    r = package(json.loads(registry_params), json.loads(package_params), decision.path, record.path)
    record.metadata.update({k: v for k, v in r.items() if isinstance(v, (str, bool))})
    return r.get("model_tag") or ""
