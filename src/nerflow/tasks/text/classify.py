"""Classifying texts with a trained text-classification model: a label and the probability
of every class per text. Used by the evaluate step and the service (its /classify hot path).

Texts are cut by ``nerflow.tasks.text.encode.encode`` with the model's own ``max_length``, ``truncation`` and
``head_share`` (from its nerflow.json), so serving sees exactly the sub-tokens training and
evaluation saw, and every answer says whether its text was cut.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from nerflow.core.batching import plan_batches
from nerflow.core.device import autocast
from nerflow.core.inference import load_model
from nerflow.tasks.base import TEXT
from nerflow.tasks.text.encode import encode

# Heavy libraries (torch) are imported inside the functions that use them, on purpose:
# the CLI starts without them and a step loads only what it runs.



class TextClassifier:
    """A sequence-classification model and its tokenizer on the chosen device; one label per text."""

    def __init__(self, model_dir: str | Path, precision: str = "auto", batch_size: int = 64,
                 batch_overhead_tokens: int = 64):
        import torch  # deferred: heavy (see the module doc)

        loaded = load_model(model_dir, TEXT, "AutoModelForSequenceClassification", precision)
        self.info, self.tokenizer, self.model = loaded.info, loaded.tokenizer, loaded.model
        self.device, self.precision = loaded.device, loaded.precision
        self.labels, self.label_index, self.max_length = loaded.labels, loaded.label_index, loaded.max_length
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
