"""The model registry, kept in the BentoML model store.

Every trained model is stored as a BentoML model (``bentoml.models.create``) with the label
``stage: candidate`` and metadata: metrics, train params, data hash, git revision. Which model
is in production is one small JSON file beside the store, ``$BENTOML_HOME/registry/<name>.json``:

    {"name": ..., "production": "<tag>" | null, "lineage": [<tags promoted, oldest first>],
     "bentos": {"<model tag>": "<bento tag>"}, "events": [{...}, ...]}

Promotion and rollback change that file with one atomic rename (write a temporary sibling,
fsync, ``os.replace``), under an exclusive lock: a crash at any point leaves either the old
state or the new one, never a mix, so the old champion keeps serving. The ``stage`` labels in
each model's ``model.yaml`` (shown by ``bentoml models list``) mirror that file: they are
rewritten after each change and repaired from it on the next registry call.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import shutil
from pathlib import Path
from typing import Any, Iterator

import yaml

from nerflow import NerflowError
from nerflow.core.files import atomic_file, read_json

# Heavy libraries (bentoml) are imported inside the functions that use them, on purpose:
# the CLI starts without them and a step loads only what it runs.

CANDIDATE, PRODUCTION, ARCHIVED, ROLLED_BACK = "candidate", "production", "archived", "rolled-back"


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


class Registry:
    """Candidates, the production model and its history for one model name."""

    def __init__(self, name: str = "nerflow-ner", home: str | Path | None = None):
        self.name = name
        self.home = Path(home or os.environ.get("BENTOML_HOME") or Path.home() / "bentoml")
        self.state_path = self.home / "registry" / f"{name}.json"
        self.models_dir = self.home / "models" / name

    # ---- state ----------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        if not self.state_path.exists():
            return {"name": self.name, "production": None, "lineage": [], "bentos": {}, "events": []}
        try:
            return read_json(self.state_path)
        except (OSError, json.JSONDecodeError) as exc:
            raise NerflowError(f"{self.state_path}: registry state unreadable: {exc}") from None

    def _commit(self, state: dict[str, Any]) -> None:
        """The commit point: one atomic rename of a fully written, fsynced file."""
        with atomic_file(self.state_path) as fh:
            json.dump(state, fh, indent=2)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        with contextlib.suppress(OSError):  # make the rename itself durable
            fd = os.open(self.state_path.parent, os.O_RDONLY)
            os.fsync(fd)
            os.close(fd)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.state_path.parent / f".{self.name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield self.state()
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    # ---- models in the store ---------------------------------------------------------------
    def _stored(self) -> list[tuple[str, dict[str, Any]]]:
        """(tag, model.yaml contents) of every stored model of this name, oldest first."""
        if not self.models_dir.is_dir():
            return []
        found = []
        for d in self.models_dir.iterdir():
            if (d / "model.yaml").is_file():
                found.append((f"{self.name}:{d.name}", yaml.safe_load((d / "model.yaml").read_text())))
        return sorted(found, key=lambda item: str(item[1].get("creation_time", "")))

    def versions(self) -> list[str]:
        """Tags of every stored model of this name, oldest first."""
        return [tag for tag, _ in self._stored()]

    def is_stored(self, tag: str) -> bool:
        return (self.models_dir / tag.partition(":")[2] / "model.yaml").is_file()

    def model_dir(self, tag: str) -> Path:
        name, _, version = tag.partition(":")
        if name != self.name or not version:
            raise NerflowError(f"{tag}: not a version of {self.name} (expected {self.name}:<version>)")
        if not self.is_stored(tag):
            raise NerflowError(f"{tag}: no such model in the BentoML store {self.home}")
        return self.models_dir / version

    def info(self, tag: str) -> dict[str, Any]:
        return yaml.safe_load((self.model_dir(tag) / "model.yaml").read_text())

    def production(self) -> str | None:
        tag = self.state()["production"]
        return tag if tag and self.is_stored(tag) else None

    def stage(self, tag: str, state: dict[str, Any] | None = None) -> str:
        state = state or self.state()
        if tag == state["production"]:
            return PRODUCTION
        if tag in state["lineage"]:
            return ARCHIVED
        if any(e["event"] == "rollback" and e["from"] == tag for e in state["events"]):
            return ROLLED_BACK
        return CANDIDATE

    # ---- operations ------------------------------------------------------------------------
    def register(self, model_dir: str | Path, metadata: dict[str, Any], labels: dict[str, str]) -> str:
        """Store a trained model folder as a candidate; returns its tag."""
        import bentoml
        from bentoml._internal.models.model import ModelStore

        # this registry's store, whatever $BENTOML_HOME was when bentoml was first imported
        store = ModelStore(str(self.home / "models"))
        with bentoml.models.create(self.name, labels={**labels, "stage": CANDIDATE}, metadata=metadata,
                                   _model_store=store) as model:
            shutil.copytree(model_dir, model.path, dirs_exist_ok=True)
        tag = str(model.tag)
        with self._locked() as state:
            state["events"].append({"event": "register", "tag": tag, "at": _now()})
            self._commit(state)
        return tag

    def promote(self, tag: str, reason: str, bento: str | None = None, decision: dict[str, Any] | None = None) -> dict[str, Any]:
        """Make ``tag`` the production model; the previous one is archived (kept for rollback)."""
        self.model_dir(tag)
        with self._locked() as state:
            previous = state["production"]
            if previous == tag:
                raise NerflowError(f"{tag} is already the production model")
            if bento:
                state["bentos"][tag] = bento
            state["lineage"] = [t for t in state["lineage"] if t != tag] + [tag]
            state["production"] = tag
            event = {"event": "promote", "tag": tag, "from": previous, "at": _now(), "reason": reason}
            if decision is not None:
                event["f1"] = (decision.get("challenger") or {}).get("f1")
                event["champion_f1"] = (decision.get("champion") or {}).get("f1")
            state["events"].append(event)
            self._commit(state)
        self.sync_labels()
        return event

    def rollback(self, reason: str = "manual rollback") -> dict[str, Any]:
        """Put the previous production model back; the current one is marked rolled back."""
        with self._locked() as state:
            current = state["production"]
            lineage = [t for t in state["lineage"] if t != current and self.is_stored(t)]
            if current is None or not lineage:
                raise NerflowError(f"{self.name}: no earlier production model to roll back to")
            target = lineage[-1]
            state["lineage"] = lineage
            state["production"] = target
            event = {"event": "rollback", "tag": target, "from": current, "at": _now(), "reason": reason}
            state["events"].append(event)
            self._commit(state)
        self.sync_labels()
        return event

    def sync_labels(self) -> None:
        """Rewrite each model's ``stage`` label (in its model.yaml) from the registry state."""
        state = self.state()
        for tag, info in self._stored():
            stage = self.stage(tag, state)
            if (info.get("labels") or {}).get("stage") != stage:
                info.setdefault("labels", {})["stage"] = stage
                with atomic_file(self.model_dir(tag) / "model.yaml") as fh:
                    yaml.safe_dump(info, fh, sort_keys=False)

    def history(self) -> list[dict[str, Any]]:
        """Every stored version with its stage, test F1, data hash, git revision and Bento."""
        state = self.state()
        rows = []
        for tag, info in self._stored():
            meta = info.get("metadata") or {}
            metrics = meta.get("metrics") or {}
            promoted = [e["at"] for e in state["events"] if e["event"] in ("promote", "rollback") and e["tag"] == tag]
            rows.append({
                "tag": tag, "stage": self.stage(tag, state), "created": str(info.get("creation_time", ""))[:19],
                "f1": metrics.get("f1"), "data": str(meta.get("data_hash", ""))[:12],
                "git": str(meta.get("git_revision", ""))[:12], "bento": state["bentos"].get(tag),
                "last_promoted": promoted[-1] if promoted else None,
            })
        return rows


def format_history(rows: list[dict[str, Any]]) -> str:
    header = f"{'tag':<32} {'stage':<12} {'test F1':>7}  {'data':<12} {'git':<12} {'created':<19}  promoted"
    lines = [header, "-" * len(header)]
    for r in rows:
        f1 = f"{r['f1']:.4f}" if isinstance(r["f1"], (int, float)) else "-"
        lines.append(f"{r['tag']:<32} {r['stage']:<12} {f1:>7}  {r['data']:<12} {r['git']:<12} {r['created']:<19}  "
                     f"{r['last_promoted'] or '-'}")
    return "\n".join(lines)
