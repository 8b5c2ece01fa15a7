"""Step `data`: read the labelled corpus the `data` params name into the canonical dataset of its
task (``data.task``; nerflow.core.dataset holds what the datasets of every task share).

The dataset is a Hugging Face ``DatasetDict`` saved to disk (train/validation/test) with a
``manifest.json`` beside it (sources, counts, labels, and the content hash that names this data
version) and ``raw/``, a copy of the source files, so the raw corpus is versioned (and pushed)
with the DVC outputs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nerflow.core.config import DataParams, section
from nerflow.tasks.registry import task_named


def prepare_data(params: DataParams | dict[str, Any], out_dir: str | Path, origin: dict[str, Any] | None = None,
                 source_names: dict[str, str] | None = None) -> dict[str, Any]:
    """Read the corpus named in ``params`` (the `data` section) into the canonical dataset of
    its task. ``origin`` (KFP path, nerflow.orchestration.versioned): the repository, commit and
    source versions the corpus was read at, kept in the manifest; ``source_names``: how to name a
    scratch copy. Returns the manifest."""
    p = section(DataParams, params)
    return task_named(p.task).prepare_data(p, out_dir, origin, source_names)
