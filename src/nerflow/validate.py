"""Step `validate`: check the canonical dataset with a Great Expectations suite that knows its task.

What is shared between the tasks lives here: the dataset's task (nerflow.tasks) builds the GX
tables, the facts beside them and the expectations (token classification below, text
classification in nerflow.validate_text); this module runs GX, summarises the results with
the failing rows located, writes ``results.json`` and ``report.html`` and stops on a failed
error check.

For NER (token classification) the dataset is read as Arrow columns and the NER facts are
derived over all tokens at once (pyarrow and numpy, no Python loop per token or sentence), so
tens of millions of tokens fit in a few GB: one dictionary of token ids over every split gives
each sentence an exact key (duplicates, leakage), per-label lookup tables give IOB2 validity,
entity starts and types, and each distinct word is sent to the tokenizer once to count
sub-tokens. GX then runs the expectations over pandas frames with Arrow-backed columns (its
regexes run in pyarrow's RE2): one row per sentence (lengths, duplicates, length outliers,
sub-token overflow), per dev/test sentence (leakage from train), per token (empty, control
characters, tag format, IOB2, label seen in train), per entity type (counts per split) and per
compared distribution (type drift).

GX reports failing rows by position; only the examples shown are turned into split, sentence
(or text), file:line and token (or label). Every check has a severity from params (``error``
stops the run, ``warning`` is reported, ``off`` skips it) and its thresholds; duplicates and
leakage also stop the run above their ``error_fraction``. Writes ``results.json`` (GX's
validation results plus a summary) and ``report.html``.
"""

from __future__ import annotations

import html
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from nerflow import NerflowError
from nerflow.atomic import atomic_dir, atomic_file, read_json, write_json
from nerflow.config import Checks, ValidateParams, section
from nerflow.data import SPLITS, load_dataset_dir, read_manifest
from nerflow.tasks import task_of

EXAMPLES = 10
GX_SEVERITY = {"error": "critical", "warning": "warning"}
SUITE_PREFIX = "nerflow_"  # GX suite names: the prefix and the table's name
STOPS = " (error_fraction: above it the run stops)"
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


class ValidationFailed(NerflowError):
    pass


def _offsets(lengths):
    """[0, l0, l0 + l1, ...]: where each list starts in the flat values (and the total)."""
    import numpy as np

    out = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(lengths, out=out[1:])
    return out


def _sums(values, offsets):
    """The sum of ``values`` over each list delimited by ``offsets``."""
    total = _offsets(values)
    return total[offsets[1:]] - total[offsets[:-1]]


def _heads(lengths, keep):
    """Over the flat values of lists of ``lengths``: True on the first ``keep`` of each list."""
    import numpy as np

    position = np.arange(int(lengths.sum())) - np.repeat(_offsets(lengths)[:-1], lengths)
    return position < np.repeat(keep, lengths)


def locate(ranges: dict[str, range], sources: dict[str, list[tuple[int, str, str]]], source_line, i: int,
           token: int | None = None) -> tuple[str, int, str]:
    """(split, index in the split, "file:line" or "file record N") of example ``i`` numbered
    across the splits; ``token``: a token's offset from a token-per-line sentence's first line."""
    split = next(name for name, r in ranges.items() if i in r)
    index = i - ranges[split].start
    file, unit = next((f, u) for start, f, u in reversed(sources[split]) if start <= index)
    first = int(source_line[i])
    if not first:
        return split, index, file
    if unit == "token_lines":
        return split, index, f"{file}:{first + (token or 0)}"
    return split, index, f"{file} record {first}" if unit == "records" else f"{file}:{first}"


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
        import numpy as np

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
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

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
    sources = {s: [(0, manifest.get("sources", {}).get(s, s), manifest.get("source_units", {}).get(s, "token_lines"))]
               for s in ranges}
    for s, parts in manifest.get("source_files", {}).items():  # a split of several sources
        starts = [0, *itertools.accumulate(part["sentences"] for part in parts)]
        sources[s] = [(start, part["source"], part["unit"]) for start, part in zip(starts, parts)]
    corpus = Corpus(names, ranges, sources, np.concatenate(lines), n_tok, n_tag, words, word_offsets, ids, vocab,
                    tokens, tags, offsets)
    corpus.dup_of, corpus.leak_of = _same_sentences(corpus)
    return corpus


def _same_sentences(corpus: Corpus):
    """(dup_of, leak_of): for each sentence the first earlier one of its split with the same
    tokens, and the first train sentence with the same tokens (-1: none). Exact: the key of a
    sentence is the bytes of its token ids."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    n = len(corpus.n_tokens)
    keys = pa.LargeBinaryArray.from_buffers(
        pa.large_binary(), n, [None, pa.py_buffer(corpus.word_offsets * 4), pa.py_buffer(np.ascontiguousarray(corpus.ids))])
    dup_of, leak_of = np.full(n, -1, np.int64), np.full(n, -1, np.int64)
    train = corpus.ranges.get("train")
    for split, r in corpus.ranges.items():
        part = keys.slice(r.start, len(r))
        uid = pc.dictionary_encode(part).indices.to_numpy()  # numbered in order of first appearance
        first = np.unique(uid, return_index=True)[1]
        dup_of[r.start:r.stop] = r.start + first[uid]
        dup_of[r.start + first] = -1
        if split != "train" and train is not None:
            found = pc.fill_null(pc.index_in(part, value_set=keys.slice(train.start, len(train))), -1).to_numpy()
            leak_of[r.start:r.stop] = np.where(found >= 0, train.start + found, -1)
    return dup_of, leak_of


def _token_lengths(tokenizer, items: list, **kwargs) -> list[int]:
    out: list[int] = []
    for i in range(0, len(items), 8192):
        enc = tokenizer(items[i:i + 8192], return_attention_mask=False, return_token_type_ids=False, **kwargs)
        out.extend(map(len, enc["input_ids"]))
    return out


def subtoken_counts(tokenizer_spec: str, corpus: Corpus, level: str):
    """Sub-tokens per sentence, specials included, as preprocess's tokenizer makes them. With
    pre-split words the tokenizer encodes each word on its own, so a sentence's count is the sum
    over its words: each distinct word is tokenized once. Character-level sentences are texts:
    each distinct one is tokenized once."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from nerflow.preprocess import load_tokenizer

    tokenizer = load_tokenizer(tokenizer_spec, "validate.tokenizer")
    if level == "char":
        sentences = pa.LargeListArray.from_arrays(pa.array(corpus.word_offsets), corpus.words.combine_chunks())
        encoded = pc.dictionary_encode(pc.binary_join(sentences, ""))
        counts = np.array(_token_lengths(tokenizer, encoded.dictionary.to_pylist()), dtype=np.int64)
        return counts[encoded.indices.to_numpy()]
    per_word = np.array(_token_lengths(tokenizer, [[w] for w in corpus.vocab.to_pylist()],
                                       is_split_into_words=True, add_special_tokens=False), dtype=np.int32)
    return _sums(per_word[corpus.ids], corpus.word_offsets) + tokenizer.num_special_tokens_to_add(pair=False)


def tag_facts(corpus: Corpus) -> dict[str, Any]:
    """Per token row: IOB2 validity, entity start and type (conlleval's rule, as
    data.entity_types: a B-X, or an I-X that does not continue an X, starts an entity)."""
    import numpy as np

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
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc

    checks = params.checks
    level = manifest.get("level", "word")
    facts_by_tag = tag_facts(corpus)
    starts, kinds = facts_by_tag["entity_start"], facts_by_tag["kinds"]
    type_counts = {}
    for split in SPLITS:
        r = corpus.ranges.get(split, range(0))
        lo, hi = corpus.offsets[r.start] if r else 0, corpus.offsets[r.stop] if r else 0
        counted = np.bincount(facts_by_tag["entity_kind"][lo:hi][starts[lo:hi]], minlength=len(kinds))
        type_counts[split] = {kinds[k]: int(c) for k, c in enumerate(counted) if c}
    train = corpus.ranges.get("train", range(0))
    seen = np.zeros(len(corpus.names), bool)
    seen[np.unique(corpus.tags[corpus.offsets[train.start]:corpus.offsets[train.stop]])] = True

    lengths = corpus.n_tokens
    q1, q3 = np.quantile(lengths, [0.25, 0.75])
    limit = q3 + checks.length_outliers.iqr_factor * (q3 - q1)
    counted_subtokens = bool(params.tokenizer) and checks.subtoken_overflow.severity != "off"
    over = (subtoken_counts(params.tokenizer, corpus, level) > params.max_length) if counted_subtokens \
        else np.zeros(len(lengths), bool)
    entities = _sums(starts, corpus.offsets)
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
    drift_rows = [{"compared": f"{split} vs train", "distance": _tv(shares[split], shares["train"])}
                  for split in ("validation", "test") if type_counts[split]]
    reference = params.drift_reference
    if reference and Path(reference).exists():
        ref = read_json(reference).get("type_shares", {}).get("train")
        if ref:
            drift_rows.append({"compared": f"train vs {reference}", "distance": _tv(shares["train"], ref)})
    drift = pd.DataFrame(drift_rows or [{"compared": "none", "distance": 0.0}])
    tables = {"sentences": sentences, "eval_sentences": pd.DataFrame({"leaked": corpus.leak_of[train.stop:] >= 0}),
              "tokens": tokens, "types": types, "drift": drift}
    facts = {
        "level": level,
        "type_counts": type_counts,
        "type_shares": shares,
        "drift": drift_rows,
        "length_outlier_limit": float(limit),
        "max_length": params.max_length,
        "over_max_length": {
            "sentences": int(over.sum()),
            "entities": int(entities[over].sum()),
            "note": "split into overlapping windows by preprocess, not cut" if counted_subtokens else "tokenizer not given",
        },
    }
    over_facts = facts["over_max_length"]
    over_facts["line"] = (f"sentences over max_length {params.max_length} sub-tokens: {over_facts['sentences']} "
                          f"({over_facts['entities']} entities; {over_facts['note']})")
    return tables, facts


def token_tables(dataset, manifest: dict[str, Any], params: ValidateParams) -> tuple[dict, dict, Callable]:
    """Token classification's GX tables, facts and ``locate(table, row, check)``."""
    corpus = read_corpus(dataset, manifest)
    tables, facts = build_tables(corpus, manifest, params)

    def locate(table: str, row: int, check: str) -> dict[str, Any]:
        if table in ("types", "drift"):
            return table_row(tables[table], row)
        return corpus.example(table, row, check)

    return tables, facts, locate


def table_row(frame, row: int) -> dict[str, Any]:
    """A row of a small GX table (per type, split or compared distribution) as plain values."""
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in frame.iloc[row].items()}


def _tv(p: dict[str, float], q: dict[str, float]) -> float:
    """Total variation distance between two distributions of types or classes (0 = same, 1 = disjoint)."""
    return 0.5 * sum(abs(p.get(k, 0.0) - q.get(k, 0.0)) for k in set(p) | set(q))


def at_most(column: str, what: str, fraction: float, stops: str = ""):
    """The boolean ``column`` is True on at most ``fraction`` of the rows."""
    import great_expectations.expectations as gxe

    return gxe.ExpectColumnValuesToBeInSet(column=column, value_set=[False], mostly=max(0.0, 1.0 - fraction),
                                           description=f"{what} at most {fraction:.0%}{stops}")


def suites(specs: list[tuple[str, str, Callable]], checks: Checks) -> dict[str, list]:
    """{table: [GX expectation]} from (check name, table, make) specs, skipping checks that are
    ``off``. A name ``check.threshold`` (``duplicates.error_fraction``) is that check's second
    expectation: an error whatever the check's severity, so the run stops above it."""
    out: dict[str, list] = {}
    for name, table, make in specs:
        check, _, threshold = name.partition(".")
        severity = getattr(checks, check).severity
        if severity == "off":
            continue
        severity = "error" if threshold else severity
        expectation = make()
        expectation.severity = GX_SEVERITY[severity]
        expectation.meta = {"check": name, "severity": severity}
        out.setdefault(table, []).append(expectation)
    return out


def expectations(checks: Checks, level: str = "word") -> dict[str, list]:
    """{table: [GX expectation]} for every token-classification check not switched off."""
    import great_expectations.expectations as gxe

    c = checks
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
        ("control_characters", "tokens", lambda: gxe.ExpectColumnValuesToNotMatchRegex(
            column="token_check" if level == "char" else "token", regex=POISON_PATTERN, description=POISON_DESCRIPTION)),
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


def run_gx(tables: dict[str, Any], checks: dict[str, list]) -> list[dict[str, Any]]:
    """Run each table's suite. Failing rows come back as positions (the examples are located
    afterwards): GX's per-row index columns and its index query cost seconds per 100k failing
    rows. GX's batch fingerprint (a hash of every row of a frame under 1 GB: ~3 s and ~800 MB
    per 20M rows) is skipped; the dataset's content hash names the data version."""
    from unittest import mock

    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig
    from great_expectations.execution_engine import pandas_execution_engine

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    source = context.data_sources.add_pandas("nerflow")
    results = []
    for name, expectation_list in checks.items():
        frame = tables[name]
        if frame.empty:
            continue
        batch = source.add_dataframe_asset(name).add_batch_definition_whole_dataframe("all")
        suite = context.suites.add(gx.ExpectationSuite(name=f"{SUITE_PREFIX}{name}"))
        for expectation in expectation_list:
            suite.add_expectation(expectation)
        definition = context.validation_definitions.add(gx.ValidationDefinition(name=f"validate_{name}", data=batch, suite=suite))
        with mock.patch.object(pandas_execution_engine, "HASH_THRESHOLD", 0):
            result = definition.run(
                batch_parameters={"dataframe": frame},
                result_format={"result_format": "SUMMARY", "partial_unexpected_count": EXAMPLES,
                               "return_unexpected_index_query": False},
            )
        results.append(result.to_json_dict())
    return results


def summarise(gx_results: list[dict[str, Any]], locate) -> list[dict[str, Any]]:
    """One entry per expectation; ``locate(table, row, check)`` describes a failing row."""
    checks = []
    for suite in gx_results:
        table = suite["suite_name"].removeprefix(SUITE_PREFIX)
        for r in suite["results"]:
            cfg = r["expectation_config"]
            res = r.get("result", {})
            meta = cfg.get("meta") or {}
            name = meta.get("check", cfg["type"])
            checks.append({
                "name": name,
                "check": cfg.get("description") or cfg["type"],
                "expectation": cfg["type"],
                "table": table,
                "severity": meta.get("severity", "error"),
                "success": bool(r["success"]),
                "rows": res.get("element_count"),
                "failing_rows": res.get("unexpected_count", 0) or 0,
                "failing_percent": round(res.get("unexpected_percent") or 0.0, 3),
                "examples": [locate(table, row, name) for row in (res.get("partial_unexpected_index_list") or [])[:EXAMPLES]],
                "error": (r.get("exception_info") or {}).get("exception_message"),
            })
    return checks


def describe(example: dict[str, Any]) -> str:
    """A located example in words: ``train sentence 240 (/data/train.txt:4352) token 'Paris' tag
    'I-LOC'``, ``train text 3 (train.tsv:5) label '3' text 'great'``; a row of a small table
    (per type, split, compared distribution) as its column values."""
    unit = next((u for u in ("sentence", "text") if isinstance(example.get(u), int)), None)
    if unit is None:
        return ", ".join(f"{k} {v}" for k, v in example.items())
    where = f"{example.get('split')} {unit} {example.get(unit)} ({example.get('line')})"
    if "token" in example:
        where += f" token {example['token']!r} tag {example.get('tag')!r}"
    if "label" in example:
        where += f" label {example['label']!r}"
    if "excerpt" in example:
        where += f" text {example['excerpt']!r}"
    if "same_as" in example:
        where += f", same as {example['same_as']}"
    return where


def validate_dataset(params: ValidateParams | dict[str, Any] | None, dataset_dir: str | Path,
                     report_dir: str | Path) -> dict[str, Any]:
    """Validate the canonical dataset; write the report; raise ValidationFailed on a failed error check."""
    params = section(ValidateParams, params)
    manifest = read_manifest(dataset_dir)
    task = task_of(manifest)
    tables, facts, locate = task.validation_tables(load_dataset_dir(dataset_dir), manifest, params)
    gx_results = run_gx(tables, task.expectations(params.checks, facts))
    checks = summarise(gx_results, locate)
    failed = [c for c in checks if not c["success"] and c["severity"] == "error"]
    summary = {
        "task": task.name,
        "success": not failed,
        "errors": len(failed),
        "warnings": sum(not c["success"] and c["severity"] == "warning" for c in checks),
        "content_hash": manifest["content_hash"],
        "splits": manifest["splits"],
        "labels": manifest["labels"],
        **facts,
        "checks": checks,
    }
    with atomic_dir(report_dir) as tmp:
        write_json(tmp / "results.json", {**summary, "great_expectations": gx_results})
        with atomic_file(tmp / "report.html") as fh:
            fh.write(render_html(summary))
    if failed and params.fail_on_error:
        raise ValidationFailed(f"data validation failed, {len(failed)} error check(s): "
                               + "; ".join(map(failure, failed)) + f"; report: {Path(report_dir) / 'report.html'}")
    return summary


def failure(check: dict[str, Any]) -> str:
    """One failed check in a line: what, how many rows, the first one."""
    text = f"{check['check']}: {check['failing_rows']} row(s) ({check['failing_percent']}%)"
    if check["examples"]:
        text += f", first at {describe(check['examples'][0])}"
    return text + (f" ({check['error']})" if check["error"] else "")


def format_table(summary: dict[str, Any]) -> str:
    lines = [f"{'check':<64} {'severity':<8} {'result':<6} {'failing':>8}"]
    for c in summary["checks"]:
        status = "ok" if c["success"] else ("FAIL" if c["severity"] == "error" else "WARN")
        lines.append(f"{c['check'][:64]:<64} {c['severity']:<8} {status:<6} {c['failing_rows']:>8}")
    over = summary.get("over_max_length", {})
    lines.append(over.get("line") or f"sentences over max_length {summary.get('max_length')} sub-tokens: "
                 f"{over.get('sentences', 0)} ({over.get('entities', 0)} entities; {over.get('note', '')})")
    return "\n".join(lines)


def render_html(summary: dict[str, Any]) -> str:
    """The report: verdict, data version, labels, the task's own sections, the checks."""
    esc = html.escape
    rows = []
    for c in summary["checks"]:
        status = "ok" if c["success"] else ("FAIL" if c["severity"] == "error" else "WARN")
        examples = "".join(f"<li>{esc(describe(e))}</li>" for e in c["examples"])
        rows.append(
            f"<tr class='{status.lower()}'><td>{esc(c['check'])}</td><td>{esc(c['severity'])}</td>"
            f"<td>{status}</td><td>{c['failing_rows']} / {c['rows']} ({c['failing_percent']}%)</td>"
            f"<td><ul>{examples}</ul>{esc(c['error'] or '')}</td></tr>"
        )
    task = task_of(summary)
    verdict = "PASSED" if summary["success"] else "FAILED"
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>nerflow data validation: {verdict}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;margin-bottom:2em}}
td,th{{border:1px solid #ccc;padding:4px 8px;vertical-align:top;text-align:left}}
tr.fail td{{background:#fdd}}tr.warn td{{background:#ffd}}tr.ok td:nth-child(3){{color:#070}}</style></head>
<body><h1>Data validation {verdict}</h1>
<p>{summary.get('errors', 0)} error(s), {summary.get('warnings', 0)} warning(s).
Data version (content hash): <code>{esc(summary['content_hash'])}</code>; task: {esc(task.name)}</p>
<p>Labels: {esc(' '.join(summary['labels']))}</p>
{task.report_html(summary)}
<h2>Checks (Great Expectations)</h2>
<table><tr><th>check</th><th>severity</th><th>result</th><th>failing rows</th><th>first examples</th></tr>
{''.join(rows)}</table></body></html>
"""


def token_report_html(summary: dict[str, Any]) -> str:
    """Token classification's sections: splits, entities per type, type drift, long sentences."""
    esc = html.escape
    splits = "".join(
        f"<tr><td>{esc(s)}</td><td>{v['sentences']}</td><td>{v['tokens']}</td><td>{v['entities']}</td></tr>"
        for s, v in summary["splits"].items()
    )
    counts = summary.get("type_counts", {})
    types = sorted(set().union(*[set(v) for v in counts.values()])) if counts else []
    type_rows = "".join(
        f"<tr><td>{esc(t)}</td>" + "".join(f"<td>{counts.get(s, {}).get(t, 0)}</td>" for s in SPLITS) + "</tr>" for t in types
    )
    drift = "".join(f"<li>{esc(d['compared'])}: {d['distance']:.3f}</li>" for d in summary.get("drift", []))
    over = summary.get("over_max_length", {})
    return f"""<p>Level: {esc(summary.get('level', 'word'))}</p>
<h2>Splits</h2><table><tr><th>split</th><th>sentences</th><th>tokens</th><th>entities</th></tr>{splits}</table>
<h2>Entities per type</h2><table><tr><th>type</th>{''.join(f'<th>{s}</th>' for s in SPLITS)}</tr>{type_rows}</table>
<p>Type distribution drift (total variation distance):</p><ul>{drift}</ul>
<p>Sentences over max_length ({summary.get('max_length')}) sub-tokens: {over.get('sentences', 0)},
holding {over.get('entities', 0)} entities ({esc(over.get('note', ''))}).</p>"""
