"""Text classification's encoding: texts to sub-token ids within ``max_length``, never cut
silently. A text over the budget keeps its head and tail (or head), as ``preprocess.truncation``
says, and is reported as cut; training, evaluation and serving all cut through ``encode``.
"""

from __future__ import annotations

from typing import Sequence

from nerflow import NerflowError


class Encoded:
    """Sub-token ids of texts cut to ``max_length`` (specials included): ``input_ids``,
    ``token_type_ids`` (None when the model takes none), ``lengths`` (sub-tokens of each whole
    text, specials included) and ``cut`` (True where the text was longer than max_length)."""

    def __init__(self, input_ids, token_type_ids, lengths, cut):
        self.input_ids, self.token_type_ids, self.lengths, self.cut = input_ids, token_type_ids, lengths, cut


def special_tokens(tokenizer) -> tuple[list[int], list[int]]:
    """The ids a tokenizer puts before and after a single text ([CLS] / [SEP], <s> / </s>),
    read from how it encodes one: its post-processor is the reference, whatever the class."""
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a")["input_ids"]
    for i in range(len(full) - len(plain) + 1):
        if full[i:i + len(plain)] == plain:
            return full[:i], full[i + len(plain):]
    raise ValueError(f"{type(tokenizer).__name__}: cannot find where a text goes between its special tokens")


def encode(tokenizer, texts: Sequence[str | None], max_length: int, truncation: str = "head_tail",
           head_share: float = 0.25) -> Encoded:
    """Tokenize ``texts`` whole (no truncation by the tokenizer), then keep, of a text over
    ``max_length`` sub-tokens (specials included), its first ``head_share`` of the budget and
    its end (``head_tail``, Sun et al. 2019: the best of head, tail and head+tail for long
    reviews), or its start (``head``)."""
    prefix, suffix = special_tokens(tokenizer)
    specials = len(prefix) + len(suffix)
    budget = max(1, max_length - specials)
    head = budget if truncation == "head" else int(round(budget * head_share))
    tail = budget - head
    pieces = tokenizer([t or "" for t in texts], add_special_tokens=False, return_attention_mask=False,
                       return_token_type_ids=False, verbose=False)["input_ids"] if texts else []
    input_ids, lengths, cut = [], [], []
    for ids in pieces:
        lengths.append(len(ids) + specials)
        over = len(ids) > budget
        cut.append(over)
        if over:
            ids = ids[:head] + (ids[len(ids) - tail:] if tail else [])
        input_ids.append(prefix + ids + suffix)
    types = [[0] * len(ids) for ids in input_ids] if "token_type_ids" in tokenizer.model_input_names else None
    return Encoded(input_ids, types, lengths, cut)


def encode_dataset(params, dataset, manifest: dict, tokenizer):
    """Text classification's features: each text's sub-token ids, cut to max_length as
    ``preprocess.truncation`` says, and its label id. ({split: columns}, {split: stats}, extra
    info for preprocess.json)."""
    index = {label: i for i, label in enumerate(manifest["labels"])}
    out, stats = {}, {}
    for split in dataset:
        rows = dataset[split]
        texts, labels = list(rows["text"]), list(rows["label"])
        unknown = next((k for k, label in enumerate(labels) if label not in index), None)
        if unknown is not None:
            line = rows[unknown]["source_line"]
            raise NerflowError(f"{manifest.get('sources', {}).get(split, split)}:{line}: label {labels[unknown]!r} is not in "
                               f"the label set {manifest['labels']} (validation's label_set check reports these)")
        enc = encode(tokenizer, texts, params.max_length, params.truncation, params.head_share)
        columns = {"input_ids": enc.input_ids, "attention_mask": [[1] * len(ids) for ids in enc.input_ids],
                   "labels": [index[label] for label in labels]}
        if enc.token_type_ids is not None:
            columns["token_type_ids"] = enc.token_type_ids
        out[split] = columns
        stats[split] = {"texts": len(texts), "truncated": int(sum(enc.cut)),
                        "max_subtokens": max(enc.lengths, default=0),
                        "mean_subtokens": round(sum(enc.lengths) / max(len(enc.lengths), 1), 1)}

    def words():
        return (text or "" for split in dataset for text in dataset[split]["text"])

    return out, stats, {"truncation": params.truncation, "head_share": params.head_share, "level": "text", "words": words}
