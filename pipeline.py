"""The nerflow Kubeflow pipeline: data -> validate -> preprocess -> train -> evaluate -> register -> gate -> package.

    python pipeline.py compile [--out pipeline.yaml]      write the pipeline spec
    python pipeline.py run [--params params.yaml]         run the whole pipeline locally (no cluster)
    python pipeline.py submit --host URL                  start a run on a KFP host
    python pipeline.py schedule --host URL --cron "..."   a recurring run on a KFP host

On a cluster the components run in NERFLOW_IMAGE (build it from the Dockerfile and push it;
set NERFLOW_IMAGE before compile/submit). Locally they run in this interpreter.
"""

import argparse
import json
import os
import sys
from pathlib import Path

from kfp import dsl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from components.steps import (  # noqa: E402
    data_op,
    evaluate_op,
    gate_op,
    package_op,
    preprocess_op,
    register_op,
    train_op,
    validate_op,
)

PIPELINE_NAME = "nerflow"


def make_pipeline(resources: dict | None = None):
    """The pipeline, with the train task's resource requests (``train.resources`` in params:
    cpu, memory, gpus, accelerator). For several GPUs, the training image runs the same
    step under torchrun (see README)."""
    resources = resources or {}

    @dsl.pipeline(name=PIPELINE_NAME, description="NER corpus in, gated and packaged NER model out")
    def nerflow_pipeline(params_json: str) -> bool:
        data = data_op(params_json=params_json)
        validation = validate_op(params_json=params_json, dataset=data.outputs["dataset"])
        features = preprocess_op(
            params_json=params_json, dataset=data.outputs["dataset"], validation_report=validation.outputs["report"]
        )
        trained = train_op(params_json=params_json, features=features.outputs["features"])
        trained.set_cpu_request(str(resources.get("cpu", "2"))).set_memory_request(str(resources.get("memory", "8G")))
        if int(resources.get("gpus", 0) or 0) > 0:
            trained.set_accelerator_type(resources.get("accelerator", "nvidia.com/gpu"))
            trained.set_accelerator_limit(int(resources["gpus"]))
        evaluation = evaluate_op(
            params_json=params_json, model=trained.outputs["model"], dataset=data.outputs["dataset"]
        )
        registered = register_op(
            params_json=params_json, model=trained.outputs["model"], metrics_json=evaluation.outputs["metrics_json"]
        )
        gate = gate_op(
            params_json=params_json, predictions=evaluation.outputs["predictions"], registered=registered.outputs["registered"]
        )
        with dsl.If(gate.outputs["Output"] == True, name="promoted"):  # noqa: E712  (KFP condition syntax)
            package_op(params_json=params_json, decision=gate.outputs["decision"])
        return gate.outputs["Output"]

    return nerflow_pipeline


def params_json(path: str | Path) -> str:
    from nerflow.params import load_params

    return json.dumps(load_params(path))


def compile_pipeline(out: str | Path = "pipeline.yaml", params_path: str | Path = "params.yaml") -> Path:
    from kfp import compiler

    from nerflow.params import load_params

    resources = load_params(params_path)["train"].get("resources")
    compiler.Compiler().compile(make_pipeline(resources), str(out))
    return Path(out)


def run_locally(params_path: str | Path = "params.yaml", pipeline_root: str | Path = "kfp-runs") -> dict:
    """Run the whole pipeline in this interpreter with kfp.local; returns the gate decision and
    where the artifacts went."""
    from kfp import local

    from nerflow.params import bentoml_home, load_params

    params = load_params(params_path)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ["BENTOML_HOME"] = bentoml_home(params["registry"])
    root = Path(pipeline_root).resolve()
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root))
    run = make_pipeline(params["train"].get("resources"))(params_json=json.dumps(params))
    return {"promoted": bool(run.output), "pipeline_root": str(root)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("compile", help="write the pipeline spec (YAML)")
    c.add_argument("--out", default="pipeline.yaml")
    c.add_argument("--params", default="params.yaml", help="read for the train task's resource requests")
    r = sub.add_parser("run", help="run the whole pipeline locally (kfp.local, no cluster)")
    r.add_argument("--params", default="params.yaml")
    r.add_argument("--pipeline-root", default="kfp-runs")
    for name in ("submit", "schedule"):
        s = sub.add_parser(name, help=f"{name} a run on a KFP host")
        s.add_argument("--host", required=True, help="KFP API endpoint, e.g. https://kfp.example.com")
        s.add_argument("--params", default="params.yaml")
        s.add_argument("--experiment", default="nerflow")
        s.add_argument("--namespace", default="kubeflow")
        if name == "schedule":
            s.add_argument("--cron", default="0 0 3 * * 1", help="KFP cron, 6 fields with seconds (default: Mondays 03:00)")
            s.add_argument("--job-name", default="nerflow-retrain")
            s.add_argument("--pipeline-root", default=None, help="where the runs' artifacts go (default: the cluster's)")
    args = parser.parse_args(argv)

    if args.command == "compile":
        print(f"wrote {compile_pipeline(args.out, args.params)}")
    elif args.command == "run":
        result = run_locally(args.params, args.pipeline_root)
        print(json.dumps(result))
    else:
        import kfp

        client = kfp.Client(host=args.host, namespace=args.namespace)
        spec = compile_pipeline(Path(os.environ.get("TMPDIR", "/tmp")) / "nerflow-pipeline.yaml", args.params)
        arguments = {"params_json": params_json(args.params)}
        if args.command == "submit":
            run = client.create_run_from_pipeline_package(str(spec), arguments=arguments, experiment_name=args.experiment)
            print(f"submitted run {run.run_id}")
        else:
            experiment = client.create_experiment(args.experiment, namespace=args.namespace)
            # one run at a time, no back-fill of missed ticks: a retrain is a whole pipeline
            job = client.create_recurring_run(
                experiment_id=experiment.experiment_id, job_name=args.job_name, cron_expression=args.cron,
                pipeline_package_path=str(spec), params=arguments, max_concurrency=1, no_catchup=True,
                pipeline_root=args.pipeline_root,
            )
            print(f"scheduled recurring run {job.recurring_run_id} ({args.cron})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
