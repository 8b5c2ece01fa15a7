"""Vocabulary trimming (``preprocess.trim_vocabulary``): keep the sub-words a corpus uses.

A multilingual encoder carries a vocabulary for a hundred languages: multilingual-e5-small's
250k rows are 96M of its 118M parameters, so the embedding matrix dominates memory, the
checkpoint and the optimizer's state, while a corpus in one or two languages uses a few
percent of it. Trimming keeps the special tokens, every piece the corpus is tokenized into,
and the single-character pieces of every character the corpus has; the tokenizer is rewritten
with those pieces only (ids renumbered in their old order) and the model's embedding rows are
sliced to match at train time.

The corpus tokenizes exactly as before (the kept pieces include every piece of its best
segmentation, so removing others cannot change it; a test checks this). New text still tags:
a word whose pieces were removed is segmented into kept pieces (down to single characters),
and only a character the corpus never had becomes ``<unk>``; ``unknown_share`` measures that.
Unigram (SentencePiece: XLM-R, mT5, E5) and WordPiece (BERT) vocabularies are supported.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any, Iterable

from nerflow import NerflowError

# Heavy libraries (transformers, torch) are imported inside the functions that use them, on purpose:
# the CLI starts without them and a step loads only what it runs.


def _model_json(tokenizer) -> dict[str, Any]:
    backend = getattr(tokenizer, "backend_tokenizer", None) or getattr(tokenizer, "_tokenizer", None)
    if backend is None:
        raise NerflowError("preprocess.trim_vocabulary needs a fast tokenizer")
    return json.loads(backend.to_str())


def keep_ids(tokenizer, used: Iterable[int], texts: Iterable[str]) -> list[int]:
    """The ids to keep: the specials, ``used`` and the own pieces of each character of ``texts``
    (words or sentences)."""
    vocab = tokenizer.get_vocab()
    spec = _model_json(tokenizer)
    kind = spec["model"]["type"]
    prefix = "▁" if kind == "Unigram" else spec["model"].get("continuing_subword_prefix", "##")
    keep = set(used) | set(tokenizer.all_special_ids) | {t["id"] for t in spec.get("added_tokens", [])}
    chars = set()
    for text in texts:
        chars.update(text)
    for c in chars:
        for piece in (c, prefix + c):
            if piece in vocab:
                keep.add(vocab[piece])
    return sorted(i for i in keep if i is not None and i >= 0)


def trimmed_tokenizer(tokenizer, kept: list[int]):
    """A tokenizer with only the ``kept`` pieces, numbered 0..len(kept)-1 in their old order."""
    from transformers import AutoTokenizer

    spec = _model_json(tokenizer)
    model = spec["model"]
    new_id = {old: new for new, old in enumerate(kept)}
    if model["type"] == "Unigram":
        model["vocab"] = [model["vocab"][i] for i in kept]
        if model.get("unk_id") is not None:
            if model["unk_id"] not in new_id:
                raise NerflowError("preprocess.trim_vocabulary: the unknown token is not among the kept pieces")
            model["unk_id"] = new_id[model["unk_id"]]
    elif model["type"] == "WordPiece":
        by_id = {i: piece for piece, i in model["vocab"].items()}
        model["vocab"] = {by_id[old]: new for new, old in enumerate(kept)}
    else:
        raise NerflowError(f"preprocess.trim_vocabulary supports Unigram (SentencePiece) and WordPiece vocabularies, "
                           f"not {model['type']}: set it to false for this model")
    pieces = {tokenizer.convert_ids_to_tokens(old): new for new, old in enumerate(kept)}
    for token in spec.get("added_tokens", []):
        token["id"] = new_id[token["id"]]

    def remap(node: Any) -> Any:  # the post-processor's special-token ids (Template, Bert, Roberta)
        if isinstance(node, dict):
            if "ids" in node and "tokens" in node:
                return {**node, "ids": [pieces[t] for t in node["tokens"]]}
            return {k: remap(v) for k, v in node.items()}
        if isinstance(node, list):
            if len(node) == 2 and isinstance(node[0], str) and isinstance(node[1], int) and node[0] in pieces:
                return [node[0], pieces[node[0]]]
            return [remap(v) for v in node]
        return node

    spec["post_processor"] = remap(spec.get("post_processor"))
    with tempfile.TemporaryDirectory(prefix="nerflow-vocab-") as tmp:
        tokenizer.save_pretrained(tmp)
        for f in Path(tmp).iterdir():  # only tokenizer.json defines it: no class rebuilds it from vocab files
            if f.name not in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
                f.unlink()
        (Path(tmp) / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
        config_path = Path(tmp) / "tokenizer_config.json"
        config = json.loads(config_path.read_text(encoding="utf-8"))
        config["tokenizer_class"] = "PreTrainedTokenizerFast"
        config.pop("added_tokens_decoder", None)
        config.pop("auto_map", None)
        config_path.write_text(json.dumps(config, ensure_ascii=False, indent=2), encoding="utf-8")
        return AutoTokenizer.from_pretrained(tmp)


def remap_ids(rows: list[list[int]], kept: list[int]) -> list[list[int]]:
    new_id = {old: new for new, old in enumerate(kept)}
    return [[new_id[i] for i in row] for row in rows]


def trim_embeddings(model, kept: list[int]) -> None:
    """Slice the model's input embedding rows to ``kept`` (in place; config.vocab_size follows)."""
    import torch

    old = model.get_input_embeddings()
    if max(kept) >= old.num_embeddings:
        raise NerflowError(f"the features' vocabulary (ids up to {max(kept)}) does not fit the model's "
                           f"{old.num_embeddings} embedding rows: preprocess with the same model")
    pad = old.padding_idx
    new_pad = kept.index(pad) if pad is not None and pad in kept else None
    new = torch.nn.Embedding(len(kept), old.embedding_dim, padding_idx=new_pad, dtype=old.weight.dtype)
    with torch.no_grad():
        new.weight.copy_(old.weight[torch.tensor(kept)])
    model.set_input_embeddings(new)
    model.config.vocab_size = len(kept)
    if getattr(model.config, "pad_token_id", None) is not None:
        model.config.pad_token_id = new_pad


def unknown_share(tokenizer, texts: list[str]) -> dict[str, float]:
    """On text the trimming did not see: the share of sub-tokens that are ``<unk>``."""
    enc = tokenizer(texts, add_special_tokens=False, return_attention_mask=False)["input_ids"]
    total = sum(len(ids) for ids in enc)
    unk = sum(i == tokenizer.unk_token_id for ids in enc for i in ids)
    return {"subtokens": total, "unknown": unk, "unknown_share": unk / max(total, 1)}
