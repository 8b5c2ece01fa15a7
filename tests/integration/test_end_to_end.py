"""The library steps end to end on a real CoNLL slice with a tiny model, and the CLI."""

import json
import math
import subprocess
from pathlib import Path

import pytest
from conftest import CLI, ROOT, run_cli, write_params

from nerflow.tasks.token.metrics import score


def read_jsonl(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def test_metrics_match_the_written_predictions(library_run):
    metrics = json.loads(library_run["metrics"].read_text())
    preds = read_jsonl(library_run["predictions"])
    assert len(preds) == 60 and metrics["sentences"] == 60
    assert all(len(p["tokens"]) == len(p["gold"]) == len(p["pred"]) for p in preds)
    again = score([p["gold"] for p in preds], [p["pred"] for p in preds])
    assert metrics["f1"] == pytest.approx(again["f1"]) and metrics["support"] == again["support"] > 0
    assert set(metrics["per_type"]) == {"LOC", "MISC", "ORG", "PER"}


def test_trained_model_records_labels_data_version_and_progress(library_run):
    info = json.loads((library_run["model"] / "nerflow.json").read_text())
    manifest = json.loads((library_run["dataset"] / "manifest.json").read_text())
    assert info["labels"] == manifest["labels"] and info["content_hash"] == manifest["content_hash"]
    config = json.loads((library_run["model"] / "config.json").read_text())
    assert config["id2label"]["7"] == "B-PER" and config["label2id"]["I-PER"] == 8
    log = json.loads((library_run["model"] / "train_log.json").read_text())
    assert log["summary"]["steps"] == 8 and len(log["summary"]["dev_f1"]) == 1
    losses = [h["loss"] for h in log["log_history"] if "loss" in h] or [log["summary"]["final_train_loss"]]
    assert log["summary"]["final_train_loss"] < math.log(9)  # learnt something: below uniform over 9 labels
    assert all(math.isfinite(x) for x in losses)


def test_seeded_training_is_repeatable(library_run, tmp_path):
    from nerflow.steps.train import train

    train(library_run["params"]["train"], library_run["features"], tmp_path / "again")
    first = json.loads((library_run["model"] / "train_log.json").read_text())["summary"]["final_train_loss"]
    second = json.loads((tmp_path / "again" / "train_log.json").read_text())["summary"]["final_train_loss"]
    assert second == pytest.approx(first, rel=1e-6)


def test_cli_bad_input_is_one_line_exit_2_and_nothing_written(params, tmp_path):
    bad = tmp_path / "train.txt"
    bad.write_bytes(b"EU B-ORG\nrejects\n")
    params["data"]["train"] = str(bad)
    pfile = write_params(params, tmp_path / "params.yaml")
    out = tmp_path / "ds"
    r = run_cli(["data", "--out", str(out)], pfile)
    assert r.returncode == 2
    assert r.stderr.strip() == f"nerflow: error: {bad}:2: expected a token and a tag, found 'rejects'"
    assert not out.exists() and not list(tmp_path.glob(".ds*"))


def test_cli_partial_params_take_the_defaults_and_a_missing_input_is_named(tmp_path):
    pfile = tmp_path / "p.yaml"
    pfile.write_text("gate: {min_f1: 0.5}\n")  # every other section and key: its one default
    r = run_cli(["params"], pfile, check=True)
    assert "min_f1: 0.5" in r.stdout and "epochs: 1.0" in r.stdout
    r = run_cli(["gate", "--predictions", str(tmp_path / "none.jsonl")], pfile, cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip() == f"nerflow: error: {tmp_path / 'none.jsonl'}: no such file (run the step that writes it first)"


def test_cli_gate_refuses_and_package_skips(library_run, tmp_path):
    p = dict(library_run["params"], gate={"min_f1": 1.01})
    pfile = write_params(p, tmp_path / "params.yaml")
    r = run_cli(["register", "--model", str(library_run["model"]), "--metrics", str(library_run["metrics"]),
                 "--out", str(tmp_path / "registered.json")], pfile)
    assert r.returncode == 0 and "register: candidate nerflow-ner:" in r.stdout, r.stderr
    r = run_cli(["gate", "--predictions", str(library_run["predictions"]), "--registered", str(tmp_path / "registered.json"),
                 "--out", str(tmp_path / "gate.json")], pfile)
    assert r.returncode == 0 and "REFUSE" in r.stdout and "< gate.min_f1 1.0100" in r.stdout
    r = run_cli(["package", "--decision", str(tmp_path / "gate.json"), "--out", str(tmp_path / "package.json")], pfile)
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "package.json").read_text())["packaged"] is False
    r = run_cli(["registry", "history"], pfile)
    assert r.returncode == 0 and " candidate " in r.stdout and "production" not in r.stdout  # kept, not promoted
    assert run_cli(["registry", "show"], pfile).returncode == 1


def test_killed_training_resumes_from_its_last_checkpoint(library_run, tmp_path):
    import signal
    import time

    p = dict(library_run["params"]["train"], max_steps=300, save_steps=10, eval_each_epoch=False, batch_size=8)
    pfile = write_params(dict(library_run["params"], train=p), tmp_path / "params.yaml")
    out = tmp_path / "model"
    work = tmp_path / ".model.trainer"
    cmd = CLI + ["--params", str(pfile), "train", "--features", str(library_run["features"]), "--out", str(out),
                 "--curves", str(tmp_path / "curves")]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not (work / "checkpoint-20").exists():
        assert proc.poll() is None, "training ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists()  # nothing half-written
    # killed as soon as checkpoint-20 appeared: it may be half-written, and must then be skipped;
    # a kill in the middle of writing a later checkpoint is made certain here
    # complete as the library judges it (its trainer_state.json, the Trainer's last write, reads as JSON);
    # the kill can land while that file is being written (seen in CI: present but cut short), and such a
    # checkpoint is skipped too
    from nerflow.steps.train import _complete

    done = sorted(int(c.name.split("-")[1]) for c in work.glob("checkpoint-*") if _complete(c))
    assert done and done[-1] >= 10
    (work / "checkpoint-25").mkdir()
    (work / "checkpoint-25" / "model.safetensors").write_bytes(b"half")
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads((out / "train_log.json").read_text())["summary"]
    assert summary["steps"] == 300 and summary["resumed_from_step"] == done[-1]
    assert not work.exists()  # cleaned up after success
