"""The pipeline driven for real by `dvc repro` (temporary git repo) and by a local KFP run."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, write_params

BIN = Path(sys.executable).parent


def sh(cmd, cwd, check=True, timeout=900):
    env = {**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '')}", "DVC_NO_ANALYTICS": "1"}
    env.pop("BENTOML_HOME", None)
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env, timeout=timeout, shell=isinstance(cmd, str))
    if check and r.returncode != 0:
        raise AssertionError(f"{cmd} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r


@pytest.fixture()
def dvc_repo(tmp_path, params):
    repo = tmp_path / "repo"
    repo.mkdir()
    for item in ("dvc.yaml", "src", "serving"):
        (shutil.copytree if (ROOT / item).is_dir() else shutil.copy)(ROOT / item, repo / item)
    write_params(params, repo / "params.yaml")
    sh("git init -q && git config user.email t@t && git config user.name t && dvc init -q", repo)
    shutil.copy(ROOT / ".dvc/config", repo / ".dvc/config")  # the project's DVC config: its default local remote
    sh("git add -A && git commit -qm init", repo)
    return repo


def test_repro_then_nothing_curves_experiments_and_retrain_gates_a_new_data_version(dvc_repo, params, conll_dir):
    """One DVC repo through a user's week (one scenario: each whole pipeline run costs ~1 min here).

    dvc repro runs every stage, then nothing; the training curves are DVC plots; a params
    experiment re-runs from the stage that reads the key and no earlier; KFP-only keys change
    nothing; `nerflow retrain` does nothing on unchanged data and gates a new data version."""
    corpus = dvc_repo / "corpus"
    corpus.mkdir()
    for split in ("train", "validation", "test"):
        shutil.copy(conll_dir / f"{split}.txt", corpus / f"{split}.txt")
        params["data"][split] = f"corpus/{split}.txt"
    params["gate"].update(min_f1=0.0, max_type_regression=1.0)
    write_params(params, dvc_repo / "params.yaml")
    first = sh(["dvc", "repro"], dvc_repo)
    for stage in ("data", "validate", "preprocess", "train", "evaluate", "register", "gate", "package"):
        assert f"Running stage '{stage}'" in first.stdout
    metrics = json.loads(sh(["dvc", "metrics", "show", "--json"], dvc_repo).stdout)
    f1 = metrics[""]["data"]["reports/metrics.json"]["data"]["f1"]
    assert f1 == json.loads((dvc_repo / "reports/metrics.json").read_text())["f1"]
    record = json.loads((dvc_repo / "reports/package.json").read_text())
    assert record["packaged"] is True and record["model_tag"].startswith("nerflow-ner:")
    champion = json.loads((dvc_repo / "reports/gate.json").read_text())["challenger"]["tag"]
    assert record["model_tag"] == champion
    second = sh(["dvc", "repro"], dvc_repo)  # the corpus is re-read (always), the same: nothing else runs
    assert [line for line in second.stdout.splitlines() if line.startswith("Running stage")] == ["Running stage 'data':"]
    assert json.loads(sh(["dvc", "status", "--json"], dvc_repo).stdout) == {"data": ["always changed"]}

    # the training curves and the confusion matrix are DVC plots
    curves = dvc_repo / "reports/training/plots/metrics"
    loss = (curves / "train/loss.tsv").read_text().splitlines()
    assert loss[0].split("\t") == ["step", "loss"] and len(loss) >= 3  # every logging step of 8
    assert (curves / "dev/f1.tsv").read_text().splitlines()[0].split("\t") == ["step", "f1"]
    plots = json.loads(sh(["dvc", "plots", "show", "--json", "--split"], dvc_repo).stdout)
    assert {"Training loss", "Dev F1 per epoch"} <= set(plots["data"]) and not plots.get("errors")

    # DVC users' habits: a params override as an experiment, listed with its metrics; it re-runs
    # from the stage that reads the key, and no earlier
    sh("git add -A && git commit -qm baseline", dvc_repo)
    exp = sh(["dvc", "exp", "run", "-n", "strict-gate", "-S", "gate.min_f1=1.01"], dvc_repo)
    assert "Running stage 'gate'" in exp.stdout and "Running stage 'train'" not in exp.stdout
    assert json.loads((dvc_repo / "reports/package.json").read_text())["packaged"] is False
    shown = json.loads(sh(["dvc", "exp", "show", "--json"], dvc_repo).stdout)
    (run,) = [e for rev in shown for e in (rev.get("experiments") or []) if e.get("name") == "strict-gate"]
    data = run["revs"][0]["data"]
    assert data["params"]["params.yaml"]["data"]["gate"]["min_f1"] == 1.01
    assert data["metrics"]["reports/metrics.json"]["data"]["f1"] == f1
    # a KFP-only or cosmetic train key changes nothing DVC tracks, and retrain does nothing
    params["gate"]["min_f1"] = 1.01
    params["train"].update(resources={"cpu": "8", "memory": "32G", "gpus": 2, "accelerator": "nvidia.com/gpu"},
                           progress=True, logging_steps=3)
    write_params(params, dvc_repo / "params.yaml")
    assert json.loads(sh(["dvc", "status", "--json"], dvc_repo).stdout) == {"data": ["always changed"]}
    retrain = [str(BIN / "nerflow"), "retrain"]
    unchanged = sh(retrain, dvc_repo)
    assert "retrain: nothing changed" in unchanged.stdout and "Running stage" not in unchanged.stdout
    assert json.loads((dvc_repo / "reports/gate.json").read_text())["challenger"]["tag"] == champion

    # a new data version: the corpus file edited in place (half of the train sentences dropped);
    # the challenger is trained and gated against the champion (and refused: min_f1 is 1.01 now)
    text = (corpus / "train.txt").read_text()
    blocks = text.split("\n\n")
    (corpus / "train.txt").write_text("\n\n".join(blocks[: len(blocks) // 2]) + "\n")
    third = sh(retrain, dvc_repo)
    assert "retrain: changed since the last run: validate" in third.stdout
    assert "Running stage 'train'" in third.stdout and "Running stage 'gate'" in third.stdout
    decision = json.loads((dvc_repo / "reports/gate.json").read_text())
    assert decision["champion"]["tag"] == champion and decision["challenger"]["tag"] != champion
    assert decision["promote"] is False and f"retrain: REFUSED {decision['challenger']['tag']}" in third.stdout
    assert "bootstrap" in decision and {c["check"] for c in decision["checks"]} >= {"beats_champion", "bootstrap"}


def test_raw_corpus_and_outputs_round_trip_through_the_default_remote(dvc_repo):
    sh(["dvc", "repro", "validate"], dvc_repo)
    manifest = json.loads((dvc_repo / "data/dataset/manifest.json").read_text())
    raw = sorted(p.name for p in (dvc_repo / "data/dataset/raw").iterdir())
    assert raw == ["0-train.txt", "1-validation.txt", "2-test.txt"]
    sh(["dvc", "push"], dvc_repo)
    assert (dvc_repo / "dvc-storage" / "files" / "md5").is_dir()
    shutil.rmtree(dvc_repo / "data")
    shutil.rmtree(dvc_repo / ".dvc" / "cache")
    sh(["dvc", "pull", "data", "validate"], dvc_repo)
    assert json.loads((dvc_repo / "data/dataset/manifest.json").read_text()) == manifest
    assert (dvc_repo / "data/dataset/raw/0-train.txt").read_text().startswith("-DOCSTART-")
    assert json.loads(sh(["dvc", "status", "--json", "data", "validate"], dvc_repo).stdout) == {"data": ["always changed"]}


def test_validation_failure_stops_dvc_before_training(dvc_repo, params, conll_dir):
    bad = dvc_repo / "train.txt"
    bad.write_text((conll_dir / "train.txt").read_text() + "\nIn IN B-PP O\nParis NNP B-NP I-LOC\n")
    params["data"]["train"] = str(bad)
    write_params(params, dvc_repo / "params.yaml")
    r = sh(["dvc", "repro"], dvc_repo, check=False)
    assert r.returncode != 0
    assert "valid IOB2" in r.stderr and f"{bad}:" in r.stderr
    assert (dvc_repo / "reports/validation/report.html").exists()
    assert not (dvc_repo / "data/features").exists() and not (dvc_repo / "models/candidate").exists()


def versioned_repo(tmp_path, params, conll_dir) -> Path:
    """A git repository whose corpus is tracked by DVC (pushed to a local remote) and whose
    params.yaml names it by its path in the repository: what a KFP run reads at a revision."""
    repo = tmp_path / "versioned"
    (repo / "corpus").mkdir(parents=True)
    for split in ("train", "validation", "test"):
        shutil.copy(conll_dir / f"{split}.txt", repo / "corpus" / f"{split}.txt")
        params["data"][split] = f"corpus/{split}.txt"
    write_params(params, repo / "params.yaml")
    sh("git init -q && git config user.email t@t && git config user.name t && dvc init -q && "
       f"dvc remote add -d storage {tmp_path / 'dvc-remote'} && dvc add -q corpus && git add -A && git commit -qm v1 && "
       "dvc push -q", repo)
    shutil.rmtree(repo / ".dvc" / "cache")  # the corpus is in the remote and nowhere else
    return repo


def commit(repo: Path, params: dict, message: str) -> str:
    write_params(params, repo / "params.yaml")
    sh(f"dvc add -q corpus && dvc push -q && git add -A && git commit -qm '{message}'", repo)
    return sh("git rev-parse HEAD", repo).stdout.strip()


def kfp_run(repo, root, *extra, check=True):
    """`pipeline.py run` at the repository's HEAD; returns the process and the folders of the
    runs so far (one per run, holding a folder per task that ran: a cached task has none)."""
    r = sh([sys.executable, str(ROOT / "pipeline.py"), "run", "--repo", str(repo), "--pipeline-root", str(root), *extra],
           ROOT, check=check)
    runs = sorted((p for p in root.iterdir() if not p.name.startswith(".")), key=lambda p: p.stat().st_mtime) \
        if root.exists() else []
    return r, runs


def check_gated_run(run_dir, params, promoted: bool) -> str:
    """The gate's decision in this run, the registry state it left, and package-op only if promoted."""
    from nerflow.release.registry import Registry

    tasks = {p.name for p in run_dir.iterdir()}
    assert ("package-op" in tasks) is promoted
    decision = json.loads((run_dir / "gate-op" / "decision").read_text())
    assert decision["promote"] is promoted
    tag = decision["challenger"]["tag"]
    registry = Registry("nerflow-ner", params["registry"]["bentoml_home"])
    assert registry.versions() == [tag]  # registered either way, once
    assert registry.production() == (tag if promoted else None)
    if promoted:
        record = json.loads((run_dir / "package-op" / "record").read_text())
        assert record["packaged"] and record["model_tag"] == tag
    return tag


def test_compiled_pipeline_has_per_task_images_resources_registry_volume_and_versioned_inputs(tmp_path):
    """The spec a cluster runs: the run's inputs are (repo, revision); source reads params and
    the data version there, data takes that version; train runs in the GPU image under torchrun
    when train.resources asks for two GPUs, the other tasks in the CPU image; register, gate
    and package mount the registry PVC."""
    import yaml

    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    p["train"]["resources"].update(gpus=2, cpu="8", memory="32G")
    pfile = write_params(p, tmp_path / "params.yaml")
    out = tmp_path / "pipeline.yaml"
    env = {"NERFLOW_IMAGE": "registry.example/nerflow:abc", "NERFLOW_GPU_IMAGE": "registry.example/nerflow-gpu:abc"}
    r = subprocess.run([sys.executable, str(ROOT / "pipeline.py"), "compile", "--out", str(out), "--params", str(pfile),
                        "--credentials-secret", "dvc-s3"], cwd=ROOT, capture_output=True, text=True,
                       env={**os.environ, **env}, timeout=300)
    assert r.returncode == 0, r.stderr
    spec, platform = yaml.safe_load_all(out.read_text())  # the pipeline spec, then its Kubernetes platform spec
    assert set(spec["root"]["inputDefinitions"]["parameters"]) == {"repo", "revision", "params_file", "dvc_remote"}
    tasks = spec["root"]["dag"]["tasks"]
    assert {"source-op", "data-op", "validate-op", "preprocess-op", "train-op", "evaluate-op", "register-op",
            "gate-op"} <= set(tasks)
    data_inputs = tasks["data-op"]["inputs"]["parameters"]
    assert data_inputs["data_version"]["taskOutputParameter"] == {"outputParameterKey": "data_version",
                                                                  "producerTask": "source-op"}
    assert data_inputs["revision"]["componentInputParameter"] == "revision"
    assert tasks["source-op"]["cachingOptions"] == {}  # never cached: a branch moves
    (condition,) = [t for t in tasks.values() if "triggerPolicy" in t]
    assert "gate-op-Output" in condition["triggerPolicy"]["condition"]
    assert set(spec["components"][condition["componentRef"]["name"]]["dag"]["tasks"]) == {"package-op"}
    executors = spec["deploymentSpec"]["executors"]
    images = {name: e["container"]["image"] for name, e in executors.items()}
    assert images.pop("exec-train-op") == env["NERFLOW_GPU_IMAGE"]
    assert set(images.values()) == {env["NERFLOW_IMAGE"]}
    train = executors["exec-train-op"]["container"]
    assert train["resources"]["cpuRequest"] == 8.0 and train["resources"]["memoryRequest"] == 32.0  # GB
    accelerator = train["resources"]["accelerator"]
    assert accelerator["count"] == "2" and accelerator["resourceType"] == "nvidia.com/gpu"
    assert {"name": "NERFLOW_NPROC", "value": "2"} in train["env"]
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for name in ("exec-register-op", "exec-gate-op", "exec-package-op"):
        assert k8s[name]["pvcMount"][0]["mountPath"] == "/registry" and k8s[name]["pvcMount"][0]["constant"] == "nerflow-registry"
        assert {"name": "BENTOML_HOME", "value": "/registry"} in executors[name]["container"]["env"]
    assert k8s["exec-train-op"]["emptyDirMounts"][0]["mountPath"] == "/dev/shm"
    for name in ("exec-source-op", "exec-data-op"):
        assert k8s[name]["secretAsEnv"][0]["secretName"] == "dvc-s3"
    assert all("pip install" not in " ".join(e["container"]["command"]) for e in executors.values())


def test_validation_failure_stops_the_kfp_run_before_training(params, tmp_path, conll_dir):
    repo = versioned_repo(tmp_path, params, conll_dir)
    with open(repo / "corpus" / "train.txt", "a", encoding="utf-8") as fh:
        fh.write("\nIn IN B-PP O\nParis NNP B-NP I-LOC\n")
    commit(repo, params, "bad tag")
    r, (run_dir,) = kfp_run(repo, tmp_path / "kfp", check=False)
    assert r.returncode != 0
    assert "valid IOB2" in r.stdout + r.stderr and "corpus/train.txt@" in r.stdout + r.stderr
    tasks = {p.name for p in run_dir.iterdir()}
    assert "train-op" not in tasks and "preprocess-op" not in tasks
    results = json.loads((run_dir / "validate-op" / "report" / "results.json").read_text())
    assert results["success"] is False and (run_dir / "validate-op" / "report" / "report.html").exists()


def test_a_bad_param_at_the_revision_stops_the_run_before_any_task(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "params.yaml").write_text("data:\n  tag_colum: 1\n")
    sh("git init -q && git config user.email t@t && git config user.name t && git add -A && git commit -qm bad", repo)
    head = sh("git rev-parse HEAD", repo).stdout.strip()
    r, runs = kfp_run(repo, tmp_path / "kfp", check=False)
    assert r.returncode == 2 and not runs
    assert f"{repo}@{head[:12]}:params.yaml:2: data.tag_colum: unknown key; did you mean data.tag_column?" in r.stderr
    r, _ = kfp_run(repo, tmp_path / "kfp", "--revision", "no-such-branch", check=False)
    assert r.returncode == 2 and f"pipeline: error: {repo}@no-such-branch: cannot open the repository" in r.stderr
    assert r.stderr.count("\n") <= 2, r.stderr


def test_reading_a_revision_leaves_no_clone_behind(tmp_path, params):
    """DVC clones the repository into the temporary folder and keeps the clone (and a cache
    folder) for the process's life: a scheduled retrain would leave one per run."""
    from dvc.repo import open_repo

    from nerflow.orchestration.versioned import opened, read_params

    repo = tmp_path / "repo"
    repo.mkdir()
    write_params(params, repo / "params.yaml")
    sh("git init -q && git config user.email t@t && git config user.name t && git add -A && git commit -qm v1", repo)
    with opened(str(repo), "HEAD") as fs:
        left = [path for path, _ in open_repo.CLONES.values()] + list(open_repo.CACHE_DIRS.values())
        assert left and all(Path(p).is_dir() for p in left)  # a clone of the repository, in use
        with opened(str(repo), "HEAD") as inner:  # one inside another: the outer clone stays
            assert inner.read_text("params.yaml") == (repo / "params.yaml").read_text()
        assert all(Path(p).is_dir() for p in left)
        assert fs.read_text("params.yaml") == (repo / "params.yaml").read_text()
    assert not any(Path(p).exists() for p in left) and not open_repo.CLONES and not open_repo.CACHE_DIRS
    with pytest.raises(Exception, match="cannot open the repository"):
        read_params(str(repo), "no-such-branch")
    assert not open_repo.CLONES and not open_repo.CACHE_DIRS  # a failed open removes its clone too
