"""The KFP pipeline with every component in the nerflow image (kfp.local.DockerRunner), as on
a cluster: the corpus read through DVC at a git revision from a mounted remote, the registry on
a mounted volume written by the image's non-root user, both gate branches (a committed gate and
resources edit re-runs only source, gate and package), the model's provenance; then the
promoted Bento served from that volume and as its own image; then bad data stopping a run.

Needs a Docker daemon and the image (`make test` runs `make docker image` first). Without them
the test is skipped with the reason, except in CI (CI=true), where it fails.
"""

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml
from conftest import ROOT, bentoml_server, free_port, run_cli, wait_ready, write_params
from test_dvc_kfp import check_gated_run, commit, kfp_run, sh, versioned_repo

BENTO_BASE = "nerflow-bento-base:bookworm"  # make bento-base
EVERYTHING = {"source-op", "data-op", "validate-op", "preprocess-op", "train-op", "evaluate-op", "register-op", "gate-op"}


def image_or_skip() -> str:
    sys.path.insert(0, str(ROOT))
    from components.steps import IMAGE

    reason = None
    try:
        import docker

        client = docker.from_env()
        client.ping()
        try:
            client.images.get(IMAGE)
        except docker.errors.ImageNotFound:
            reason = f"the image {IMAGE} is not built (make image)"
    except Exception as exc:  # no daemon, no permission
        reason = f"no Docker daemon here ({exc.__class__.__name__}: {exc}); `make docker` installs and starts one"
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the containerized pipeline: {reason}")
        pytest.skip(reason)
    return IMAGE


def test_pipeline_in_containers_both_gate_branches_then_the_bento_serves_from_the_registry_volume(params, tmp_path,
                                                                                                   conll_dir):
    image = image_or_skip()
    model = params["train"]["model"]  # the tiny model: a host folder the params name, mounted read-only
    params["train"]["max_steps"] = 120  # long enough to find entities
    params["gate"]["min_f1"] = 1.01
    params["package"]["build_bento"] = True
    params["package"]["bento_base_image"] = BENTO_BASE  # no registry here: Debian's python3 + uv + CPU torch
    repo = versioned_repo(tmp_path, params, conll_dir)
    root = tmp_path / "kfp"
    if os.getuid() == 0:  # pytest made the model's folder private to root: refused, saying what to do
        r, _ = kfp_run(repo, tmp_path / "refused", "--containers", "--mount", model, check=False)
        assert r.returncode == 2 and "not readable by the image's user (uid 1000); chmod -R a+rX" in r.stderr, r.stderr
        subprocess.run(["chmod", "-R", "a+rX", model], check=True)
    registry = Path(params["registry"]["bentoml_home"])

    start = time.time()
    r, runs = kfp_run(repo, root, "--containers", "--mount", model)
    refused_s = time.time() - start
    assert json.loads(r.stdout.strip().splitlines()[-1])["promoted"] is False
    assert {p.name for p in runs[-1].iterdir()} == EVERYTHING
    assert r.stdout.count(f"Found image '{image}'") == len(EVERYTHING)  # every task ran in the image
    tag = check_gated_run(runs[-1], params, promoted=False)
    manifest = json.loads((runs[-1] / "data-op" / "dataset" / "manifest.json").read_text())
    assert all(v.startswith("md5:") for v in manifest["origin"]["sources"].values())  # from the DVC remote
    # written in the container by the image's user (uid 1000), not root
    assert (registry / "models" / "nerflow-ner").stat().st_uid == 1000
    assert (runs[-1] / "train-op" / "model").stat().st_uid == 1000

    first = manifest["origin"]["commit"]
    params["gate"]["min_f1"] = 0.0
    params["train"]["resources"] = {"cpu": "4", "memory": "16G"}  # a KFP resource edit re-trains nothing
    second = commit(repo, params, "gate: no floor")
    start = time.time()
    r, runs = kfp_run(repo, root, "--containers", "--mount", model)
    promoted_s = time.time() - start
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert result["promoted"] is True and result["commit"] == second
    assert {p.name for p in runs[-1].iterdir()} == {"source-op", "gate-op", "package-op"}  # the rest cached
    assert check_gated_run(runs[-1], params, promoted=True) == tag
    from nerflow.orchestration.versioned import data_version, opened, read_params
    from nerflow.release.registry import Registry

    info = Registry("nerflow-ner", registry).info(tag)["metadata"]  # the model records where it came from
    assert info["git_revision"] == first and info["data_version"] == manifest["origin"]["data_version"]
    assert info["data_hash"] == manifest["content_hash"] and info["source_repo"] == str(repo)
    old, at = read_params(str(repo), first[:12])  # the first revision is still there, with its data
    with opened(str(repo), first) as fs:
        assert at == first and data_version(old.data, fs)["hash"] == manifest["origin"]["data_version"]
    print(f"containerized pipeline: refused run {refused_s:.0f} s (all tasks), promoted run {promoted_s:.0f} s")

    from nerflow.tasks.token.predict import WordTagger, tag_texts

    reg = Registry("nerflow-ner", registry)
    bento = reg.state()["bentos"][tag]
    texts = ["EU rejects German call to boycott British lamb .", "Peter Blackburn", "BRUSSELS 1996-08-22"]
    def spans(result):
        return [[(e["type"], e["text"], e["start"], e["end"]) for e in ents] for ents in result]

    expected = spans(tag_texts(WordTagger(reg.model_dir(tag)), texts))  # the registry's model, run here
    assert any(expected), "the model should find entities in these train sentences"

    with bentoml_server(bento, registry, tmp_path / "serve.log") as served:
        url = served.url
        got = requests.post(f"{url}/extract", json={"texts": texts}, timeout=60)
        assert got.status_code == 200, got.text
        assert spans(got.json()) == expected
        info = requests.post(f"{url}/model_info", json={}, timeout=30).json()
        assert info["tag"] == tag and info["git_revision"] == manifest["origin"]["commit"]

    # the promoted model's own serving image: its Bento containerized, tagged with the model tag
    import docker

    client = docker.from_env()
    client.images.get(BENTO_BASE)
    pfile = write_params(params, tmp_path / "params.yaml")
    start = time.time()
    r = run_cli(["registry", "containerize"], pfile)
    build_s = time.time() - start
    try:
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        assert f"registry: image {tag}" in r.stdout
        size = client.images.get(tag).attrs["Size"]
        print(f"bento image {tag}: built in {build_s:.0f} s, {size / 1e9:.2f} GB")
        port = free_port()
        container = client.containers.run(tag, detach=True, ports={"3000/tcp": ("127.0.0.1", port)},
                                          environment={"NERFLOW_MAX_REQUEST_BYTES": "1000000"})
        try:
            url = f"http://127.0.0.1:{port}"

            def running() -> bool:
                container.reload()
                return container.status == "running"

            wait_ready(url, running, lambda: container.logs()[-3000:].decode())
            got = requests.post(f"{url}/extract", json={"texts": texts}, timeout=60)
            assert got.status_code == 200 and spans(got.json()) == expected  # the same answers as the model here
            page = requests.get(f"{url}/ui/", timeout=10)
            assert page.status_code == 200 and "Find entities" in page.text  # the page, from the container
            big = requests.post(f"{url}/extract", data=b"x" * 1_000_001, headers={"Content-Type": "application/json"},
                                timeout=30)
            assert big.status_code == 413  # the same limits as `make serve`
            assert f'nerflow_model_info{{model_tag="{tag}"}} 1.0' in requests.get(f"{url}/metrics", timeout=10).text
            assert container.attrs["Config"]["User"] not in ("", "root", "0")
        finally:
            container.stop(timeout=30)
            container.remove(force=True)
    finally:  # the image (about 2.7 GB, its layers this model's own) is not left on the machine
        with contextlib.suppress(docker.errors.ImageNotFound):
            client.images.remove(tag, force=True)

    with open(repo / "corpus" / "train.txt", "a", encoding="utf-8") as fh:  # bad data stops the run in its container
        fh.write("\nIn IN B-PP O\nParis NNP B-NP I-LOC\n")
    bad = commit(repo, params, "bad tag")
    r, runs = kfp_run(repo, root, "--containers", "--mount", model, check=False)
    assert r.returncode == 1 and "Inner task failed: 'validate-op'" in r.stderr
    assert f"(corpus/train.txt@{bad[:12]}:" in r.stdout + r.stderr and "valid IOB2" in r.stdout + r.stderr
    assert {p.name for p in runs[-1].iterdir()} == {"source-op", "data-op", "validate-op"}  # a new data version read
    assert json.loads((runs[-1] / "data-op" / "dataset" / "manifest.json").read_text())["origin"]["commit"] == bad


def test_run_in_containers_from_a_fresh_clone_that_has_no_dvc_remote_folder_yet(params, tmp_path):
    """The README's order on a fresh clone: `pipeline.py run --containers` with the checkout's
    default DVC remote (../dvc-storage) not created yet. The default corpus comes from a package in
    the image, so the remote is left out (said in one line) and every task runs; a corpus DVC
    tracks needs the remote: one clear line, no traceback, no task started."""
    image = image_or_skip()
    clone = tmp_path / "nerflow"
    sh(["git", "clone", "-q", str(ROOT), str(clone)], tmp_path)
    remote = clone / "dvc-storage"  # ../dvc-storage from .dvc/: inside the checkout (git-ignored)
    assert "url = ../dvc-storage" in (clone / ".dvc" / "config").read_text() and not remote.exists()
    model = params["train"]["model"]
    subprocess.run(["chmod", "-R", "a+rX", model], check=True)
    default = yaml.safe_load((clone / "params.yaml").read_text())
    assert default["data"]["train"].startswith("pkg:")
    params["data"] = dict(default["data"], max_sentences=240)  # the default corpus, a slice of it
    params["registry"]["bentoml_home"] = ".bentoml"
    write_params(params, clone / "params.yaml")
    sh("git -c user.email=t@t -c user.name=t commit -qam 'my params'", clone)
    r, runs = kfp_run(clone, tmp_path / "kfp", "--containers", "--mount", model)
    assert f"note: the DVC remote {remote} does not exist yet; not mounted" in r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1])["promoted"] is True
    assert {p.name for p in runs[-1].iterdir()} == EVERYTHING | {"package-op"}
    assert r.stdout.count(f"Found image '{image}'") == len(EVERYTHING) + 1
    assert not remote.exists()
    manifest = json.loads((runs[-1] / "data-op" / "dataset" / "manifest.json").read_text())
    assert manifest["splits"]["train"]["sentences"] == 240

    (clone / "corpus").mkdir()  # now a corpus DVC tracks, never pushed
    (clone / "corpus" / "train.txt").write_text("EU B-ORG\nrejects O\n\n")
    params["data"] = {"train": "corpus/train.txt"}
    write_params(params, clone / "params.yaml")
    sh("dvc add -q corpus && git add -A && git -c user.email=t@t -c user.name=t commit -qm 'a DVC corpus'", clone)
    r, _ = kfp_run(clone, tmp_path / "kfp2", "--containers", "--mount", model, check=False)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip().splitlines()[-1] == (
        f"pipeline: error: the DVC remote {remote} does not exist, and DVC tracks the corpus (corpus/train.txt): "
        "`dvc push` it there first, or name another remote with --dvc-remote")
    assert not (tmp_path / "kfp2").exists()  # nothing written: no pipeline root made


def test_make_test_reports_the_free_disk_first_and_warns_below_what_the_tests_need(tmp_path):
    """The last CI failure was a full disk ("No space left on device" 17 minutes in): `make test`
    now says at its top how much is free where the tests write, and warns below the need."""
    import shutil

    env = {**os.environ, "TMPDIR": str(tmp_path)}
    free_gb = shutil.disk_usage(tmp_path).free / 2**30
    ok = subprocess.run(["sh", str(ROOT / "docker" / "disk.sh"), "0"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert ok.returncode == 0 and ok.stderr == "", ok.stderr
    lines = ok.stdout.splitlines()
    assert lines and all(line.startswith("disk: /") and line.endswith(" GB free") for line in lines), ok.stdout
    mount = subprocess.run(["df", "-P", str(tmp_path)], capture_output=True, text=True).stdout.splitlines()[1].split()[-1]
    reported = {line.split(": ")[1]: float(line.split(": ")[2].split()[0]) for line in lines}
    assert abs(reported[mount] - free_gb) < 1.0, (reported, free_gb)  # the temporary folder's file system, in GB
    low = subprocess.run(["sh", str(ROOT / "docker" / "disk.sh"), "100000"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert low.returncode == 0 and len(low.stdout.splitlines()) == len(lines)  # a warning, not a refusal
    assert f"disk: warning: {mount} has " in low.stderr and "need about 100000 GB" in low.stderr, low.stderr
    top = {k: v for k, v in os.environ.items() if k not in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS")}  # as typed, not under make
    planned = subprocess.run(["make", "-n", "--no-print-directory", "test"], cwd=ROOT, env=top, capture_output=True, text=True)
    assert planned.stdout.splitlines()[0].startswith("sh docker/disk.sh "), planned.stdout[:500]  # before the install
