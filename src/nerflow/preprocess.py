"""Step `preprocess`: tokenize the canonical dataset into training windows with aligned labels.

Writes a ``DatasetDict`` (train/validation/test; columns input_ids, attention_mask,
[token_type_ids], labels) plus ``tokenizer/`` and ``preprocess.json`` (labels, settings and
how many sentences needed more than one window).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nerflow.align import align_labels, document_windows, encode_texts, encode_words, packed
from nerflow.atomic import atomic_dir, write_json
from nerflow.data import load_dataset_dir, read_manifest
from nerflow.config import PreprocessParams, section
from nerflow.hub import model_path

INFO = "preprocess.json"
VOCABULARY = "vocabulary.json"  # with a trimmed vocabulary: the kept ids in the model's numbering


def load_tokenizer(model_spec: str | Path, key: str = "preprocess.model"):
    """The fast tokenizer of a model folder, ``pkg:`` path or Hub id."""
    from transformers import AutoTokenizer

    path = model_path(model_spec, key)
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    if not tokenizer.is_fast:
        raise ValueError(f"{model_spec}: nerflow needs a fast tokenizer")
    if getattr(tokenizer, "add_prefix_space", None) is False and "roberta" in type(tokenizer).__name__.lower():
        # BPE tokenizers that mark word starts need a prefix space for pre-split words
        tokenizer = AutoTokenizer.from_pretrained(str(path), add_prefix_space=True)
    return tokenizer


def word_starts(word_ids) -> list[int]:
    """1 on the first sub-token of each word, else 0."""
    out, prev = [], None
    for w in word_ids:
        out.append(int(w is not None and w != prev))
        prev = w
    return out


def preprocess(params: PreprocessParams | dict[str, Any], dataset_dir: str | Path, out_dir: str | Path) -> dict[str, Any]:
    """Encode the dataset for its task (nerflow.tasks: windows with aligned tags, or texts cut
    to max_length as preprocess.truncation says), optionally trim the vocabulary, and write the
    features, the tokenizer and preprocess.json."""
    from datasets import Dataset, DatasetDict, disable_progress_bars

    from nerflow.tasks import task_of

    params = section(PreprocessParams, params)
    disable_progress_bars()
    dataset = load_dataset_dir(dataset_dir)
    manifest = read_manifest(dataset_dir)
    task = task_of(manifest)
    tokenizer = load_tokenizer(params.model)
    out, stats, extra = task.encode(params, dataset, manifest, tokenizer)
    words = extra.pop("words")
    vocabulary = None
    if params.trim_vocabulary:  # keep the pieces the corpus uses; renumber the ids
        from nerflow.vocab import keep_ids, remap_ids, trimmed_tokenizer

        kept = keep_ids(tokenizer, {i for columns in out.values() for ids in columns["input_ids"] for i in ids}, words())
        original, tokenizer = len(tokenizer), trimmed_tokenizer(tokenizer, kept)
        for columns in out.values():
            columns["input_ids"] = remap_ids(columns["input_ids"], kept)
        vocabulary = {"original": original, "kept": len(kept), "kept_ids": kept}
    info = {
        "task": task.name,
        "labels": manifest["labels"],
        "content_hash": manifest["content_hash"],
        "tokenizer": params.model,
        "max_length": params.max_length,
        **extra,
        "splits": stats,
    }
    if vocabulary:
        info["vocabulary"] = {k: v for k, v in vocabulary.items() if k != "kept_ids"}
    with atomic_dir(out_dir) as tmp:
        DatasetDict({split: Dataset.from_dict(columns) for split, columns in out.items()}).save_to_disk(str(tmp))
        tokenizer.save_pretrained(str(tmp / "tokenizer"))
        if vocabulary:
            write_json(tmp / VOCABULARY, vocabulary)
        write_json(tmp / INFO, info)
    return info


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
