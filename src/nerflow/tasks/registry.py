"""The registry of tasks: ``task_named`` and ``task_of`` give a step the ``Task`` a params key,
a dataset, features or a model holds.

Each task's implementation is a module named here (``TASK_MODULES``), imported when the task is
first asked for, as plugin registries do: a process loads the code of the task it runs and not
the other's, and the DVC wiring (nerflow.orchestration.wiring) reads this table to make a stage
depend on its task's code only.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from nerflow import NerflowError
from nerflow.core.dataset import FEATURES_INFO, MANIFEST
from nerflow.core.files import read_json
from nerflow.core.inference import MODEL_INFO
from nerflow.tasks.base import TEXT, TOKEN, Task

TASK_MODULES = {TOKEN: "nerflow.tasks.token.task", TEXT: "nerflow.tasks.text.task"}  # each defines TASK


def task_named(name: str | None) -> Task:
    """The task of that name (None: token classification, the default)."""
    module = TASK_MODULES.get(name or TOKEN)
    if module is None:
        raise NerflowError(f"unknown task {name!r}: expected one of {', '.join(TASK_MODULES)}")
    return importlib.import_module(module).TASK


def task_of(record: dict[str, Any] | str | Path | None) -> Task:
    """The task of a dataset manifest, preprocess.json or model nerflow.json (a dict), or of the
    dataset / features / model folder holding one; a record from before tasks existed is NER."""
    if isinstance(record, (str, Path)):
        folder = Path(record)
        found = next((folder / name for name in (MANIFEST, FEATURES_INFO, MODEL_INFO) if (folder / name).exists()), None)
        record = read_json(found) if found else {}
    return task_named((record or {}).get("task"))
