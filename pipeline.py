"""The nerflow Kubeflow pipeline: source -> data -> validate -> preprocess -> train -> evaluate -> register -> gate -> package.

    python pipeline.py compile [--out pipeline.yaml]        write the pipeline spec
    python pipeline.py run [--containers]                   run the whole pipeline locally (no cluster)
    python pipeline.py submit --host URL [--repo URL]       start a run on a KFP host
    python pipeline.py schedule --host URL --cron "..."     a recurring run on a KFP host

A run names a git repository and a revision (default: this checkout and HEAD). The params file
and every corpus source inside the repository are read there through DVC (from the DVC remote
for what DVC tracks), so a run is reproducible from (repository, revision); the model records
the commit and the data version. Components run in the nerflow image (``make image``; set
NERFLOW_IMAGE / NERFLOW_GPU_IMAGE to where you pushed it): on the cluster, locally with
``run --containers`` (kfp.local.DockerRunner), or in this interpreter with plain ``run``.
register, gate and package share the registry: a volume (a PVC on a cluster) at /registry.
"""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from kfp import dsl

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
from components.steps import (  # noqa: E402
    GPU_IMAGE,
    IMAGE,
    data_op,
    evaluate_op,
    gate_op,
    package_op,
    preprocess_op,
    register_op,
    source_op,
    train_gpu_op,
    train_op,
    validate_op,
)

PIPELINE_NAME = "nerflow"
REGISTRY_MOUNT = "/registry"  # where the registry volume is mounted in register, gate and package
REGISTRY_PVC = "nerflow-registry"
IMAGE_UID = 1000  # the user the nerflow image runs as (Dockerfile)


def make_pipeline(resources: dict | None = None, registry_mount: str | None = REGISTRY_MOUNT,
                  registry_pvc: str | None = None, credentials_secret: str | None = None):
    """The pipeline. ``resources`` (``train.resources`` in params: cpu, memory, gpus,
    accelerator, processes) are compiled into the train task: GPUs select the GPU image, and
    more than one process runs training under torchrun. ``registry_mount``: the registry
    volume's path in register, gate and package ($BENTOML_HOME there; None: the params'
    ``registry.bentoml_home``, for runs in this interpreter); ``registry_pvc``: the
    PersistentVolumeClaim mounted there on a cluster. ``credentials_secret``: a Kubernetes
    Secret whose AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY let source and data read an S3 DVC
    remote. gate and package are never cached: their result depends on the registry's
    production model, not only on their inputs; source neither: a branch moves."""
    from nerflow.core.config import Resources

    res = Resources.model_validate(resources or {})

    def on_registry(task):
        if registry_mount:
            task.set_env_variable("BENTOML_HOME", registry_mount)
        if registry_pvc:
            from kfp import kubernetes

            kubernetes.mount_pvc(task, pvc_name=registry_pvc, mount_path=registry_mount or REGISTRY_MOUNT)
        return task

    def with_credentials(task):
        if credentials_secret:
            from kfp import kubernetes

            kubernetes.use_secret_as_env(task, secret_name=credentials_secret, secret_key_to_env={
                "AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY"})
        return task

    @dsl.pipeline(name=PIPELINE_NAME, description="NER corpus in, gated and packaged NER model out")
    def nerflow_pipeline(repo: str, revision: str = "HEAD", params_file: str = "params.yaml", dvc_remote: str = "") -> bool:
        source = with_credentials(source_op(repo=repo, revision=revision, params_file=params_file, dvc_remote=dvc_remote))
        source.set_caching_options(False)
        out = source.outputs
        data = with_credentials(data_op(data_params=out["data_params"], repo=repo, revision=revision, dvc_remote=dvc_remote,
                                        data_version=out["data_version"]))
        validation = validate_op(validate_params=out["validate_params"], dataset=data.outputs["dataset"])
        features = preprocess_op(preprocess_params=out["preprocess_params"], dataset=data.outputs["dataset"],
                                 validation_report=validation.outputs["report"])
        trained = (train_gpu_op if res.gpus else train_op)(train_params=out["train_params"], features=features.outputs["features"])
        trained.set_cpu_request(res.cpu).set_memory_request(res.memory)
        if res.gpus:
            trained.set_accelerator_type(res.accelerator).set_accelerator_limit(res.gpus)
        if res.nproc() > 1:
            trained.set_env_variable("NERFLOW_NPROC", str(res.nproc()))
            if res.gpus:  # NCCL between the processes needs more shared memory than a pod's default 64 MB
                from kfp import kubernetes

                kubernetes.empty_dir_mount(trained, volume_name="dshm", mount_path="/dev/shm", medium="Memory")
        evaluation = evaluate_op(evaluate_params=out["evaluate_params"], model=trained.outputs["model"],
                                 dataset=data.outputs["dataset"])
        registered = on_registry(register_op(registry_params=out["registry_params"], train_params=out["train_params"],
                                             model=trained.outputs["model"], metrics_json=evaluation.outputs["metrics_json"],
                                             dataset=data.outputs["dataset"]))
        gate = on_registry(gate_op(gate_params=out["gate_params"], registry_params=out["registry_params"],
                                   predictions=evaluation.outputs["predictions"], registered=registered.outputs["registered"]))
        gate.set_caching_options(False)
        with dsl.If(gate.outputs["Output"] == True, name="promoted"):  # noqa: E712  (KFP condition syntax)
            on_registry(package_op(registry_params=out["registry_params"], package_params=out["package_params"],
                                   decision=gate.outputs["decision"])).set_caching_options(False)
        return gate.outputs["Output"]

    return nerflow_pipeline


def compile_pipeline(out: str | Path = "pipeline.yaml", params_path: str | Path = "params.yaml",
                     registry_pvc: str | None = REGISTRY_PVC, credentials_secret: str | None = None) -> Path:
    """The pipeline spec for a cluster: the train task's resources from ``params_path`` (this
    checkout's), the registry PVC mounted in register, gate and package."""
    from kfp import compiler

    from nerflow.core.paths import load_params

    resources = load_params(params_path).train.resources.to_dict()
    pipeline = make_pipeline(resources, REGISTRY_MOUNT, registry_pvc, credentials_secret)
    compiler.Compiler().compile(pipeline, str(out))
    return Path(out)


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=30).stdout.strip()


def _local_remote(repo: Path) -> str:
    """The checkout's default DVC remote (a relative folder made absolute), or ''."""
    from dvc.exceptions import NotDvcRepoError
    from dvc.repo import Repo

    if not (repo / ".dvc").is_dir():
        return ""
    try:
        dvc_repo = Repo(str(repo))
    except NotDvcRepoError:
        return ""
    with dvc_repo:
        config = dvc_repo.config
        name = config["core"].get("remote")
        return str(config["remote"][name]["url"]) if name else ""


def _unreadable(path: Path, uid: int = IMAGE_UID) -> Path | None:
    """The first file or folder under ``path`` that the image's user cannot read, or None."""
    import stat

    for item in [path, *(path.rglob("*") if path.is_dir() else [])]:
        st = item.stat()
        need = (stat.S_IROTH | stat.S_IXOTH) if item.is_dir() else stat.S_IROTH
        owner = (stat.S_IRUSR | stat.S_IXUSR) if item.is_dir() else stat.S_IRUSR
        if not (st.st_mode & need == need or (st.st_uid == uid and st.st_mode & owner == owner)):
            return item
    return None


def _docker_runner(mounts: dict[str, tuple[str, bool]], owned: list[Path], images: list[str]):
    """kfp.local.DockerRunner with these bind mounts ({container path: (host path, read only)}),
    once the ``images`` the tasks run in are here. The image runs as IMAGE_UID: folders it writes
    are handed to that user when we are root."""
    import docker
    from docker.types import Mount
    from kfp import local

    from nerflow import NerflowError

    try:
        client = docker.from_env()
        client.ping()
    except Exception as exc:  # no daemon, no permission
        raise NerflowError(f"docker: cannot reach the Docker daemon ({exc}); start dockerd (make docker)") from None
    for image in images:
        try:
            client.images.get(image)
        except docker.errors.ImageNotFound:
            raise NerflowError(f"{image}: no such image here; build it with `make image` "
                               "(or set NERFLOW_IMAGE to one you have)") from None
    if os.getuid() == 0:
        for folder in owned:
            for path in [folder, *folder.rglob("*")]:
                os.lchown(path, IMAGE_UID, IMAGE_UID)
    return local.DockerRunner(mounts=[Mount(target, source, type="bind", read_only=ro)
                                      for target, (source, ro) in mounts.items()])


def _absent_remote(repo: str, revision: str, params, remote: str) -> str:
    """A local DVC remote folder that does not exist (a fresh clone: nothing pushed yet) is left
    out when the corpus is not read from it (''); a corpus DVC tracks needs it: one clear error."""
    from nerflow import NerflowError
    from nerflow.orchestration.versioned import dvc_tracked, opened

    with opened(repo, revision) as fs:
        tracked = dvc_tracked(params.data, fs)
    if tracked:
        raise NerflowError(f"the DVC remote {remote} does not exist, and DVC tracks the corpus "
                           f"({', '.join(tracked)}): `dvc push` it there first, or name another remote with --dvc-remote")
    print(f"note: the DVC remote {remote} does not exist yet; not mounted: this corpus is not read from it",
          file=sys.stderr)
    return ""


def run_locally(repo: str | Path = ROOT, revision: str = "HEAD", params_file: str = "params.yaml",
                pipeline_root: str | Path = "kfp-runs", caching: bool = True, containers: bool = False,
                dvc_remote: str | None = None, registry: str | Path | None = None, mounts: tuple = ()) -> dict:
    """Run the whole pipeline on this machine with kfp.local at (repo, revision): in this
    interpreter, or with ``containers`` each component in the nerflow image (the repository,
    a local DVC remote and ``mounts`` bind-mounted read-only at their own paths, the registry
    folder at /registry). Returns the gate decision, the commit and where the artifacts went.
    With ``caching``, a task whose inputs did not change is not run again."""
    from kfp import local

    from nerflow import NerflowError
    from nerflow.core.paths import configure
    from nerflow.orchestration.versioned import read_params

    repo_path = Path(repo).resolve() if "://" not in str(repo) else None
    if dvc_remote is None:
        dvc_remote = _local_remote(repo_path) if repo_path else ""
    params, commit = read_params(str(repo), revision, params_file, dvc_remote or None)  # fails here, before any task
    configure()
    if repo_path is not None:
        changed = _git(repo_path, "status", "--porcelain", "--untracked-files=no")
        if changed:
            print(f"note: {repo_path} has uncommitted changes; this run reads {revision} = {commit[:12]}:\n{changed}",
                  file=sys.stderr)
    if containers and dvc_remote and "://" not in dvc_remote and not Path(dvc_remote).exists():
        dvc_remote = _absent_remote(str(repo), revision, params, dvc_remote)
    home = Path(params.registry.bentoml_home)
    registry = Path(registry or (home if home.is_absolute() else (repo_path or Path.cwd()) / home)).resolve()
    registry.mkdir(parents=True, exist_ok=True)
    root = Path(pipeline_root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    arguments = {"repo": str(repo_path or repo), "revision": revision, "params_file": params_file,
                 "dvc_remote": dvc_remote}
    resources = params.train.resources.to_dict()
    if containers:
        binds = {REGISTRY_MOUNT: (str(registry), False)}
        if repo_path is not None:
            binds[str(repo_path)] = (str(repo_path), True)
        if dvc_remote and "://" not in dvc_remote:
            binds[dvc_remote] = (dvc_remote, True)
        for extra in mounts:
            path = Path(extra).resolve()
            if not path.exists():
                raise NerflowError(f"--mount {extra}: no such file or folder")
            bad = _unreadable(path)
            if bad is not None:
                raise NerflowError(f"--mount {extra}: {bad} is not readable by the image's user (uid {IMAGE_UID}); "
                                   f"chmod -R a+rX {path}")
            binds[str(path)] = (str(path), True)
        runner = _docker_runner(binds, [root, registry], [IMAGE, GPU_IMAGE] if resources.get("gpus") else [IMAGE])
        local.init(runner=runner, pipeline_root=str(root), enable_caching=caching)
        pipeline = make_pipeline(resources, REGISTRY_MOUNT)
    else:
        os.environ["BENTOML_HOME"] = str(registry)
        local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root), enable_caching=caching)
        pipeline = make_pipeline(resources, registry_mount=None)
    run = pipeline(**arguments)
    return {"promoted": bool(run.output), "commit": commit, "pipeline_root": str(root), "registry": str(registry)}


def parser() -> argparse.ArgumentParser:
    """The command line: compile, run, submit, schedule."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("compile", help="write the pipeline spec (YAML)")
    c.add_argument("--out", default="pipeline.yaml")

    def source_args(p, remote_repo: bool) -> None:
        p.add_argument("--repo", default=None if remote_repo else str(ROOT),
                       help="git repository the run reads params and data from: a path, file:// or https:// URL "
                            + ("(default: this checkout's origin)" if remote_repo else "(default: this checkout)"))
        p.add_argument("--params", default="params.yaml", help="params file, a path inside the repository")
        p.add_argument("--dvc-remote", default=None,
                       help="DVC remote URL replacing the repository's default one (s3://..., a folder)")

    def cluster_args(p) -> None:
        p.add_argument("--registry-pvc", default=REGISTRY_PVC,
                       help=f"PersistentVolumeClaim (ReadWriteMany) holding the registry, mounted at {REGISTRY_MOUNT}")
        p.add_argument("--credentials-secret", default=None,
                       help="Secret with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY for an S3 DVC remote")

    c.add_argument("--params", default="params.yaml", help="read for the train task's resource requests")
    cluster_args(c)
    r = sub.add_parser("run", help="run the whole pipeline on this machine (kfp.local, no cluster)")
    source_args(r, remote_repo=False)
    r.add_argument("--revision", default="HEAD", help="commit, branch or tag (default: HEAD)")
    r.add_argument("--pipeline-root", default="kfp-runs")
    r.add_argument("--no-cache", action="store_true", help="run every task, even those whose inputs did not change")
    r.add_argument("--containers", action="store_true",
                   help="run each component in the nerflow image (kfp.local.DockerRunner), as on a cluster")
    r.add_argument("--registry", default=None, help="registry folder (default: the params' registry.bentoml_home)")
    r.add_argument("--mount", action="append", default=[],
                   help="with --containers: a host path the params name (a model folder, say), mounted read-only")
    for name in ("submit", "schedule"):
        s = sub.add_parser(name, help=f"{name} a run on a KFP host")
        s.add_argument("--host", required=True, help="KFP API endpoint, e.g. https://kfp.example.com")
        source_args(s, remote_repo=True)
        s.add_argument("--revision", default=None,
                       help="commit, branch or tag (default: this checkout's HEAD commit for submit, its branch for "
                            "schedule, so each scheduled run takes the branch's newest commit)")
        cluster_args(s)
        s.add_argument("--experiment", default="nerflow")
        s.add_argument("--namespace", default="kubeflow")
        if name == "schedule":
            s.add_argument("--cron", default="0 0 3 * * 1", help="KFP cron, 6 fields with seconds (default: Mondays 03:00)")
            s.add_argument("--job-name", default="nerflow-retrain")
            s.add_argument("--pipeline-root", default=None, help="where the runs' artifacts go (default: the cluster's)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)

    from nerflow import NerflowError

    try:
        if args.command == "compile":
            print(f"wrote {compile_pipeline(args.out, args.params, args.registry_pvc, args.credentials_secret)}")
        elif args.command == "run":
            result = run_locally(args.repo, args.revision, args.params, args.pipeline_root, caching=not args.no_cache,
                                 containers=args.containers, dvc_remote=args.dvc_remote, registry=args.registry,
                                 mounts=tuple(args.mount))
            print(json.dumps(result))
        else:
            return _remote(args)
    except NerflowError as exc:
        print(f"pipeline: error: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:  # kfp.local: a task failed; its own error is in the log above
        if "finished with status FAILURE" not in str(exc):
            raise
        print(f"pipeline: error: {exc} (its error is in the task's log above)", file=sys.stderr)
        return 1
    return 0


def _remote(args) -> int:
    """submit / schedule on a KFP host."""
    import kfp

    from nerflow import NerflowError

    repo = args.repo or _git(ROOT, "remote", "get-url", "origin")
    if not repo:
        raise NerflowError("no --repo given and this checkout has no origin remote: name the git URL the cluster reads")
    if args.command == "submit":
        revision = args.revision or _git(ROOT, "rev-parse", "HEAD")
    else:
        revision = args.revision or _git(ROOT, "rev-parse", "--abbrev-ref", "HEAD")
    arguments = {"repo": repo, "revision": revision, "params_file": args.params, "dvc_remote": args.dvc_remote or ""}
    client = kfp.Client(host=args.host, namespace=args.namespace)
    spec = compile_pipeline(Path(os.environ.get("TMPDIR", "/tmp")) / "nerflow-pipeline.yaml", ROOT / args.params,
                            args.registry_pvc, args.credentials_secret)
    if args.command == "submit":
        run = client.create_run_from_pipeline_package(str(spec), arguments=arguments, experiment_name=args.experiment)
        print(f"submitted run {run.run_id} ({repo}@{revision})")
    else:
        experiment = client.create_experiment(args.experiment, namespace=args.namespace)
        # one run at a time, no back-fill of missed ticks: a retrain is a whole pipeline
        job = client.create_recurring_run(
            experiment_id=experiment.experiment_id, job_name=args.job_name, cron_expression=args.cron,
            pipeline_package_path=str(spec), params=arguments, max_concurrency=1, no_catchup=True,
            pipeline_root=args.pipeline_root,
        )
        print(f"scheduled recurring run {job.recurring_run_id} ({args.cron}; {repo}@{revision})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
