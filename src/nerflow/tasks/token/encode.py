"""Token classification's features: each sentence in windows of ``max_length`` sub-tokens with its
tags aligned to the sub-words (nerflow.tasks.token.align), no entity lost to truncation."""

from __future__ import annotations

from typing import Any

from nerflow.core.config import PreprocessParams
from nerflow.tasks.token.align import (
    align_labels,
    document_windows,
    encode_texts,
    encode_words,
    packed,
)


def word_starts(word_ids) -> list[int]:
    """1 on the first sub-token of each word, else 0."""
    out, prev = [], None
    for w in word_ids:
        out.append(int(w is not None and w != prev))
        prev = w
    return out


def encode_tokens(params: PreprocessParams, dataset, manifest: dict[str, Any], tokenizer):
    """Token classification: each sentence in windows of max_length sub-tokens (stride apart),
    its tags aligned to the sub-words; with ``context: document``, consecutive sentences of one
    document share a window. ({split: columns}, {split: stats}, extra info)."""
    max_length, stride, all_sub = params.max_length, params.stride, params.label_all_subtokens
    labels = manifest["labels"]
    out, stats = {}, {}
    level = manifest.get("level", "word")
    for split in dataset:
        rows = dataset[split]
        tokens, tags, groups = rows["tokens"], rows["ner_tags"], None
        if level == "char":  # align sub-words to character tags through the offset mapping
            windows, _ = encode_texts(tokenizer, ["".join(t) for t in tokens], max_length, stride)
        else:
            groups = document_groups(params, rows, tokenizer, tokens)
            if groups is not None:
                tokens, tags = packed(groups, tokens), packed(groups, tags)
            windows = encode_words(tokenizer, tokens, max_length, stride)
        columns: dict[str, list] = {
            "input_ids": windows.input_ids,
            "attention_mask": windows.attention_mask,
            "labels": [
                align_labels(w, tags[s], labels, all_sub) for w, s in zip(windows.word_ids, windows.sentence)
            ],
        }
        columns["word_start"] = [word_starts(w) for w in windows.word_ids]  # scoring: words, not sub-tokens
        if windows.token_type_ids is not None:
            columns["token_type_ids"] = windows.token_type_ids
        out[split] = columns
        n_windows = [0] * len(tokens)
        for s in windows.sentence:
            n_windows[s] += 1
        stats[split] = {
            "sentences": len(rows),
            "windows": len(windows.input_ids),
            "sentences_with_document_context": 0 if groups is None else sum(len(g) for g in groups if len(g) > 1),
            "sentences_split_into_windows": sum(n > 1 for n in n_windows),
            "max_subtokens_per_window": max(len(ids) for ids in windows.input_ids),
        }

    def words():
        return (word for split in dataset for sentence in dataset[split]["tokens"] for word in sentence)

    return out, stats, {"stride": stride, "label_all_subtokens": all_sub, "level": level, "context": params.context,
                        "words": words}


def document_groups(params: PreprocessParams, rows, tokenizer, tokens) -> list[list[int]] | None:
    """With ``context: document`` and documents in the rows, the sentences sharing a window
    (align.pack_documents, up to max_length); None otherwise."""
    if params.context != "document" or "document" not in rows.column_names or max(rows["document"], default=-1) < 0:
        return None
    return document_windows(tokenizer, tokens, list(zip(rows["source"], rows["document"])), params.max_length)
