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
SECTIONS = ("data", "validate", "preprocess", "train", "evaluate", "registry", "gate", "package")


def make_pipeline(resources: dict | None = None, data_cache_key: str | None = None):
    """The pipeline, with the train task's resource requests (``train.resources`` in params:
    cpu, memory, gpus, accelerator; compiled in, not an input of the train component, so a
    change of resources re-trains nothing). Each task gets only the params sections it reads.
    gate and package are never cached: their result depends on the registry's production
    model, not only on their inputs. ``data_cache_key`` (local runs): the data task's cache key,
    from the data params and the corpus files' content, so an edited corpus is read again."""
    resources = resources or {}

    @dsl.pipeline(name=PIPELINE_NAME, description="NER corpus in, gated and packaged NER model out")
    def nerflow_pipeline(data_params: str, validate_params: str, preprocess_params: str, train_params: str,
                         evaluate_params: str, registry_params: str, gate_params: str, package_params: str) -> bool:
        data = data_op(data_params=data_params)
        if data_cache_key:
            data.set_caching_options(True, cache_key=data_cache_key)
        validation = validate_op(validate_params=validate_params, dataset=data.outputs["dataset"])
        features = preprocess_op(preprocess_params=preprocess_params, dataset=data.outputs["dataset"],
                                 validation_report=validation.outputs["report"])
        trained = train_op(train_params=train_params, features=features.outputs["features"])
        trained.set_cpu_request(str(resources.get("cpu", "2"))).set_memory_request(str(resources.get("memory", "8G")))
        if int(resources.get("gpus", 0) or 0) > 0:
            trained.set_accelerator_type(resources.get("accelerator", "nvidia.com/gpu"))
            trained.set_accelerator_limit(int(resources["gpus"]))
        evaluation = evaluate_op(evaluate_params=evaluate_params, model=trained.outputs["model"],
                                 dataset=data.outputs["dataset"])
        registered = register_op(registry_params=registry_params, train_params=train_params,
                                 model=trained.outputs["model"], metrics_json=evaluation.outputs["metrics_json"])
        gate = gate_op(gate_params=gate_params, registry_params=registry_params,
                       predictions=evaluation.outputs["predictions"], registered=registered.outputs["registered"])
        gate.set_caching_options(False)
        with dsl.If(gate.outputs["Output"] == True, name="promoted"):  # noqa: E712  (KFP condition syntax)
            package_op(registry_params=registry_params, package_params=package_params,
                       decision=gate.outputs["decision"]).set_caching_options(False)
        return gate.outputs["Output"]

    return nerflow_pipeline


def pipeline_arguments(params) -> dict:
    """The pipeline's inputs from validated params: one JSON text per section (train without
    the resources, which are compiled into the train task)."""
    sections = {name: params.section(name).to_dict() for name in SECTIONS}
    sections["train"].pop("resources")
    return {f"{name}_params": json.dumps(value, sort_keys=True) for name, value in sections.items()}


def corpus_fingerprint(data_params) -> str:
    """sha256 of the data params and the content of every corpus file they name."""
    import hashlib

    from nerflow.params import resolve_path

    digest = hashlib.sha256(json.dumps(data_params.to_dict(), sort_keys=True).encode())
    specs = [data_params.path] if data_params.path else [data_params.train, data_params.validation, data_params.test]
    for spec in specs:
        root = resolve_path(spec)
        for path in sorted(root.rglob("*")) if root.is_dir() else [root]:
            if path.is_file():
                digest.update(str(path.relative_to(root) if root.is_dir() else path.name).encode())
                with open(path, "rb") as fh:
                    for block in iter(lambda: fh.read(1 << 20), b""):
                        digest.update(block)
    return digest.hexdigest()


def compile_pipeline(out: str | Path = "pipeline.yaml", params_path: str | Path = "params.yaml") -> Path:
    from kfp import compiler

    from nerflow.params import load_params

    resources = load_params(params_path).train.resources.to_dict()
    compiler.Compiler().compile(make_pipeline(resources), str(out))
    return Path(out)


def run_locally(params_path: str | Path = "params.yaml", pipeline_root: str | Path = "kfp-runs",
                caching: bool = True) -> dict:
    """Run the whole pipeline in this interpreter with kfp.local; returns the gate decision and
    where the artifacts went. With ``caching``, a task whose inputs did not change is not run
    again (its earlier outputs under the same pipeline root are reused)."""
    from kfp import local

    from nerflow.params import configure, load_params

    params = load_params(params_path)
    configure(params)
    root = Path(pipeline_root).resolve()
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root), enable_caching=caching)
    key = corpus_fingerprint(params.data) if caching else None
    run = make_pipeline(params.train.resources.to_dict(), key)(**pipeline_arguments(params))
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
    r.add_argument("--no-cache", action="store_true", help="run every task, even those whose inputs did not change")
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
        result = run_locally(args.params, args.pipeline_root, caching=not args.no_cache)
        print(json.dumps(result))
    else:
        import kfp

        client = kfp.Client(host=args.host, namespace=args.namespace)
        spec = compile_pipeline(Path(os.environ.get("TMPDIR", "/tmp")) / "nerflow-pipeline.yaml", args.params)
        from nerflow.params import load_params

        arguments = pipeline_arguments(load_params(args.params))
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
