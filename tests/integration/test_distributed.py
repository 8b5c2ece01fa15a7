"""Training under torchrun (the launcher the KFP train task uses): two CPU processes (gloo) train
the tiny model as one process does."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_cli, write_params

TORCHRUN = Path(sys.executable).parent / "torchrun"


@pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun is not installed beside this Python")
def test_torchrun_two_processes_train_like_one(library_run, tmp_path):
    p = json.loads(json.dumps(library_run["params"]))
    p["train"].update(epochs=8, max_steps=-1, batch_size=32)
    one = write_params(p, tmp_path / "one.yaml")
    run_cli(["train", "--features", str(library_run["features"]), "--out", str(tmp_path / "one"),
             "--curves", str(tmp_path / "curves-one")], one, check=True)

    p["train"]["batch_size"] = 16  # per process: the same global batch of 32
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("BENTOML_HOME", None)
    # the launcher the KFP train task uses when train.resources asks for several processes
    launch = ("import json, sys; from nerflow.steps.train import train_processes; "
              "s = train_processes(json.loads(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], nproc=2); "
              "print('summary:', json.dumps(s))")
    r = subprocess.run([sys.executable, "-c", launch, json.dumps(p["train"]), str(library_run["features"]),
                        str(tmp_path / "two"), str(tmp_path / "curves-two")],
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert sum(line.startswith("train: ") for line in r.stdout.splitlines()) == 1  # printed by rank 0 only
    summary = json.loads(r.stdout.split("summary: ", 1)[1])

    single = json.loads((tmp_path / "one" / "nerflow.json").read_text())
    multi = json.loads((tmp_path / "two" / "nerflow.json").read_text())  # saved once, by rank 0
    assert multi["labels"] == single["labels"]
    assert multi["train"]["steps"] == single["train"]["steps"]  # the same global batches per epoch
    assert summary == multi["train"]  # what the launcher returns is what rank 0 wrote
    best_one = max(d["f1"] for d in single["train"]["dev_f1"])
    best_two = max(d["f1"] for d in multi["train"]["dev_f1"])
    assert best_one > 0.05 and abs(best_two - best_one) < 0.1, (best_one, best_two)
    assert not list(tmp_path.glob(".two*")) and not list(tmp_path.glob(".one*"))  # no work folders left
    loss = (tmp_path / "curves-two/plots/metrics/train/loss.tsv").read_text().splitlines()
    assert len(loss) - 1 == multi["train"]["steps"] // p["train"]["logging_steps"]  # one curve, from rank 0
