"""A real `bentoml serve` of a packaged Bento on a loopback port."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from conftest import ROOT, free_port, write_params

TEXT = "Angela Merkel visited Paris, France."
# split_words gives: Angela Merkel visited Paris , France .
SPANS = [("Angela", 0, 6), ("Merkel", 7, 13), ("visited", 14, 21), ("Paris", 22, 27), (",", 27, 28),
         ("France", 29, 35), (".", 35, 36)]


def every_word_tagged(src: Path, dst: Path, label: str) -> Path:
    """A copy of a trained model whose head says ``label`` for every word, so the expected
    entities are known exactly."""
    import torch
    from transformers import AutoModelForTokenClassification

    shutil.copytree(src, dst)
    model = AutoModelForTokenClassification.from_pretrained(str(dst))
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.fill_(-10.0)
        model.classifier.bias[model.config.label2id[label]] = 10.0
    model.save_pretrained(str(dst))
    return dst


@pytest.fixture(scope="module")
def server(library_run, tmp_path_factory):
    work = tmp_path_factory.mktemp("serve")
    model = every_word_tagged(library_run["model"], work / "model", "B-PER")
    params = dict(library_run["params"], package={"model_name": "nerflow-ner", "build_bento": True,
                                                  "bentoml_home": str(work / "bentoml")})
    pfile = write_params(params, work / "params.yaml")
    env = {k: v for k, v in os.environ.items() if k != "BENTOML_HOME"}
    r = subprocess.run([sys.executable, "-m", "nerflow.cli", "--params", str(pfile), "package", "--model", str(model),
                        "--decision", str(library_run["decision"]), "--metrics", str(library_run["metrics"]),
                        "--out", str(work / "package.json")], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    record = json.loads((work / "package.json").read_text())
    port = free_port()
    log = open(work / "serve.log", "w")
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "bentoml"), "serve", record["bento_tag"], "--host", "127.0.0.1", "--port", str(port)],
        env={**env, "BENTOML_HOME": str(work / "bentoml")}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 180
    try:
        while True:
            try:
                if requests.post(f"{url}/extract", json={"texts": ["warm up"]}, timeout=30).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                raise AssertionError("server did not come up:\n" + (work / "serve.log").read_text()[-3000:])
            time.sleep(0.5)
        yield {"url": url, "record": record, "home": work / "bentoml"}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def test_entities_with_character_offsets(server):
    r = requests.post(f"{server['url']}/extract", json={"texts": [TEXT, "", "   "]}, timeout=60)
    assert r.status_code == 200
    first, empty, blank = r.json()
    assert [(e["text"], e["start"], e["end"]) for e in first] == SPANS
    assert all(e["type"] == "PER" and TEXT[e["start"]:e["end"]] == e["text"] for e in first)
    assert all(0.99 < e["score"] <= 1.0 for e in first)
    assert empty == [] and blank == []


def test_health_and_openapi(server):
    assert requests.get(f"{server['url']}/readyz", timeout=10).status_code == 200
    spec = requests.get(f"{server['url']}/docs.json", timeout=10).json()
    assert "/extract" in spec["paths"]


def test_bad_request_is_a_client_error(server):
    r = requests.post(f"{server['url']}/extract", json={"texts": "not a list"}, timeout=30)
    assert 400 <= r.status_code < 500


def test_model_store_records_data_version_and_metrics(server, library_run):
    env = {**os.environ, "BENTOML_HOME": str(server["home"])}
    out = subprocess.run([str(Path(sys.executable).parent / "bentoml"), "models", "get", server["record"]["model_tag"], "-o", "json"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    manifest = json.loads((library_run["dataset"] / "manifest.json").read_text())
    metrics = json.loads(library_run["metrics"].read_text())
    assert info["metadata"]["data_hash"] == manifest["content_hash"]
    assert info["metadata"]["metrics"]["f1"] == pytest.approx(metrics["f1"])
    assert info["labels"]["stage"] == "production"
    assert json.loads(info["metadata"]["params_json"])["max_steps"] == 8
