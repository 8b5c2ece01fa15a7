"""Classifying texts with a trained text-classification model: a label and the probability
of every class per text. Used by the evaluate step and the service (its /classify hot path).

Texts are cut by ``nerflow.text.encode`` with the model's own ``max_length``, ``truncation`` and
``head_share`` (from its nerflow.json), so serving sees exactly the sub-tokens training and
evaluation saw, and every answer says whether its text was cut.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from nerflow import NerflowError
from nerflow.device import autocast, resolve_precision
from nerflow.predict import MODEL_INFO, plan_batches
from nerflow.runtime import load as load_runtime
from nerflow.text import encode

TASK = "text-classification"


class TextClassifier:
    """A sequence-classification model and its tokenizer on the chosen device; one label per text."""

    def __init__(self, model_dir: str | Path, precision: str = "auto", batch_size: int = 64,
                 batch_overhead_tokens: int = 64):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        model_dir = Path(model_dir)
        self.info: dict[str, Any] = json.loads((model_dir / MODEL_INFO).read_text()) if (model_dir / MODEL_INFO).exists() else {}
        if self.info and self.info.get("task", "token-classification") != TASK:
            # loading a token-classification model here would give it a fresh, random head
            raise NerflowError(f"{model_dir}: a {self.info.get('task', 'token-classification')} model, not a "
                               f"{TASK} one (its {MODEL_INFO} says so): tag it with nerflow.predict.WordTagger")
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        self.device, self.precision = resolve_precision(precision)
        self.model = load_runtime(model_dir, self.info, AutoModelForSequenceClassification, self.device)
        self.labels: list[str] = [self.model.config.id2label[i] for i in range(self.model.config.num_labels)]
        if self.info.get("labels") and list(self.info["labels"]) != self.labels:
            raise NerflowError(f"{model_dir}: the labels of {MODEL_INFO} {self.info['labels']} differ from the "
                               f"model's id2label {self.labels}")
        self.label_index = {label: i for i, label in enumerate(self.labels)}
        self.max_length = int(self.info.get("max_length", min(self.tokenizer.model_max_length, 512)))
        self.truncation = str(self.info.get("truncation", "head_tail"))
        self.head_share = float(self.info.get("head_share", 0.25))
        self.batch_size = batch_size
        self.batch_overhead_tokens = batch_overhead_tokens
        self._torch = torch

    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        """The probability of every class for each text: float32 [n_texts, n_labels]."""
        return self.run(texts)[0]

    def predict(self, texts: Sequence[str]) -> list[dict[str, Any]]:
        """Per text: ``label``, ``score`` (its probability, 4 places), ``scores`` (every class's
        probability, 6 places: they sum to 1 within 1e-6 per class) and ``truncated`` (the text
        was longer than max_length sub-tokens and was cut as in training)."""
        probs, cut = self.run(texts)
        if not len(cut):
            return []
        top = probs.argmax(1)
        labels, rounded = self.labels, np.round(probs.astype(np.float64), 6).tolist()
        best = np.round(probs[np.arange(len(top)), top].astype(np.float64), 4).tolist()
        return [{"label": labels[k], "score": s, "scores": dict(zip(labels, row)), "truncated": c}
                for k, s, row, c in zip(top.tolist(), best, rounded, cut)]

    def run(self, texts: Sequence[str]) -> tuple[np.ndarray, list[bool]]:
        """(probabilities, cut flags): what probabilities and predict are made of. Texts go
        through the model sorted by length in batches planned by plan_batches, each padded to
        its longest text only."""
        torch = self._torch
        enc = encode(self.tokenizer, list(texts), self.max_length, self.truncation, self.head_share)
        ids, types = enc.input_ids, enc.token_type_ids
        n = len(ids)
        out = np.empty((n, len(self.labels)), dtype=np.float32)
        if not n:
            return out, []
        order = sorted(range(n), key=lambda i: len(ids[i]))
        pad = self.tokenizer.pad_token_id or 0
        bounds = plan_batches([len(ids[i]) for i in order], self.batch_size, self.batch_overhead_tokens)
        with torch.inference_mode():
            for start, end in bounds:
                idx = order[start:end]
                width = len(ids[idx[-1]])
                batch = {
                    "input_ids": torch.tensor([ids[i] + [pad] * (width - len(ids[i])) for i in idx], device=self.device),
                    "attention_mask": torch.tensor([[1] * len(ids[i]) + [0] * (width - len(ids[i])) for i in idx],
                                                   device=self.device),
                }
                if types is not None:
                    batch["token_type_ids"] = torch.tensor([types[i] + [0] * (width - len(types[i])) for i in idx],
                                                           device=self.device)
                with autocast(self.device, self.precision):
                    logits = self.model(**batch).logits
                out[idx] = logits.float().softmax(-1).cpu().numpy()
        return out, enc.cut
