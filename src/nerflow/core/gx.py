"""The Great Expectations harness every task's validation runs through: expectations from check
specs (severity and thresholds from params), GX run over pandas frames, results summarised with
each failing row located in its file and line, and the helpers tasks share to find duplicates
and leakage and to count sub-tokens.

GX reports failing rows by position; only the examples shown are turned into split, example,
file:line (a task's ``locate(table, row, check)``). Every check has a severity from params
(``error`` stops the run, ``warning`` is reported, ``off`` skips it) and its thresholds;
duplicates and leakage also stop the run above their ``error_fraction``.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Callable
from unittest import mock

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from nerflow.core.config import Checks
from nerflow.core.files import read_json
from nerflow.core.progress import progress

# Heavy libraries (GX) are imported inside the functions that use them, on purpose:
# the CLI starts without them and a step loads only what it runs.

EXAMPLES = 10
GX_SEVERITY = {"error": "critical", "warning": "warning"}
SUITE_PREFIX = "nerflow_"  # GX suite names: the prefix and the table's name
STOPS = " (error_fraction: above it the run stops)"


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


def token_lengths(tokenizer, items: list, what: str = "texts", **kwargs) -> list[int]:
    """Sub-tokens of each item (a text or a list of words), 8192 at a time, with progress."""
    out: list[int] = []
    with progress(len(items), "validate: sub-tokens", what) as bar:
        for i in range(0, len(items), 8192):
            enc = tokenizer(items[i:i + 8192], return_attention_mask=False, return_token_type_ids=False, **kwargs)
            out.extend(map(len, enc["input_ids"]))
            bar.update(len(enc["input_ids"]))
    return out


def table_row(frame, row: int) -> dict[str, Any]:
    """A row of a small GX table (per type, split or compared distribution) as plain values."""
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in frame.iloc[row].items()}


def total_variation(p: dict[str, float], q: dict[str, float]) -> float:
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


def run_gx(tables: dict[str, Any], checks: dict[str, list]) -> list[dict[str, Any]]:
    """Run each table's suite. Failing rows come back as positions (the examples are located
    afterwards): GX's per-row index columns and its index query cost seconds per 100k failing
    rows. GX's batch fingerprint (a hash of every row of a frame under 1 GB: ~3 s and ~800 MB
    per 20M rows) is skipped; the dataset's content hash names the data version."""

    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig
    from great_expectations.execution_engine import pandas_execution_engine

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    source = context.data_sources.add_pandas("nerflow")
    results = []
    bar = progress(sum(len(v) for v in checks.values()), "validate: GX", "expectations")
    for name, expectation_list in checks.items():
        frame = tables[name]
        if frame.empty:
            bar.update(len(expectation_list))
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
        bar.update(len(expectation_list))
    bar.close()
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


def source_starts(manifest: dict[str, Any], splits, default_unit: str) -> dict[str, list[tuple[int, str, str]]]:
    """{split: [(first example, file, unit) of each of its sources]} from a dataset's manifest:
    what ``locate`` turns an example's number into a file and line with."""
    sources = {s: [(0, manifest.get("sources", {}).get(s, s), manifest.get("source_units", {}).get(s, default_unit))]
               for s in splits}
    for s, parts in manifest.get("source_files", {}).items():  # a split of several sources
        starts = [0, *itertools.accumulate(part.get("sentences", part.get("texts", 0)) for part in parts)]
        sources[s] = [(start, part["source"], part["unit"]) for start, part in zip(starts, parts)]
    return sources


def same_rows(keys: pa.Array, ranges: dict[str, range]) -> tuple[np.ndarray, np.ndarray]:
    """(dup_of, leak_of): for each row the first earlier row of its split with the same key, and
    the first train row with the same key (-1: none). Exact: one dictionary of the keys per split."""
    n = len(keys)
    dup_of, leak_of = np.full(n, -1, np.int64), np.full(n, -1, np.int64)
    train = ranges.get("train")
    for split, r in ranges.items():
        part = keys.slice(r.start, len(r))
        uid = pc.dictionary_encode(part).indices.to_numpy()  # numbered in order of first appearance
        first = np.unique(uid, return_index=True)[1]
        dup_of[r.start:r.stop] = r.start + first[uid]
        dup_of[r.start + first] = -1
        if split != "train" and train is not None:
            found = pc.fill_null(pc.index_in(part, value_set=keys.slice(train.start, len(train))), -1).to_numpy()
            leak_of[r.start:r.stop] = np.where(found >= 0, train.start + found, -1)
    return dup_of, leak_of


def iqr_limit(lengths: np.ndarray, factor: float) -> float:
    """Q3 + ``factor`` x IQR of the lengths: above it an example is a length outlier."""
    q1, q3 = np.quantile(lengths, [0.25, 0.75]) if len(lengths) else (0.0, 0.0)
    return float(q3 + factor * (q3 - q1))


def drift_rows(shares: dict[str, dict[str, float]], compared, reference: str | None, key: str) -> list[dict[str, Any]]:
    """The drift table's rows: each split of ``compared`` against train (total variation of the type
    or class shares), and train against the train shares under ``key`` in a reference report
    (``validate.drift_reference``: an earlier run's results.json)."""
    rows = [{"compared": f"{split} vs train", "distance": total_variation(shares[split], shares["train"])}
            for split in compared]
    if reference and Path(reference).exists():
        ref = read_json(reference).get(key, {}).get("train")
        if ref:
            rows.append({"compared": f"train vs {reference}", "distance": total_variation(shares["train"], ref)})
    return rows
