"""KFP components: one lightweight component per pipeline step, each a thin call of the
nerflow library. KFP serialises only the function source, so imports live inside the
functions; on a cluster they run in ``NERFLOW_IMAGE`` (built from the repo's Dockerfile),
locally in the current interpreter (kfp.local.SubprocessRunner).

Every component receives the whole params file as JSON text (``params_json``) and reads
its own section, exactly as the CLI does. register, gate and package share the registry
(the BentoML store at ``registry.bentoml_home``): on a cluster, mount one volume there.
"""

import os

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Model, Output

IMAGE = os.environ.get("NERFLOW_IMAGE", "nerflow:0.1.0")


@dsl.component(base_image=IMAGE)
def data_op(params_json: str, dataset: Output[Dataset]):
    import json

    from nerflow.data import prepare_data

    manifest = prepare_data(json.loads(params_json)["data"], dataset.path)
    dataset.metadata["content_hash"] = manifest["content_hash"]
    dataset.metadata["splits"] = manifest["splits"]


@dsl.component(base_image=IMAGE)
def validate_op(params_json: str, dataset: Input[Dataset], report: Output[Artifact]) -> bool:
    import json

    from nerflow.validate import validate_dataset

    summary = validate_dataset(json.loads(params_json)["validate"], dataset.path, report.path)
    report.metadata["success"] = summary["success"]
    return summary["success"]


@dsl.component(base_image=IMAGE)
def preprocess_op(params_json: str, dataset: Input[Dataset], validation_report: Input[Artifact], features: Output[Dataset]):
    import json

    from nerflow.preprocess import preprocess

    info = preprocess(json.loads(params_json)["preprocess"], dataset.path, features.path)
    features.metadata["splits"] = info["splits"]


@dsl.component(base_image=IMAGE)
def train_op(params_json: str, features: Input[Dataset], model: Output[Model]):
    import json
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from nerflow.train import train

    summary = train(json.loads(params_json)["train"], features.path, model.path)
    model.metadata.update({k: v for k, v in summary.items() if k != "dev_f1"})


@dsl.component(base_image=IMAGE)
def evaluate_op(
    params_json: str,
    model: Input[Model],
    dataset: Input[Dataset],
    metrics_json: Output[Artifact],
    predictions: Output[Artifact],
    error_analysis: Output[HTML],
    metrics: Output[Metrics],
) -> float:
    import json

    from nerflow.evaluate import evaluate

    m = evaluate(json.loads(params_json)["evaluate"], model.path, dataset.path, metrics_json.path, predictions.path,
                 error_analysis.path)
    for key in ("f1", "precision", "recall", "accuracy"):
        metrics.log_metric(key, m[key])
    for etype, v in m["per_type"].items():
        metrics.log_metric(f"f1_{etype}", v["f1"])
    return m["f1"]


@dsl.component(base_image=IMAGE)
def register_op(params_json: str, model: Input[Model], metrics_json: Input[Artifact], registered: Output[Artifact]) -> str:
    import json
    import os

    from nerflow.params import bentoml_home

    params = json.loads(params_json)
    os.environ["BENTOML_HOME"] = bentoml_home(params["registry"])
    from nerflow.package import register

    r = register(params["registry"], model.path, metrics_json.path, registered.path, params["train"])
    registered.metadata["model_tag"] = r["model_tag"]
    return r["model_tag"]


@dsl.component(base_image=IMAGE)
def gate_op(params_json: str, predictions: Input[Artifact], registered: Input[Artifact], decision: Output[Artifact]) -> bool:
    import json
    import os

    from nerflow.params import bentoml_home

    params = json.loads(params_json)
    os.environ["BENTOML_HOME"] = bentoml_home(params["registry"])
    from nerflow.gate import gate
    from nerflow.package import registry_for

    d = gate(params["gate"], predictions.path, registered.path, decision.path, registry_for(params["registry"]))
    decision.metadata["promote"] = d["promote"]
    decision.metadata["reasons"] = d["reasons"]
    return d["promote"]


@dsl.component(base_image=IMAGE)
def package_op(params_json: str, decision: Input[Artifact], record: Output[Artifact]) -> str:
    import json
    import os

    from nerflow.params import bentoml_home

    params = json.loads(params_json)
    os.environ["BENTOML_HOME"] = bentoml_home(params["registry"])
    from nerflow.package import package

    r = package(params["registry"], params["package"], decision.path, record.path)
    record.metadata.update({k: v for k, v in r.items() if isinstance(v, (str, bool))})
    return r.get("model_tag") or ""
