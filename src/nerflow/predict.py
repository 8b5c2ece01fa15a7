"""Word-level tagging with a trained model: used by the evaluate step and the service."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from nerflow.align import encode_words, merge_windows
from nerflow.device import autocast, resolve_precision

MODEL_INFO = "nerflow.json"  # written by the train step beside the model


class WordTagger:
    """Tags pre-split words; every word gets exactly one label and a probability."""

    def __init__(self, model_dir: str | Path, precision: str = "auto", batch_size: int = 64):
        import torch
        from transformers import AutoModelForTokenClassification, AutoTokenizer

        model_dir = Path(model_dir)
        self.info = json.loads((model_dir / MODEL_INFO).read_text()) if (model_dir / MODEL_INFO).exists() else {}
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        self.device, self.precision = resolve_precision(precision)
        self.model = AutoModelForTokenClassification.from_pretrained(str(model_dir)).to(self.device).eval()
        self.labels = [self.model.config.id2label[i] for i in range(self.model.config.num_labels)]
        self.max_length = int(self.info.get("max_length", min(self.tokenizer.model_max_length, 512)))
        self.stride = int(self.info.get("stride", 32))
        self.batch_size = batch_size
        self._torch = torch

    def predict(self, sentences: Sequence[Sequence[str]]) -> tuple[list[list[str]], list[list[float]]]:
        """Tags and probabilities for each word of each sentence."""
        torch = self._torch
        if not sentences:
            return [], []
        windows = encode_words(self.tokenizer, sentences, self.max_length, self.stride)
        n = len(windows.input_ids)
        label_ids: list = [None] * n
        probs: list = [None] * n
        order = sorted(range(n), key=lambda i: len(windows.input_ids[i]))  # little padding
        pad = self.tokenizer.pad_token_id or 0
        with torch.inference_mode(), autocast(self.device, self.precision):
            for start in range(0, n, self.batch_size):
                idx = order[start : start + self.batch_size]
                width = max(len(windows.input_ids[i]) for i in idx)

                def padded(rows, value):
                    return torch.tensor([r + [value] * (width - len(r)) for r in rows], device=self.device)

                batch = {
                    "input_ids": padded([windows.input_ids[i] for i in idx], pad),
                    "attention_mask": padded([windows.attention_mask[i] for i in idx], 0),
                }
                if windows.token_type_ids is not None:
                    batch["token_type_ids"] = padded([windows.token_type_ids[i] for i in idx], 0)
                logits = self.model(**batch).logits.float()
                p, ids = logits.softmax(-1).max(-1)
                for row, i in enumerate(idx):
                    label_ids[i] = ids[row].tolist()
                    probs[i] = p[row].tolist()
        n_words = [len(s) for s in sentences]
        merged_ids = merge_windows(windows, label_ids, n_words, default=self.labels.index("O") if "O" in self.labels else 0)
        merged_p = merge_windows(windows, probs, n_words, default=0.0)
        tags = [[self.labels[i] for i in row] for row in merged_ids]
        return tags, merged_p


# Words the way CoNLL-style corpora split them: runs of letters/digits (keeping inner
# hyphens, apostrophes, dots and ampersands: "U.S", "AT&T", "1996-08-22") or one other symbol.
_WORD = None


def split_words(text: str) -> list[tuple[str, int, int]]:
    """(word, start, end) character spans of the words in ``text``."""
    import re

    global _WORD
    if _WORD is None:
        _WORD = re.compile(r"\w+(?:[-'’.&]\w+)*|[^\w\s]")
    return [(m.group(), m.start(), m.end()) for m in _WORD.finditer(text)]


def entities_from_tags(
    words: Sequence[str], tags: Sequence[str], probs: Sequence[float], spans: Sequence[tuple[int, int]] | None = None, text: str | None = None
) -> list[dict]:
    """Group word tags into entities (conlleval rules: an I-X after O starts an entity).

    With ``spans`` (character start/end of each word) and ``text``, entities carry character
    offsets into ``text`` and their surface text; the score is the mean word probability.
    """
    from seqeval.metrics.sequence_labeling import get_entities

    out = []
    for etype, first, last in get_entities(list(tags)):
        entity = {"type": etype, "start_word": first, "end_word": last + 1}
        if spans is not None and text is not None:
            entity.update(start=spans[first][0], end=spans[last][1], text=text[spans[first][0] : spans[last][1]])
        else:
            entity["text"] = " ".join(words[first : last + 1])
        entity["score"] = round(float(sum(probs[first : last + 1]) / (last + 1 - first)), 4)
        out.append(entity)
    return out


def tag_texts(tagger: WordTagger, texts: Sequence[str]) -> list[list[dict]]:
    """Entities with type, surface text, character start/end and score for each raw text."""
    split = [split_words(t) for t in texts]
    words = [[w for w, _, _ in s] for s in split]
    nonempty = [i for i, w in enumerate(words) if w]
    tags, probs = tagger.predict([words[i] for i in nonempty])
    result: list[list[dict]] = [[] for _ in texts]
    for k, i in enumerate(nonempty):
        spans = [(a, b) for _, a, b in split[i]]
        result[i] = entities_from_tags(words[i], tags[k], probs[k], spans, texts[i])
    return result
