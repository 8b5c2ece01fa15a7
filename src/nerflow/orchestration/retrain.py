"""`nerflow retrain`: the scheduled job on a single machine.

Re-reads the corpus (DVC stage `data`, always run: seconds), asks ``dvc status`` whether the
data version, the params or the code changed since the last run, and only then runs
``dvc repro``, which ends with the gate's champion/challenger decision. Nothing changed: no
training, exit 0. Overlapping runs (a slow run and the next cron tick) are refused by a lock.
Exit status: 0 when nothing changed or the run finished (promoted or refused alike), the
failing command's status otherwise (for example 1 when validation stops the run).
"""

from __future__ import annotations

import fcntl
import json
import subprocess
import sys
from pathlib import Path

from nerflow.core.files import read_json

ALWAYS_RUN = {"data"}  # stages marked always_changed in dvc.yaml


def _dvc(*args: str, root: Path, capture: bool = False) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "dvc", *args]
    return subprocess.run(cmd, cwd=root, text=True, capture_output=capture)


def pending_stages(root: Path) -> dict:
    """``dvc status`` without the always-run stages: {stage: [what changed]}."""
    r = _dvc("status", "--json", root=root, capture=True)
    if r.returncode != 0:
        raise RuntimeError(f"dvc status failed: {r.stderr.strip()}")
    status = json.loads(r.stdout or "{}")
    return {stage: what for stage, what in status.items()
            if not (stage.split(":")[-1] in ALWAYS_RUN and what == ["always changed"])}


def _describe(changes: list) -> str:
    parts = []
    for item in changes:
        if isinstance(item, dict):
            for kind, what in item.items():
                parts.append(f"{kind}: {', '.join(what) if isinstance(what, dict) else what}")
        else:
            parts.append(str(item))
    return "; ".join(parts)


def retrain(params_path: str | Path = "params.yaml", force: bool = False, root: str | Path | None = None) -> int:
    root = Path(root or Path(params_path).resolve().parent)
    lock_path = root / ".dvc" / "tmp" / "nerflow-retrain.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print("retrain: another retrain is running; skipped", file=sys.stderr)
            return 3
        r = _dvc("repro", "data", root=root, capture=True)  # the corpus as it is now
        if r.returncode != 0:
            print(r.stdout + r.stderr, file=sys.stderr)
            return r.returncode
        pending = pending_stages(root)
        if not pending and not force:
            manifest = read_json(root / "data" / "dataset" / "manifest.json")
            print(f"retrain: nothing changed (data version {manifest['content_hash'][:12]}, params and code as in "
                  f"dvc.lock); no training")
            return 0
        print("retrain: changed since the last run: " + "; ".join(f"{s} ({_describe(w)})" for s, w in pending.items()),
              flush=True)
        r = _dvc("repro", *(["--force"] if force and not pending else []), root=root)
        if r.returncode != 0:
            print(f"retrain: dvc repro failed (exit {r.returncode}); the production model is unchanged", file=sys.stderr)
            return r.returncode
        decision = read_json(root / "reports" / "gate.json")
        verdict = "PROMOTED" if decision["promote"] else "REFUSED"
        print(f"retrain: {verdict} {decision['challenger']['tag']}: " + "; ".join(decision["reasons"]))
        return 0
