"""Token classification's validation: the GX tables, facts and expectations that the validate
step (nerflow.steps.validate) runs through nerflow.core.gx.

The dataset is read as Arrow columns and the NER facts are derived over all tokens at once
(pyarrow and numpy, no Python loop per token or sentence), so tens of millions of tokens fit in
a few GB: one dictionary of token ids over every split gives each sentence an exact key
(duplicates, leakage), per-label lookup tables give IOB2 validity, entity starts and types, and
each distinct word is sent to the tokenizer once to count sub-tokens. GX then runs the
expectations over pandas frames with Arrow-backed columns (its regexes run in pyarrow's RE2):
one row per sentence (lengths, duplicates, length outliers, sub-token overflow), per dev/test
sentence (leakage from train), per token (empty, control characters, tag format, IOB2, label
seen in train), per entity type (counts per split) and per compared distribution (type drift).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from nerflow.core.config import Checks, ValidateParams
from nerflow.core.dataset import SPLITS
from nerflow.core.gx import (
    STOPS,
    at_most,
    describe,
    drift_rows,
    iqr_limit,
    locate,
    same_rows,
    source_starts,
    suites,
    table_row,
    token_lengths,
)
from nerflow.core.inference import load_tokenizer
from nerflow.core.reports import render

# Heavy libraries (GX) are imported inside the functions that use them, on purpose:
# the CLI starts without them and a step loads only what it runs.

TEMPLATES = Path(__file__).parent / "templates"  # the report sections (validation.html.j2)

# RE2 syntax (\p{..}, \x{..}): pandas hands such patterns to pyarrow, never to Python's re
LABEL_PATTERN = r"^(?:O|[BI]-[^-\p{Z}\p{C}][^\p{Z}\p{C}]*)$"


# Control characters (C0, DEL, C1: latin-1 mojibake such as 'Ã\x83Â\x9f'), surrogates, private
# use, spaces and line/paragraph separators, and format characters (U+200B, U+2060, U+FEFF,
# bidi controls, soft hyphen) except ZWNJ/ZWJ (U+200C/U+200D), which Persian and Indic words and
# emoji sequences hold: those only at a token's start or end. Unassigned code points are not
# flagged (that depends on the Unicode version: a new emoji would fail). The replacement character
# U+FFFD is: it marks bytes some earlier tool could not decode.
POISON_PATTERN = r"[\p{Cc}\p{Cs}\p{Co}\p{Z}\x{FFFD}]|[^\P{Cf}\x{200C}\x{200D}]|^[\x{200C}\x{200D}]|[\x{200C}\x{200D}]$"
TEXT_CHARACTER = r"^[\p{Zs}\x{200C}\x{200D}]$"  # level char: a space or joiner is a token of its own
POISON_DESCRIPTION = ("no control (C0/C1), format, private-use, whitespace or replacement (U+FFFD) character "
                      "inside a token (ZWNJ/ZWJ only between two characters)")


def _offsets(lengths):
    """[0, l0, l0 + l1, ...]: where each list starts in the flat values (and the total)."""
    out = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(lengths, out=out[1:])
    return out


def _sums(values, offsets):
    """The sum of ``values`` over each list delimited by ``offsets``."""
    total = _offsets(values)
    return total[offsets[1:]] - total[offsets[:-1]]


def _heads(lengths, keep):
    """Over the flat values of lists of ``lengths``: True on the first ``keep`` of each list."""
    position = np.arange(int(lengths.sum())) - np.repeat(_offsets(lengths)[:-1], lengths)
    return position < np.repeat(keep, lengths)


@dataclass
class Corpus:
    """Every split as flat arrays. Sentences are numbered across the splits (SPLITS order);
    sentence s holds ``words[word_offsets[s]:word_offsets[s + 1]]`` (``ids`` are their ids in
    ``vocab``); the token rows are its first min(tokens, tags): ``tokens``/``tags`` over
    ``offsets``. ``dup_of``/``leak_of``: the earlier sentence of the same split / the train
    sentence with the same tokens, or -1."""

    names: list[str]
    ranges: dict[str, range]
    sources: dict[str, list[tuple[int, str, str]]]  # split -> (first sentence, file, unit) of each source
    source_line: Any
    n_tokens: Any
    n_tags: Any
    words: Any
    word_offsets: Any
    ids: Any
    vocab: Any
    tokens: Any
    tags: Any
    offsets: Any
    dup_of: Any = None
    leak_of: Any = None

    def where(self, s: int, token: int | None = None) -> dict[str, Any]:
        split, index, line = locate(self.ranges, self.sources, self.source_line, s, token)
        return {"split": split, "sentence": index, "line": line}

    def example(self, table: str, row: int, check: str) -> dict[str, Any]:
        """Where row ``row`` of GX table ``table`` comes from, for a failure of ``check``."""
        if table == "tokens":
            s = int(np.searchsorted(self.offsets, row, "right")) - 1
            return {**self.where(s, row - int(self.offsets[s])), "token": self.tokens[row].as_py(),
                    "tag": self.names[self.tags[row]]}
        s = row + (self.ranges["train"].stop if table == "eval_sentences" and "train" in self.ranges else 0)
        same = {"duplicates": self.dup_of, "leakage": self.leak_of}.get(check.split(".")[0])
        same_as = {"same_as": describe(self.where(int(same[s])))} if same is not None and same[s] >= 0 else {}
        return {**self.where(s), **same_as}


def read_corpus(dataset, manifest: dict[str, Any]) -> Corpus:
    """The splits' Arrow columns as flat arrays (zero-copy where Arrow allows)."""
    ranges, words, tags, n_tok, n_tag, lines = {}, [], [], [], [], []
    for split in SPLITS:
        if split not in dataset:
            continue
        table = dataset[split].data.table
        start = sum(map(len, lines))
        ranges[split] = range(start, start + table.num_rows)
        for name, lengths, values in (("tokens", n_tok, words), ("ner_tags", n_tag, tags)):
            column = table.column(name)
            lengths.append(pc.fill_null(pc.list_value_length(column), 0).to_numpy().astype(np.int64))
            values.extend(chunk.flatten() for chunk in column.chunks)
        lines.append(pc.fill_null(table.column("source_line"), 0).to_numpy())
    names = list(dataset[next(iter(ranges))].features["ner_tags"].feature.names)
    n_tok, n_tag = np.concatenate(n_tok), np.concatenate(n_tag)
    words = pa.chunked_array(words, type=words[0].type if words else pa.string())
    tags = np.concatenate([c.to_numpy().astype(np.int32) for c in tags] or [np.zeros(0, np.int32)])
    encoded = pc.dictionary_encode(words)
    ids = np.concatenate([c.indices.to_numpy() for c in encoded.chunks] or [np.zeros(0, np.int32)])
    vocab = encoded.chunk(0).dictionary if encoded.num_chunks else pa.array([], pa.string())
    word_offsets = _offsets(n_tok)
    tokens, offsets = words, word_offsets
    if (n_tok != n_tag).any():  # token rows pair the first min(tokens, tags) of each sentence
        keep = np.minimum(n_tok, n_tag)
        tokens, tags, offsets = words.filter(pa.array(_heads(n_tok, keep))), tags[_heads(n_tag, keep)], _offsets(keep)
    sources = source_starts(manifest, ranges, "token_lines")
    corpus = Corpus(names, ranges, sources, np.concatenate(lines), n_tok, n_tag, words, word_offsets, ids, vocab,
                    tokens, tags, offsets)
    corpus.dup_of, corpus.leak_of = _same_sentences(corpus)
    return corpus


def _same_sentences(corpus: Corpus):
    """(dup_of, leak_of) of the sentences (core.gx.same_rows): a sentence's key is the bytes of
    its token ids."""
    n = len(corpus.n_tokens)
    keys = pa.LargeBinaryArray.from_buffers(
        pa.large_binary(), n, [None, pa.py_buffer(corpus.word_offsets * 4), pa.py_buffer(np.ascontiguousarray(corpus.ids))])
    return same_rows(keys, corpus.ranges)


def subtoken_counts(tokenizer_spec: str, corpus: Corpus, level: str):
    """Sub-tokens per sentence, specials included, as preprocess's tokenizer makes them. With
    pre-split words the tokenizer encodes each word on its own, so a sentence's count is the sum
    over its words: each distinct word is tokenized once. Character-level sentences are texts:
    each distinct one is tokenized once."""


    tokenizer = load_tokenizer(tokenizer_spec, "validate.tokenizer")
    if level == "char":
        sentences = pa.LargeListArray.from_arrays(pa.array(corpus.word_offsets), corpus.words.combine_chunks())
        encoded = pc.dictionary_encode(pc.binary_join(sentences, ""))
        counts = np.array(token_lengths(tokenizer, encoded.dictionary.to_pylist(), "sentences"), dtype=np.int64)
        return counts[encoded.indices.to_numpy()]
    per_word = np.array(token_lengths(tokenizer, [[w] for w in corpus.vocab.to_pylist()], "distinct words",
                                       is_split_into_words=True, add_special_tokens=False), dtype=np.int32)
    return _sums(per_word[corpus.ids], corpus.word_offsets) + tokenizer.num_special_tokens_to_add(pair=False)


def tag_facts(corpus: Corpus) -> dict[str, Any]:
    """Per token row: IOB2 validity, entity start and type (conlleval's rule, as
    data.entity_types: a B-X, or an I-X that does not continue an X, starts an entity)."""
    names = corpus.names + ["O"]  # the last id stands for "before the first token"
    kinds = sorted({n[2:] for n in names})
    kind = np.array([kinds.index(n[2:]) for n in names], np.int32)
    is_b = np.array([n.startswith("B-") for n in names])
    is_i = np.array([n.startswith("I-") for n in names])
    tags, prev = corpus.tags, np.empty_like(corpus.tags)
    prev[1:] = tags[:-1]
    prev[corpus.offsets[:-1][np.diff(corpus.offsets) > 0]] = len(corpus.names)
    same_kind = kind[prev] == kind[tags]
    starts = is_b[tags] | (is_i[tags] & ~same_kind)
    return {
        "iob2_valid": ~is_i[tags] | ((is_b[prev] | is_i[prev]) & same_kind),
        "entity_start": starts,
        "entity_kind": kind[tags],
        "kinds": kinds,
    }


def build_tables(corpus: Corpus, manifest: dict[str, Any], params: ValidateParams) -> tuple[dict, dict]:
    """The GX tables and the facts the report shows beside them (type counts, drift)."""
    checks = params.checks
    level = manifest.get("level", "word")
    facts_by_tag = tag_facts(corpus)
    type_counts = _type_counts(corpus, facts_by_tag)
    train = corpus.ranges.get("train", range(0))
    seen = np.zeros(len(corpus.names), bool)
    seen[np.unique(corpus.tags[corpus.offsets[train.start]:corpus.offsets[train.stop]])] = True
    lengths = corpus.n_tokens
    limit = iqr_limit(lengths, checks.length_outliers.iqr_factor)
    counted_subtokens = bool(params.tokenizer) and checks.subtoken_overflow.severity != "off"
    over = (subtoken_counts(params.tokenizer, corpus, level) > params.max_length) if counted_subtokens \
        else np.zeros(len(lengths), bool)
    entities = _sums(facts_by_tag["entity_start"], corpus.offsets)
    sentences = pd.DataFrame({"n_tokens": lengths, "n_tags": corpus.n_tags, "entities": entities,
                              "duplicate": corpus.dup_of >= 0, "length_outlier": lengths > limit,
                              "over_max_length": over})
    tokens = pd.DataFrame({
        "token": corpus.tokens.to_pandas(),
        "tag": pa.array(corpus.names).take(pa.array(corpus.tags)).to_pandas(),
        "iob2_valid": facts_by_tag["iob2_valid"],
        "seen_in_train": seen[corpus.tags],
    })
    if level == "char":  # a space (or joiner) is a character of the text, so a token of its own
        tokens["token_check"] = pc.if_else(pc.match_substring_regex(corpus.tokens, TEXT_CHARACTER), "_",
                                           corpus.tokens).to_pandas()
    all_types = sorted(set().union(*type_counts.values()))
    types = pd.DataFrame({"type": all_types, **{s: [type_counts[s].get(t, 0) for t in all_types] for s in SPLITS}})
    shares = {s: {t: type_counts[s].get(t, 0) / max(1, sum(type_counts[s].values())) for t in all_types} for s in SPLITS}
    drift = drift_rows(shares, [s for s in ("validation", "test") if type_counts[s]], params.drift_reference, "type_shares")
    tables = {"sentences": sentences, "eval_sentences": pd.DataFrame({"leaked": corpus.leak_of[train.stop:] >= 0}),
              "tokens": tokens, "types": types, "drift": pd.DataFrame(drift or [{"compared": "none", "distance": 0.0}])}
    note = "split into overlapping windows by preprocess, not cut" if counted_subtokens else "tokenizer not given"
    over_facts = {"sentences": int(over.sum()), "entities": int(entities[over].sum()), "note": note}
    over_facts["line"] = (f"sentences over max_length {params.max_length} sub-tokens: {over_facts['sentences']} "
                          f"({over_facts['entities']} entities; {note})")
    facts = {"level": level, "type_counts": type_counts, "type_shares": shares, "drift": drift,
             "length_outlier_limit": float(limit), "max_length": params.max_length, "over_max_length": over_facts}
    return tables, facts


def _type_counts(corpus: Corpus, facts_by_tag: dict[str, Any]) -> dict[str, dict[str, int]]:
    """{split: {entity type: entities}} (types with none left out)."""
    starts, kinds = facts_by_tag["entity_start"], facts_by_tag["kinds"]
    type_counts = {}
    for split in SPLITS:
        r = corpus.ranges.get(split, range(0))
        lo, hi = corpus.offsets[r.start] if r else 0, corpus.offsets[r.stop] if r else 0
        counted = np.bincount(facts_by_tag["entity_kind"][lo:hi][starts[lo:hi]], minlength=len(kinds))
        type_counts[split] = {kinds[k]: int(c) for k, c in enumerate(counted) if c}
    return type_counts


def token_tables(dataset, manifest: dict[str, Any], params: ValidateParams) -> tuple[dict, dict, Callable]:
    """Token classification's GX tables, facts and ``locate(table, row, check)``."""
    corpus = read_corpus(dataset, manifest)
    tables, facts = build_tables(corpus, manifest, params)

    def locate(table: str, row: int, check: str) -> dict[str, Any]:
        if table in ("types", "drift"):
            return table_row(tables[table], row)
        return corpus.example(table, row, check)

    return tables, facts, locate


def expectations(checks: Checks, level: str = "word") -> dict[str, list]:
    """{table: [GX expectation]} for every token-classification check not switched off."""
    import great_expectations.expectations as gxe

    c = checks

    def poison(fraction: float, stops: str = ""):
        return gxe.ExpectColumnValuesToNotMatchRegex(
            column="token_check" if level == "char" else "token", regex=POISON_PATTERN, mostly=1.0 - fraction,
            description=POISON_DESCRIPTION + (f": in at most {fraction:.1%} of tokens" if fraction else "") + stops)

    specs = [
        ("lengths_match", "sentences", lambda: gxe.ExpectColumnPairValuesToBeEqual(
            column_A="n_tokens", column_B="n_tags", description="every sentence has as many tags as tokens")),
        ("sentence_length", "sentences", lambda: gxe.ExpectColumnValuesToBeBetween(
            column="n_tokens", min_value=1, max_value=c.sentence_length.max_tokens,
            description=f"sentence length between 1 and {c.sentence_length.max_tokens} tokens")),
        ("duplicates", "sentences", lambda: at_most(
            "duplicate", "duplicate sentences within a split", c.duplicates.max_fraction)),
        ("duplicates.error_fraction", "sentences", lambda: at_most(
            "duplicate", "duplicate sentences within a split", c.duplicates.error_fraction, STOPS)),
        ("length_outliers", "sentences", lambda: at_most(
            "length_outlier", f"length outliers (> Q3 + {c.length_outliers.iqr_factor} IQR)", c.length_outliers.max_fraction)),
        ("subtoken_overflow", "sentences", lambda: at_most(
            "over_max_length", "sentences over max_length sub-tokens", c.subtoken_overflow.max_fraction)),
        ("leakage", "eval_sentences", lambda: at_most("leaked", "dev/test sentences also in train", c.leakage.max_fraction)),
        ("leakage.error_fraction", "eval_sentences", lambda: at_most(
            "leaked", "dev/test sentences also in train", c.leakage.error_fraction, STOPS)),
        ("empty_token", "tokens", lambda: gxe.ExpectColumnValueLengthsToBeBetween(
            column="token", min_value=1, description="no empty token")),
        ("control_characters", "tokens", lambda: poison(c.control_characters.max_fraction)),
        ("control_characters.error_fraction", "tokens", lambda: poison(c.control_characters.error_fraction, STOPS)),
        ("tag_format", "tokens", lambda: gxe.ExpectColumnValuesToMatchRegex(
            column="tag", regex=LABEL_PATTERN, description="every tag is O, B-<type> or I-<type>")),
        ("iob2", "tokens", lambda: gxe.ExpectColumnValuesToBeInSet(
            column="iob2_valid", value_set=[True],
            description="valid IOB2: an I-X follows B-X or I-X (IOB1/BIOES data: set data.scheme)")),
        ("labels_in_train", "tokens", lambda: gxe.ExpectColumnValuesToBeInSet(
            column="seen_in_train", value_set=[True], description="every dev/test label occurs in train")),
        ("min_entities_per_type", "types", lambda: gxe.ExpectColumnValuesToBeBetween(
            column="train", min_value=c.min_entities_per_type.min_count,
            description=f"at least {c.min_entities_per_type.min_count} train entities of every type")),
        ("type_drift", "drift", lambda: gxe.ExpectColumnValuesToBeBetween(
            column="distance", max_value=c.type_drift.max_distance,
            description=f"entity type distribution drift (total variation) at most {c.type_drift.max_distance}")),
    ]
    return suites(specs, c)


def token_report_html(summary: dict[str, Any]) -> str:
    """Token classification's sections: splits, entities per type, type drift, long sentences
    (templates/validation.html.j2)."""
    counts = summary.get("type_counts", {})
    types = sorted(set().union(*counts.values()))
    return render("validation.html.j2", TEMPLATES, summary=summary, splits=SPLITS, counts=counts, types=types)
