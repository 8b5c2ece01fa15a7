"""Tagging with a trained model, a label for every word (or character, for character-level
models): used by the evaluate step and the service."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import regex

from nerflow.core.batching import plan_batches
from nerflow.core.device import autocast
from nerflow.core.inference import load_model
from nerflow.tasks.base import TOKEN
from nerflow.tasks.token.align import (
    document_windows,
    encode_texts,
    encode_words,
    fill_characters,
    merge_windows,
    packed,
    unpacked,
)
from nerflow.tasks.token.analysis import entities

# Heavy libraries (torch) are imported inside the functions that use them, on purpose:
# the CLI starts without them and a step loads only what it runs.



class WordTagger:
    """Tags pre-split words (or characters); every one gets exactly one label and a probability."""

    def __init__(self, model_dir: str | Path, precision: str = "auto", batch_size: int = 64, batch_overhead_tokens: int = 64,
                 runtime: str | None = None, decoding: str | None = None):
        import torch  # deferred: heavy (see the module doc)

        loaded = load_model(model_dir, TOKEN, "AutoModelForTokenClassification", precision, runtime)
        self.info, self.tokenizer, self.model = loaded.info, loaded.tokenizer, loaded.model
        self.device, self.precision = loaded.device, loaded.precision
        self.labels, self.label_index, self.max_length = loaded.labels, loaded.label_index, loaded.max_length
        self.outside = "O" if "O" in self.label_index else self.labels[0]
        self.o_index = self.label_index[self.outside]
        self.stride = int(self.info.get("stride", 32))
        self.batch_size = batch_size
        self.batch_overhead_tokens = batch_overhead_tokens
        self._torch = torch
        # decoding: as nerflow.json records (models from before it was recorded: argmax)
        self.decoding = decoding or self.info.get("decoding", "argmax")
        self.transitions = iob2_transitions(self.labels) if self.decoding == "viterbi" else None

    def predict(self, sentences: Sequence[Sequence[str]], distributions: bool = False,
                documents: Sequence[tuple] | None = None):
        """Tags and probabilities for each token of each sentence (words, or characters for a
        character-level model); with ``distributions``, also each token's probability vector
        over the labels (None for a character no sub-token starts at, e.g. a space).
        ``documents``: a (source, document) key per sentence; a model trained with document
        context then reads consecutive sentences of one document in one window, as it was trained."""
        if not sentences:
            return ([], [], []) if distributions else ([], [])
        char_level = self.info.get("level") == "char"
        if documents is not None and self.info.get("context") == "document" and not char_level:
            groups = document_windows(self.tokenizer, sentences, documents, self.max_length)
            if len(groups) < len(sentences):
                lengths = [len(s) for s in sentences]
                return tuple(unpacked(groups, lengths, part)
                             for part in self.predict(packed(groups, sentences), distributions))
        if char_level:
            if any(len(token) != 1 for s in sentences for token in s):
                raise ValueError("this is a character-level model (as KLUE-NER): give one character per token, "
                                 "spaces included")
            texts = ["".join(s) for s in sentences]
            windows, cover = encode_texts(self.tokenizer, texts, self.max_length, self.stride)
        else:
            windows = encode_words(self.tokenizer, sentences, self.max_length, self.stride)
        constrained = self.transitions is not None and not char_level
        per_window = self._run(windows, distributions or constrained, heads_only=not char_level)
        n_tokens = [len(s) for s in sentences]
        # a word with no sub-token at all (e.g. a lone zero-width space): O, with no probability
        default = None if char_level else (self.o_index, None)
        merged = merge_windows(windows, per_window, n_tokens, default=default)
        tags, probs, dists = [], [], []
        for k, row in enumerate(merged):
            if char_level:
                head = [None if v is None else self.labels[v[0]] for v in row]
                tag_row = fill_characters(texts[k], head, cover[k], self.outside)
                # a character no sub-token starts at takes the value of the sub-token covering it
                row = [v if v is not None else (row[cover[k][c]] if cover[k][c] is not None else None)
                       for c, v in enumerate(row)]
            elif constrained:  # the most probable tag sequence with no I-X after anything but B-X / I-X
                tag_row = [self.labels[i] for i in constrained_path([v[1] for v in row], *self.transitions, self.o_index)]
            else:
                tag_row = [self.labels[v[0]] for v in row]
            tags.append(tag_row)
            if distributions or constrained:
                dist_row = [None if v is None else v[1] for v in row]
                if distributions:
                    dists.append(dist_row)
                probs.append([0.0 if d is None else float(d[self.label_index[t]]) for t, d in zip(tag_row, dist_row)])
            else:  # the probability of the predicted label of the (head) sub-token
                probs.append([0.0 if v is None or v[1] is None else v[1] for v in row])
        return (tags, probs, dists) if distributions else (tags, probs)

    def _run(self, windows, distributions: bool = False, heads_only: bool = False) -> list[list[tuple[int, object]]]:
        """(label id, probability vector) for every sub-token of every window; without
        ``distributions``, (label id, its probability): no per-label lists to build.
        ``heads_only``: only each word's first sub-token is read (``merge_windows``); an ONNX export
        that can computes its last layer for those alone, the others' values then meaningless."""
        torch = self._torch
        n = len(windows.input_ids)
        out: list = [None] * n
        if getattr(self.model, "packed", False):  # ONNX, packed layout: windows packed into rows, no padding
            read = [[p for _, p, _ in heads] for heads in windows.heads] if heads_only else None
            dist = torch.from_numpy(self.model.packed_logits(windows.input_ids, windows.token_type_ids, read=read)).softmax(-1)
            top, ids = dist.max(-1)
            ids, values = ids.tolist(), (dist if distributions else top).tolist()
            start = 0
            for i, row in enumerate(windows.input_ids):
                out[i] = list(zip(ids[start:start + len(row)], values[start:start + len(row)]))
                start += len(row)
            return out
        order = sorted(range(n), key=lambda i: len(windows.input_ids[i]))
        pad = self.tokenizer.pad_token_id or 0
        bounds = plan_batches([len(windows.input_ids[i]) for i in order], self.batch_size, self.batch_overhead_tokens)
        with torch.inference_mode(), autocast(self.device, self.precision):
            for start, end in bounds:
                idx = order[start:end]
                width = len(windows.input_ids[idx[-1]])

                def padded(rows, value):
                    return torch.tensor([r + [value] * (width - len(r)) for r in rows], device=self.device)

                batch = {
                    "input_ids": padded([windows.input_ids[i] for i in idx], pad),
                    "attention_mask": padded([windows.attention_mask[i] for i in idx], 0),
                }
                if windows.token_type_ids is not None:
                    batch["token_type_ids"] = padded([windows.token_type_ids[i] for i in idx], 0)
                dist = self.model(**batch).logits.float().softmax(-1)
                top, ids = dist.max(-1)
                ids = ids.tolist()
                values = dist.tolist() if distributions else top.tolist()
                for row, i in enumerate(idx):
                    out[i] = list(zip(ids[row], values[row]))
        return out


def iob2_transitions(labels: Sequence[str]):
    """(allowed[i, j]: tag j may follow tag i, allowed_first[j]) for IOB2 labels: I-X only after
    B-X or I-X, never first. None when the labels are not IOB2 (an I-X without its B-X)."""
    if any(t.startswith("I-") and "B-" + t[2:] not in labels for t in labels):
        return None
    allowed = np.ones((len(labels), len(labels)), dtype=bool)
    for j, tag in enumerate(labels):
        if tag.startswith("I-"):
            allowed[:, j] = [prev in ("B-" + tag[2:], tag) for prev in labels]
    first = np.array([not t.startswith("I-") for t in labels])
    return allowed, first


def constrained_path(dists: Sequence, allowed, first, outside: int) -> list[int]:
    """Viterbi: the label ids of the most probable sequence (product of the words' label
    probabilities) that the transitions allow. A word without a distribution (no sub-token) is O."""
    n, size = len(dists), allowed.shape[0]
    if n == 0:
        return []
    none = np.zeros(size)
    none[outside] = 1.0
    logp = np.log(np.clip(np.array([none if d is None else d for d in dists], dtype=np.float64), 1e-12, None))
    moves = np.where(allowed, 0.0, -np.inf)
    score = logp[0] + np.where(first, 0.0, -np.inf)
    back = np.zeros((n, size), dtype=np.int64)
    columns = np.arange(size)
    for t in range(1, n):
        cand = score[:, None] + moves
        back[t] = cand.argmax(0)
        score = cand[back[t], columns] + logp[t]
    path = [int(score.argmax())]
    for t in range(n - 1, 0, -1):
        path.append(int(back[t, path[-1]]))
    return path[::-1]


# Words the way CoNLL-style corpora split them: runs of letters/digits (keeping inner
# hyphens, apostrophes, dots and ampersands: "U.S", "AT&T", "1996-08-22") or one other symbol.
# A word: letters, digits and the marks that combine with them (Zoe\u0308, Devanagari viramas, Persian
# ZWNJ), joined by - ' ’ . &; else one user-perceived character (a grapheme cluster: 👍🏽, 🇫🇷, 👩‍💻, "."),
# so no emoji or accent is cut in two. Python's re has neither \p{M} nor \X: the regex package.
_WORD = regex.compile(r"[\w\p{M}]+(?:[-'’.&][\w\p{M}]+)*|(?=[^\w\s])\X")


def split_words(text: str) -> list[tuple[str, int, int]]:
    """(word, start, end) character spans of the words in ``text``."""
    return [(m.group(), m.start(), m.end()) for m in _WORD.finditer(text)]


def entities_from_tags(
    words: Sequence[str], tags: Sequence[str], probs: Sequence[float], spans: Sequence[tuple[int, int]] | None = None, text: str | None = None
) -> list[dict]:
    """Group word tags into entities (conlleval rules: an I-X after O starts an entity).

    With ``spans`` (character start/end of each word) and ``text``, entities carry character
    offsets into ``text`` and their surface text; the score is the mean word probability.
    """
    out = []
    for etype, first, last in entities(tags):
        entity = {"type": etype, "start_word": first, "end_word": last + 1}
        if spans is not None and text is not None:
            entity.update(start=spans[first][0], end=spans[last][1], text=text[spans[first][0] : spans[last][1]])
        else:
            entity["text"] = " ".join(words[first : last + 1])
        entity["score"] = round(float(sum(probs[first : last + 1]) / (last + 1 - first)), 4)
        out.append(entity)
    return out


def tag_texts(tagger: WordTagger, texts: Sequence[str]) -> list[list[dict]]:
    """Entities with type, surface text, character start/end and score for each raw text. A
    character-level model (KLUE-NER) tags the text's characters, spaces included."""
    if tagger.info.get("level") == "char":
        split = [[(c, i, i + 1) for i, c in enumerate(t)] if t.strip() else [] for t in texts]
    else:
        split = [split_words(t) for t in texts]
    words = [[w for w, _, _ in s] for s in split]
    nonempty = [i for i, w in enumerate(words) if w]
    tags, probs = tagger.predict([words[i] for i in nonempty])
    result: list[list[dict]] = [[] for _ in texts]
    for k, i in enumerate(nonempty):
        spans = [(a, b) for _, a, b in split[i]]
        result[i] = entities_from_tags(words[i], tags[k], probs[k], spans, texts[i])
    return result
