"""What running a trained model needs, whatever its task: its ``nerflow.json`` (``MODEL_INFO``),
its tokenizer, and the model itself on the chosen device and runtime (``load_model``). The
batching that keeps padding low is nerflow.core.batching.

transformers and torch are imported inside the functions that use them: a process that never
runs a model (the CLI's help, the data and validate steps) starts without them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nerflow import NerflowError
from nerflow.core.config import TOKEN
from nerflow.core.device import resolve_precision
from nerflow.core.hub import model_path
from nerflow.core.runtime import load as load_runtime

MODEL_INFO = "nerflow.json"  # written by the train step beside the model


def load_tokenizer(model_spec: str | Path, key: str = "preprocess.model"):
    """The fast tokenizer of a model folder, ``pkg:`` path or Hub id."""
    from transformers import AutoTokenizer  # deferred: heavy (see the module doc)

    path = model_path(model_spec, key)
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    if not tokenizer.is_fast:
        raise ValueError(f"{model_spec}: nerflow needs a fast tokenizer")
    if getattr(tokenizer, "add_prefix_space", None) is False and "roberta" in type(tokenizer).__name__.lower():
        # BPE tokenizers that mark word starts need a prefix space for pre-split words
        tokenizer = AutoTokenizer.from_pretrained(str(path), add_prefix_space=True)
    return tokenizer


def read_model_info(model_dir: str | Path) -> dict[str, Any]:
    """A model folder's ``nerflow.json`` ({} for a plain transformers folder)."""
    path = Path(model_dir) / MODEL_INFO
    return json.loads(path.read_text()) if path.exists() else {}


@dataclass
class LoadedModel:
    """A trained model ready to run: its record, tokenizer, device and precision, the model (on
    its runtime: torch or an ONNX export, nerflow.core.runtime), its labels in id order and the
    window it was trained with."""

    info: dict[str, Any]
    tokenizer: Any
    device: str
    precision: str
    model: Any
    labels: list[str]
    label_index: dict[str, int]
    max_length: int


def load_model(model_dir: str | Path, task: str, auto_class: str, precision: str = "auto",
               runtime: str | None = None) -> LoadedModel:
    """Load a model folder for ``task`` with the transformers class ``auto_class``. A model of
    another task (its nerflow.json says which; a record from before tasks existed is
    token-classification) is refused: loading it with this task's head would give a fresh,
    random one. ``runtime``: the one nerflow.json records unless given."""
    import transformers  # deferred: heavy (see the module doc)

    model_dir = Path(model_dir)
    info = read_model_info(model_dir)
    recorded = info.get("task", TOKEN)
    if info and recorded != task:
        raise NerflowError(f"{model_dir}: a {recorded} model, not a {task} one (its {MODEL_INFO} says so)")
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(model_dir))
    device, precision = resolve_precision(precision)
    model = load_runtime(model_dir, {**info, **({"runtime": runtime} if runtime else {})},
                         getattr(transformers, auto_class), device)
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    if info.get("labels") and list(info["labels"]) != labels:
        raise NerflowError(f"{model_dir}: the labels of {MODEL_INFO} {info['labels']} differ from the model's "
                           f"id2label {labels}")
    max_length = int(info.get("max_length", min(tokenizer.model_max_length, 512)))
    return LoadedModel(info, tokenizer, device, precision, model, labels, {label: i for i, label in enumerate(labels)},
                       max_length)
