"""Sub-word alignment shared by training, evaluation and serving.

Words are encoded with a fast tokenizer (``is_split_into_words=True``). A sentence longer
than ``max_length`` sub-tokens becomes several overlapping windows (``stride`` sub-tokens
shared), so no word is ever cut off. Labels go on the first sub-token of each word (or on
every sub-token, with B-X turned into I-X on continuations); -100 everywhere else. At
prediction time each word takes its label from the window where its first sub-token has
the most context on both sides.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Sequence

from nerflow.core.batching import pack_documents

IGNORE = -100


@dataclass
class Windows:
    """The encoded windows of a batch of sentences."""

    input_ids: list[list[int]]
    attention_mask: list[list[int]]
    token_type_ids: list[list[int]] | None
    word_ids: list[list[int | None]]
    sentence: list[int]  # window -> index of its sentence in the batch

    @cached_property
    def heads(self) -> list[list[tuple[int, int, int]]]:
        """``first_subtoken_positions`` of every window, computed once (the tagger runs and merges by them)."""
        return [first_subtoken_positions(w) for w in self.word_ids]


def _encode_windows(tokenizer, inputs: list, max_length: int, stride: int, **options):
    """One tokenizer call cutting every input into overlapping windows of at most
    ``max_length`` sub-tokens, ``stride`` of them shared between neighbours."""
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("nerflow needs a fast tokenizer (word ids and offsets)")
    if stride >= max_length - tokenizer.num_special_tokens_to_add():
        raise ValueError(f"stride {stride} must be smaller than max_length {max_length} minus specials")
    return tokenizer(inputs, truncation=True, max_length=max_length, stride=stride,
                     return_overflowing_tokens=True, **options)


def encode_words(tokenizer, sentences: Sequence[Sequence[str]], max_length: int, stride: int) -> Windows:
    enc = _encode_windows(tokenizer, [list(s) for s in sentences], max_length, stride, is_split_into_words=True)
    n = len(enc["input_ids"])
    return Windows(
        input_ids=enc["input_ids"],
        attention_mask=enc["attention_mask"],
        token_type_ids=enc.get("token_type_ids"),
        word_ids=[enc.word_ids(i) for i in range(n)],
        sentence=list(enc["overflow_to_sample_mapping"]),
    )


def align_labels(
    word_ids: Sequence[int | None],
    word_labels: Sequence[int],
    label_names: Sequence[str],
    label_all_subtokens: bool = False,
) -> list[int]:
    """Token labels for one window: first sub-token of a word gets the word's label;
    later sub-tokens get -100, or (``label_all_subtokens``) the word's label with B-X -> I-X."""
    to_inside = {
        i: label_names.index("I-" + name[2:])
        for i, name in enumerate(label_names)
        if name.startswith("B-") and ("I-" + name[2:]) in label_names
    }
    labels, prev = [], None
    for w in word_ids:
        if w is None:
            labels.append(IGNORE)
        elif w != prev:
            labels.append(word_labels[w])
        elif label_all_subtokens:
            labels.append(to_inside.get(word_labels[w], word_labels[w]))
        else:
            labels.append(IGNORE)
        prev = w
    return labels


def first_subtoken_positions(word_ids: Sequence[int | None]) -> list[tuple[int, int, int]]:
    """(word, position, context) for the first sub-token of every word in a window;
    context = the fewer sub-tokens on either side inside the window."""
    last = max((p for p, w in enumerate(word_ids) if w is not None), default=-1)
    out, prev = [], None
    for pos, w in enumerate(word_ids):
        if w is not None and w != prev:
            out.append((w, pos, min(pos, last - pos)))
        prev = w
    return out


def merge_windows(windows: Windows, per_window: Sequence, n_words: Sequence[int], default=None) -> list[list]:
    """Pick, for every word of every sentence, the value (``per_window[i][position]``) from the
    window where the word has most context. Every word gets exactly one value: ``default``
    for a word the tokenizer turned into no sub-token at all (e.g. a lone zero-width space)."""
    best: list[list] = [[None] * n for n in n_words]
    best_ctx: list[list[int]] = [[-1] * n for n in n_words]
    for i, heads in enumerate(windows.heads):
        s = windows.sentence[i]
        for w, pos, ctx in heads:
            if ctx > best_ctx[s][w]:
                best_ctx[s][w] = ctx
                best[s][w] = per_window[i][pos]
    if default is not None:
        for s, row in enumerate(best):
            for w, ctx in enumerate(best_ctx[s]):
                if ctx < 0:
                    row[w] = default
    return best


def encode_texts(tokenizer, texts: Sequence[str], max_length: int, stride: int) -> tuple[Windows, list[list[int | None]]]:
    """Character-level corpora (KLUE-NER): encode raw texts with offsets. Each sub-token's
    "word id" is the index of its first character, so the word-level machinery (labels on
    first sub-tokens, window merging) works on characters unchanged. Also returns, per
    sentence, the start character of the sub-token covering each character (None: covered
    by none, e.g. a space)."""
    enc = _encode_windows(tokenizer, list(texts), max_length, stride, return_offsets_mapping=True)
    n = len(enc["input_ids"])
    sentence = list(enc["overflow_to_sample_mapping"])
    word_ids: list[list[int | None]] = []
    cover: list[list[int | None]] = [[None] * len(t) for t in texts]
    for i in range(n):
        ids, s = [], sentence[i]
        for (start, end), special in zip(enc["offset_mapping"][i], enc.word_ids(i)):
            if special is None or end <= start:
                ids.append(None)
                continue
            # byte-level BPE offsets may include a leading space: start at the first non-space
            while start < end - 1 and texts[s][start].isspace():
                start += 1
            ids.append(start)
            for c in range(start, end):
                if cover[s][c] is None:
                    cover[s][c] = start
        word_ids.append(ids)
    windows = Windows(
        input_ids=enc["input_ids"],
        attention_mask=enc["attention_mask"],
        token_type_ids=enc.get("token_type_ids"),
        word_ids=word_ids,
        sentence=sentence,
    )
    return windows, cover


def fill_characters(text: str, starts: Sequence, cover: Sequence[int | None], outside: str = "O") -> list:
    """Character tags from the tags predicted at sub-token starts (``starts[c]`` is None for a
    character that starts no sub-token): a character inside a sub-token continues its tag
    (B-X -> I-X); a character covered by none (a space) is I-X inside an entity that goes on
    after it, else O."""
    out: list = [None] * len(text)
    for c in range(len(text)):
        if starts[c] is not None:
            out[c] = starts[c]
        elif cover[c] is not None and out[cover[c]] is not None:
            head = out[cover[c]]
            out[c] = "I-" + head[2:] if head != outside else outside
    for c in range(len(text)):
        if out[c] is None:
            prev = next((out[k] for k in range(c - 1, -1, -1) if out[k] is not None), outside)
            nxt = next((out[k] for k in range(c + 1, len(text)) if out[k] is not None and starts[k] is not None), outside)
            out[c] = "I-" + prev[2:] if prev != outside and nxt == "I-" + prev[2:] else outside
    return out


def subtoken_counts(tokenizer, sentences: Sequence[Sequence[str]]) -> list[int]:
    """Sub-tokens of each sentence's words (no specials): what a window of it holds."""
    if not sentences:
        return []
    enc = tokenizer([list(s) for s in sentences], is_split_into_words=True, add_special_tokens=False)
    return [len(ids) for ids in enc["input_ids"]]


def document_windows(tokenizer, sentences: Sequence[Sequence[str]], documents: Sequence[tuple],
                     max_length: int) -> list[list[int]]:
    """pack_documents for a tokenizer: consecutive sentences of one document in windows of at
    most ``max_length`` sub-tokens, specials included (preprocess, evaluate and predict alike)."""
    budget = max_length - tokenizer.num_special_tokens_to_add()
    return pack_documents(documents, subtoken_counts(tokenizer, sentences), budget)


def packed(groups: Sequence[Sequence[int]], rows: Sequence[Sequence]) -> list[list]:
    """The rows (tokens or tags) of each group, concatenated."""
    return [[x for i in group for x in rows[i]] for group in groups]


def unpacked(groups: Sequence[Sequence[int]], lengths: Sequence[int], rows: Sequence[Sequence]) -> list[list]:
    """``packed``'s inverse: each group's row cut back into its sentences' rows (by ``lengths``),
    in sentence order."""
    out: list = [None] * len(lengths)
    for group, row in zip(groups, rows):
        at = 0
        for i in group:
            out[i] = list(row[at:at + lengths[i]])
            at += lengths[i]
    return out
