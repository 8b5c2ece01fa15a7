"""Validation of the canonical text-classification dataset (a label per text): the GX tables,
facts and expectations that nerflow.steps.validate runs for the ``text-classification`` task.

The columns are read as Arrow arrays and every fact is derived for all texts at once (pyarrow
and numpy): one dictionary of the texts of a split gives exact duplicates and, looked up in
train's, leakage; one dictionary of the labels gives per-split counts, and through them each
text's label facts (in the label set, rare in train, seen in train). Each distinct text goes to
the tokenizer once, in batches, to count sub-tokens. GX runs over one row per text (empty,
duplicate, length outlier, over max_length, label facts), per dev/test text (leakage from
train), per split (class balance) and per compared distribution (class drift).

Rare labels are checked per text, not per label: a label with fewer than ``min_count`` train
texts is most likely a typo (a stray ``3`` in a 0/1 column), and what the user needs is the
file:line of each row holding it.
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
EXCERPT = 60  # characters of a text shown in an example


@dataclass
class Texts:
    """Every split's texts as flat arrays, numbered across the splits (SPLITS order).
    ``text``: the texts with null as ""; ``null``: where the text was null; ``blank``: where it
    is null, empty or only whitespace (Unicode's); ``label``: the label strings (null as "");
    ``dup_of``/``leak_of``: the earlier text of the same split / the train text that is the
    same, or -1."""

    ranges: dict[str, range]
    sources: dict[str, list[tuple[int, str, str]]]  # split -> (first text, file, unit) of each source
    source_line: Any
    text: Any
    null: Any
    label: Any
    blank: Any = None
    dup_of: Any = None
    leak_of: Any = None

    def where(self, i: int) -> dict[str, Any]:
        split, index, line = locate(self.ranges, self.sources, self.source_line, i)
        return {"split": split, "text": index, "line": line}

    def at(self, i: int) -> dict[str, Any]:
        """Text ``i``: where it is, its label and its start."""
        text = None if self.null[i] else self.text[i].as_py()
        excerpt = text if text is None or len(text) <= EXCERPT else text[:EXCERPT] + "..."
        return {**self.where(i), "label": self.label[i].as_py(), "excerpt": excerpt}

    def example(self, table: str, row: int, check: str) -> dict[str, Any]:
        """Where row ``row`` of GX table ``table`` (texts / eval_texts) comes from."""
        i = row + (self.ranges["train"].stop if table == "eval_texts" and "train" in self.ranges else 0)
        same = {"duplicates": self.dup_of, "leakage": self.leak_of}.get(check.split(".")[0])
        if same is None or same[i] < 0:
            return self.at(i)
        j = int(same[i])  # the same text: where it is and its label (a different one is a conflict)
        return {**self.at(i), "same_as": describe({**self.where(j), "label": self.label[j].as_py()})}


def read_texts(dataset, manifest: dict[str, Any]) -> Texts:
    """The splits' columns as flat Arrow / numpy arrays, with duplicates and leakage found."""
    ranges, texts, labels, lines = {}, [], [], []
    for split in SPLITS:
        if split not in dataset:
            continue
        table = dataset[split].data.table
        start = sum(map(len, lines))
        ranges[split] = range(start, start + table.num_rows)
        texts.extend(table.column("text").cast(pa.large_string()).chunks)
        labels.extend(table.column("label").cast(pa.string()).chunks)
        lines.append(pc.fill_null(table.column("source_line"), 0).to_numpy())
    raw = pa.chunked_array(texts, pa.large_string()).combine_chunks()
    null = raw.is_null().to_numpy(zero_copy_only=False)
    label = pc.fill_null(pa.chunked_array(labels, pa.string()).combine_chunks(), "")
    sources = source_starts(manifest, ranges, "records")
    line = np.concatenate(lines) if lines else np.zeros(0, np.int64)
    text = pc.fill_null(raw, "")
    blank = pc.equal(pc.utf8_trim_whitespace(text), "").to_numpy(zero_copy_only=False) | null
    out = Texts(ranges, sources, line, text, null, label, blank)
    out.dup_of, out.leak_of = _same_texts(out)
    return out


def _same_texts(texts: Texts):
    """(dup_of, leak_of) of the texts (core.gx.same_rows: the exact same text). Blank texts are
    neither: empty_text reports them."""
    dup_of, leak_of = same_rows(texts.text, texts.ranges)
    dup_of[texts.blank], leak_of[texts.blank] = -1, -1
    return dup_of, leak_of


def subtoken_lengths(tokenizer_spec: str, texts: Texts):
    """Sub-tokens per text, specials included, counted as preprocess does (the text whole, then
    the specials): each distinct text is tokenized once, in batches."""
    tokenizer = load_tokenizer(tokenizer_spec, "validate.tokenizer")
    encoded = pc.dictionary_encode(texts.text)
    counts = np.array(token_lengths(tokenizer, encoded.dictionary.to_pylist(), add_special_tokens=False, verbose=False),
                      np.int64)
    return counts[encoded.indices.to_numpy()] + tokenizer.num_special_tokens_to_add(pair=False)


def build_tables(dataset, manifest: dict[str, Any], params: ValidateParams) -> tuple[dict, dict, Callable]:
    """Text classification's GX tables, the facts the report shows beside them, and
    ``locate(table, row, check)``."""
    checks = params.checks
    texts = read_texts(dataset, manifest)
    labels = _label_counts(texts, manifest)
    label_set, train_count = labels["label_set"], labels["counts"]["train"]
    lengths = pc.utf8_length(texts.text).to_numpy().astype(np.int64)
    limit = iqr_limit(lengths, checks.length_outliers.iqr_factor)
    counted = bool(params.tokenizer) and checks.subtoken_overflow.severity != "off"
    over = (subtoken_lengths(params.tokenizer, texts) > params.max_length) if counted else np.zeros(len(texts.text), bool)
    train = texts.ranges.get("train", range(0))
    min_count = checks.rare_labels.min_count
    label_id = labels["label_id"]
    texts_table = pd.DataFrame({
        "empty": texts.blank,
        "duplicate": texts.dup_of >= 0,
        "length_outlier": lengths > limit,
        "over_max_length": over,
        "in_label_set": labels["in_set"][label_id],
        "rare_label": train_count[label_id] < min_count,
        "label_in_train": train_count[label_id] > 0,
    })
    balance_rows = [_balance(split, {x: labels["label_counts"][split][x] for x in label_set}) for split in SPLITS
                    if split in texts.ranges and len(texts.ranges[split]) and label_set]
    drift = drift_rows(labels["shares"], [s for s in ("validation", "test") if len(texts.ranges.get(s, ())) and len(train)],
                       params.drift_reference if len(train) else None, "class_shares")
    tables = {
        "texts": texts_table,
        "eval_texts": pd.DataFrame({"leaked": texts.leak_of[train.stop:] >= 0}),
        "balance": pd.DataFrame(balance_rows, columns=["split", "largest_class", "largest", "smallest_class",
                                                       "smallest", "ratio", "smallest_over_largest"]),
        "drift": pd.DataFrame(drift or [{"compared": "none", "distance": 0.0}]),
    }
    seen = labels["seen"]
    facts = {
        "level": "text",
        "label_counts": labels["label_counts"],
        "class_shares": labels["shares"],
        "label_set": {"from": "params" if manifest.get("label_set_from") == "params" else "data", "labels": label_set,
                      "outside": {x: sum(int(c[i]) for c in labels["counts"].values()) for i, x in enumerate(seen)
                                  if not labels["in_set"][i]}},
        "rare_labels": {"min_count": min_count,
                        "train_counts": {x: int(train_count[i]) for i, x in enumerate(seen) if train_count[i] < min_count}},
        "class_balance": {row["split"]: {k: v for k, v in row.items() if k not in ("split", "smallest_over_largest")}
                          for row in balance_rows},
        "drift": drift,
        "length_outlier_limit": float(limit),
        "max_length": params.max_length,
        "over_max_length": _over_facts(texts, over, params, counted),
    }

    def locate(table: str, row: int, check: str) -> dict[str, Any]:
        if table == "balance":
            return {k: v for k, v in balance_rows[row].items() if k != "smallest_over_largest"}
        if table == "drift":
            return table_row(tables[table], row)
        return texts.example(table, row, check)

    return tables, facts, locate


def _label_counts(texts: Texts, manifest: dict[str, Any]) -> dict[str, Any]:
    """Each text's label id among the distinct labels ``seen``, their counts per split (numpy, in
    ``seen`` order), the counts and shares per split by name (the label set first, then strays),
    and which distinct labels are in the label set."""
    encoded = pc.dictionary_encode(texts.label)
    label_id = encoded.indices.to_numpy()
    seen = encoded.dictionary.to_pylist()
    label_set = list(manifest["labels"])
    known = set(label_set)
    names = label_set + [x for x in seen if x not in known]
    counts = {split: np.zeros(len(seen), np.int64) for split in SPLITS}
    for split, r in texts.ranges.items():
        counts[split] = np.bincount(label_id[r.start:r.stop], minlength=len(seen))
    position = {x: i for i, x in enumerate(seen)}
    label_counts = {split: {x: int(c[position[x]]) if x in position else 0 for x in names}
                    for split, c in counts.items() if split in texts.ranges}
    shares = {split: {x: c / max(1, sum(v.values())) for x, c in v.items()} for split, v in label_counts.items()}
    return {"label_id": label_id, "seen": seen, "label_set": label_set, "counts": counts, "label_counts": label_counts,
            "shares": shares, "in_set": np.array([x in known for x in seen], bool)}


def _over_facts(texts: Texts, over: np.ndarray, params: ValidateParams, counted: bool) -> dict[str, Any]:
    """The texts over max_length sub-tokens, per split, and what preprocess does with them."""
    per_split = {split: int(over[r.start:r.stop].sum()) for split, r in texts.ranges.items()}
    note = ("preprocess keeps each one's head and tail within max_length (preprocess.truncation: head_tail; head: "
            "its start only); it does not window them") if counted else \
        ("tokenizer not given" if not params.tokenizer else "subtoken_overflow is off")
    return {"texts": int(over.sum()), "per_split": per_split, "note": note,
            "line": f"texts over max_length {params.max_length} sub-tokens: {int(over.sum())} ("
                    + ", ".join(f"{s} {v}" for s, v in per_split.items()) + f"; {note})"}


def _balance(split: str, counts: dict[str, int]) -> dict[str, Any]:
    """A split's largest and smallest class of the label set. The check compares smallest /
    largest (always finite) with 1 / max_ratio; ``ratio`` is None when a class is absent."""
    largest = max(counts, key=counts.get)
    smallest = min(counts, key=counts.get)
    big, small = counts[largest], counts[smallest]
    return {"split": split, "largest_class": largest, "largest": big, "smallest_class": smallest, "smallest": small,
            "ratio": round(big / small, 3) if small else None, "smallest_over_largest": small / big if big else 1.0}


def _named(labels: list[str], most: int = 10) -> str:
    return ", ".join(labels[:most]) + (f", ... ({len(labels)} labels)" if len(labels) > most else "")


def expectations(checks: Checks, facts: dict[str, Any]) -> dict[str, list]:
    """{table: [GX expectation]} for every text-classification check not switched off.
    ``label_set`` runs only when the label set came from params (data.label_names): a set read
    from the data holds every label by definition."""
    import great_expectations.expectations as gxe

    c = checks
    labels = facts.get("label_set", {}).get("labels", [])
    specs = [
        ("empty_text", "texts", lambda: gxe.ExpectColumnValuesToBeInSet(
            column="empty", value_set=[False], description="no empty, whitespace-only or null text")),
        ("duplicates", "texts", lambda: at_most(
            "duplicate", "duplicate texts within a split (the exact same text)", c.duplicates.max_fraction)),
        ("duplicates.error_fraction", "texts", lambda: at_most(
            "duplicate", "duplicate texts within a split (the exact same text)", c.duplicates.error_fraction, STOPS)),
        ("leakage", "eval_texts", lambda: at_most(
            "leaked", "dev/test texts also in train (the exact same text)", c.leakage.max_fraction)),
        ("leakage.error_fraction", "eval_texts", lambda: at_most(
            "leaked", "dev/test texts also in train (the exact same text)", c.leakage.error_fraction, STOPS)),
        ("label_set", "texts", lambda: gxe.ExpectColumnValuesToBeInSet(
            column="in_label_set", value_set=[True], description=f"every label is in data.label_names ({_named(labels)})")),
        ("rare_labels", "texts", lambda: gxe.ExpectColumnValuesToBeInSet(
            column="rare_label", value_set=[False],
            description=f"every label has at least {c.rare_labels.min_count} train texts (a rarer one is most likely a typo)")),
        ("labels_in_train", "texts", lambda: gxe.ExpectColumnValuesToBeInSet(
            column="label_in_train", value_set=[True], description="every dev/test label occurs in train")),
        ("class_balance", "balance", lambda: gxe.ExpectColumnValuesToBeBetween(
            column="smallest_over_largest", min_value=1 / c.class_balance.max_ratio,
            description=f"largest / smallest class count at most {c.class_balance.max_ratio:g} in every split")),
        ("class_drift", "drift", lambda: gxe.ExpectColumnValuesToBeBetween(
            column="distance", max_value=c.class_drift.max_distance,
            description=f"class distribution drift (total variation) at most {c.class_drift.max_distance}")),
        ("length_outliers", "texts", lambda: at_most(
            "length_outlier", f"text length outliers (> Q3 + {c.length_outliers.iqr_factor:g} IQR characters)",
            c.length_outliers.max_fraction)),
        ("subtoken_overflow", "texts", lambda: at_most(
            "over_max_length", "texts over max_length sub-tokens (cut to head and tail by preprocess)",
            c.subtoken_overflow.max_fraction)),
    ]
    if facts.get("label_set", {}).get("from") != "params":
        specs = [spec for spec in specs if spec[0] != "label_set"]
    return suites(specs, c)


def report_html(summary: dict[str, Any]) -> str:
    """Text classification's sections: splits with per-label counts, class shares and drift,
    balance, the label set, rare labels, texts over max_length and what preprocess does to them
    (templates/validation.html.j2)."""
    counts = summary.get("label_counts", {})
    labels = list(next(iter(counts.values()), {}))
    return render("validation.html.j2", TEMPLATES, summary=summary, counts=counts, labels=labels)
