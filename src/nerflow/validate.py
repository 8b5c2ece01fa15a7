"""Step `validate`: check the canonical dataset with a Great Expectations suite that knows NER.

GX runs over five small tables built from the dataset, with derived columns for the
NER-specific checks: one row per sentence (lengths, duplicates, length outliers, sub-token
overflow), one per dev/test sentence (leakage from train), one per token (tag format, IOB2,
label seen in train), one per entity type (counts per split) and one per compared
distribution (type drift). Every check has a severity from params (``error`` stops the run,
``warning`` is reported, ``off`` skips it) and its thresholds. Writes ``results.json`` (GX's
validation results plus a summary) and ``report.html``.
"""

from __future__ import annotations

import html
from collections import Counter
from pathlib import Path
from typing import Any

from nerflow import NerflowError
from nerflow.atomic import atomic_dir, atomic_file, read_json, write_json
from nerflow.data import SPLITS, entity_types, load_dataset_dir, read_manifest

LABEL_PATTERN = r"^(?:O|[BI]-[^\s-]\S*)$"
EXAMPLES = 10
GX_SEVERITY = {"error": "critical", "warning": "warning"}

# check -> default settings; params `validate.checks.<name>` override them
DEFAULT_CHECKS: dict[str, dict[str, Any]] = {
    "lengths_match": {"severity": "error"},
    "sentence_length": {"severity": "error", "max_tokens": 1000},
    "empty_token": {"severity": "error"},
    "control_characters": {"severity": "error"},
    "tag_format": {"severity": "error"},
    "iob2": {"severity": "error"},
    "labels_in_train": {"severity": "error"},
    "duplicates": {"severity": "warning", "max_fraction": 0.15},
    "leakage": {"severity": "warning", "max_fraction": 0.10},
    "min_entities_per_type": {"severity": "warning", "min_count": 10},
    "type_drift": {"severity": "warning", "max_distance": 0.25},
    "length_outliers": {"severity": "warning", "iqr_factor": 3.0, "max_fraction": 0.01},
    "subtoken_overflow": {"severity": "warning", "max_fraction": 0.01},
}


class ValidationFailed(NerflowError):
    pass


def check_settings(params: dict[str, Any]) -> dict[str, dict[str, Any]]:
    given = params.get("checks") or {}
    unknown = set(given) - set(DEFAULT_CHECKS)
    if unknown:
        raise NerflowError(f"validate.checks: unknown check(s) {', '.join(sorted(unknown))}; known: {', '.join(DEFAULT_CHECKS)}")
    settings = {name: {**default, **(given.get(name) or {})} for name, default in DEFAULT_CHECKS.items()}
    for name, s in settings.items():
        if s["severity"] not in ("error", "warning", "off"):
            raise NerflowError(f"validate.checks.{name}.severity: expected error, warning or off, not {s['severity']!r}")
    return settings


def _subtoken_counts(tokenizer_spec: str | None, sentences: list[list[str]], level: str) -> list[int] | None:
    if not tokenizer_spec:
        return None
    from transformers import AutoTokenizer

    from nerflow.params import resolve_path

    tokenizer = AutoTokenizer.from_pretrained(str(resolve_path(tokenizer_spec)))
    if level == "char":
        enc = tokenizer(["".join(s) for s in sentences])
    else:
        enc = tokenizer([list(s) for s in sentences], is_split_into_words=True)
    return [len(ids) for ids in enc["input_ids"]]


def build_tables(dataset, manifest: dict[str, Any], params: dict[str, Any], settings: dict[str, dict]) -> tuple[dict, dict]:
    """The GX tables and the facts the report shows beside them (type counts, drift)."""
    import pandas as pd

    level = manifest.get("level", "word")
    sent: dict[str, list] = {k: [] for k in ("split", "sentence", "line", "n_tokens", "n_tags", "entities", "duplicate")}
    tok: dict[str, list] = {k: [] for k in ("split", "sentence", "line", "token", "tag", "iob2_valid")}
    all_tokens, train_keys, type_counts = [], set(), {s: Counter() for s in SPLITS}
    leak: dict[str, list] = {k: [] for k in ("split", "sentence", "line", "leaked")}
    for split in SPLITS:
        if split not in dataset:
            continue
        names = dataset[split].features["ner_tags"].feature.names
        file = manifest.get("sources", {}).get(split, split)
        unit = manifest.get("source_units", {}).get(split, "token_lines")
        seen: set = set()
        for i, row in enumerate(dataset[split]):
            tokens = row["tokens"]
            tags = [names[t] if 0 <= t < len(names) else str(t) for t in row["ner_tags"]]
            first = row.get("source_line") or 0
            key = tuple(tokens)
            types = entity_types(tags)
            type_counts[split].update(types)
            where = (f"{file} record {first}" if unit == "records" else f"{file}:{first}") if first else file
            sent["split"].append(split)
            sent["sentence"].append(i)
            sent["line"].append(where)
            sent["n_tokens"].append(len(tokens))
            sent["n_tags"].append(len(tags))
            sent["entities"].append(len(types))
            sent["duplicate"].append(key in seen)
            seen.add(key)
            all_tokens.append(tokens)
            if split == "train":
                train_keys.add(key)
            else:
                leak["split"].append(split)
                leak["sentence"].append(i)
                leak["line"].append(where)
                leak["leaked"].append(key in train_keys)
            prev = "O"
            for j, (token, tag) in enumerate(zip(tokens, tags)):
                tok["split"].append(split)
                tok["sentence"].append(i)
                tok["line"].append(f"{file}:{first + j}" if first and unit == "token_lines" else where)
                tok["token"].append(token)
                tok["tag"].append(tag)
                tok["iob2_valid"].append(not tag.startswith("I-") or prev in (f"B-{tag[2:]}", tag))
                prev = tag
    sentences = pd.DataFrame(sent)
    tokens = pd.DataFrame(tok)
    train_labels = set(tokens.loc[tokens["split"] == "train", "tag"])
    tokens["seen_in_train"] = tokens["tag"].isin(train_labels)
    if level == "char":  # spaces are tokens of their own in character-level corpora
        tokens["token_check"] = tokens["token"].where(tokens["token"] != " ", "_")
    else:
        tokens["token_check"] = tokens["token"]

    lengths = sentences["n_tokens"]
    q1, q3 = lengths.quantile(0.25), lengths.quantile(0.75)
    limit = q3 + float(settings["length_outliers"]["iqr_factor"]) * (q3 - q1)
    sentences["length_outlier"] = lengths > limit
    counts = _subtoken_counts(
        params.get("tokenizer") if settings["subtoken_overflow"]["severity"] != "off" else None, all_tokens, level
    )
    max_length = int(params.get("max_length", 256))
    sentences["over_max_length"] = [c > max_length for c in counts] if counts else False

    all_types = sorted(set().union(*type_counts.values()))
    types = pd.DataFrame({"type": all_types, **{s: [type_counts[s][t] for t in all_types] for s in SPLITS}})
    shares = {s: {t: type_counts[s][t] / max(1, sum(type_counts[s].values())) for t in all_types} for s in SPLITS}
    drift_rows = []
    for split in ("validation", "test"):
        if sum(type_counts[split].values()):
            drift_rows.append({"compared": f"{split} vs train", "distance": _tv(shares[split], shares["train"])})
    reference = params.get("drift_reference")
    if reference and Path(reference).exists():
        ref = read_json(reference).get("type_shares", {}).get("train")
        if ref:
            drift_rows.append({"compared": f"train vs {reference}", "distance": _tv(shares["train"], ref)})
    drift = pd.DataFrame(drift_rows or [{"compared": "none", "distance": 0.0}])
    tables = {"sentences": sentences, "eval_sentences": pd.DataFrame(leak), "tokens": tokens, "types": types, "drift": drift}
    facts = {
        "level": level,
        "type_counts": {s: dict(type_counts[s]) for s in SPLITS},
        "type_shares": shares,
        "drift": drift_rows,
        "length_outlier_limit": float(limit),
        "max_length": max_length,
        "over_max_length": {
            "sentences": int(sentences["over_max_length"].sum()),
            "entities": int(sentences.loc[sentences["over_max_length"], "entities"].sum()) if counts else 0,
            "note": "split into overlapping windows by preprocess, not cut" if counts else "tokenizer not given",
        },
    }
    return tables, facts


def _tv(p: dict[str, float], q: dict[str, float]) -> float:
    """Total variation distance between two type distributions (0 = same, 1 = disjoint)."""
    return 0.5 * sum(abs(p.get(k, 0.0) - q.get(k, 0.0)) for k in set(p) | set(q))


def expectations(settings: dict[str, dict]) -> dict[str, list]:
    """{table: [GX expectation]} for every check not switched off."""
    import great_expectations.expectations as gxe

    def none_flagged_beyond(name: str, column: str, what: str):
        """The boolean ``column`` is True on at most ``checks.<name>.max_fraction`` of the rows."""
        fraction = settings[name]["max_fraction"]
        return gxe.ExpectColumnValuesToBeInSet(column=column, value_set=[False], mostly=max(0.0, 1.0 - float(fraction)),
                                               description=f"{what} at most {fraction:.0%}")

    s = settings
    specs = [
        ("lengths_match", "sentences", lambda: gxe.ExpectColumnPairValuesToBeEqual(
            column_A="n_tokens", column_B="n_tags", description="every sentence has as many tags as tokens")),
        ("sentence_length", "sentences", lambda: gxe.ExpectColumnValuesToBeBetween(
            column="n_tokens", min_value=1, max_value=int(s["sentence_length"]["max_tokens"]),
            description=f"sentence length between 1 and {s['sentence_length']['max_tokens']} tokens")),
        ("duplicates", "sentences", lambda: none_flagged_beyond("duplicates", "duplicate", "duplicate sentences within a split")),
        ("length_outliers", "sentences", lambda: none_flagged_beyond(
            "length_outliers", "length_outlier", f"length outliers (> Q3 + {s['length_outliers']['iqr_factor']} IQR)")),
        ("subtoken_overflow", "sentences", lambda: none_flagged_beyond(
            "subtoken_overflow", "over_max_length", "sentences over max_length sub-tokens")),
        ("leakage", "eval_sentences", lambda: none_flagged_beyond("leakage", "leaked", "dev/test sentences also in train")),
        ("empty_token", "tokens", lambda: gxe.ExpectColumnValueLengthsToBeBetween(
            column="token", min_value=1, description="no empty token")),
        ("control_characters", "tokens", lambda: gxe.ExpectColumnValuesToNotMatchRegex(
            column="token_check", regex=r"[\s\x00-\x1f\x7f]",
            description="no whitespace or control character inside a token")),
        ("tag_format", "tokens", lambda: gxe.ExpectColumnValuesToMatchRegex(
            column="tag", regex=LABEL_PATTERN, description="every tag is O, B-<type> or I-<type>")),
        ("iob2", "tokens", lambda: gxe.ExpectColumnValuesToBeInSet(
            column="iob2_valid", value_set=[True],
            description="valid IOB2: an I-X follows B-X or I-X (IOB1/BIOES data: set data.scheme)")),
        ("labels_in_train", "tokens", lambda: gxe.ExpectColumnValuesToBeInSet(
            column="seen_in_train", value_set=[True], description="every dev/test label occurs in train")),
        ("min_entities_per_type", "types", lambda: gxe.ExpectColumnValuesToBeBetween(
            column="train", min_value=int(s["min_entities_per_type"]["min_count"]),
            description=f"at least {s['min_entities_per_type']['min_count']} train entities of every type")),
        ("type_drift", "drift", lambda: gxe.ExpectColumnValuesToBeBetween(
            column="distance", max_value=float(s["type_drift"]["max_distance"]),
            description=f"entity type distribution drift (total variation) at most {s['type_drift']['max_distance']}")),
    ]
    out: dict[str, list] = {}
    for name, table, make in specs:
        severity = s[name]["severity"]
        if severity == "off":
            continue
        expectation = make()
        expectation.severity = GX_SEVERITY[severity]
        expectation.meta = {"check": name, "severity": severity}
        out.setdefault(table, []).append(expectation)
    return out


INDEX_COLUMNS = {
    "sentences": ["split", "sentence", "line"],
    "eval_sentences": ["split", "sentence", "line"],
    "tokens": ["split", "sentence", "line", "token", "tag"],
    "types": ["type"],
    "drift": ["compared"],
}


def run_gx(tables: dict[str, Any], checks: dict[str, list]) -> list[dict[str, Any]]:
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    source = context.data_sources.add_pandas("nerflow")
    results = []
    for name, expectation_list in checks.items():
        frame = tables[name]
        if frame.empty:
            continue
        batch = source.add_dataframe_asset(name).add_batch_definition_whole_dataframe("all")
        suite = context.suites.add(gx.ExpectationSuite(name=f"ner_{name}"))
        for expectation in expectation_list:
            suite.add_expectation(expectation)
        definition = context.validation_definitions.add(gx.ValidationDefinition(name=f"validate_{name}", data=batch, suite=suite))
        result = definition.run(
            batch_parameters={"dataframe": frame},
            result_format={"result_format": "SUMMARY", "partial_unexpected_count": EXAMPLES,
                           "unexpected_index_column_names": INDEX_COLUMNS[name]},
        )
        results.append(result.to_json_dict())
    return results


def summarise(gx_results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    checks = []
    for suite in gx_results:
        for r in suite["results"]:
            cfg = r["expectation_config"]
            res = r.get("result", {})
            meta = cfg.get("meta") or {}
            checks.append({
                "name": meta.get("check", cfg["type"]),
                "check": cfg.get("description") or cfg["type"],
                "expectation": cfg["type"],
                "table": suite["suite_name"].removeprefix("ner_"),
                "severity": meta.get("severity", "error"),
                "success": bool(r["success"]),
                "rows": res.get("element_count"),
                "failing_rows": res.get("unexpected_count", 0) or 0,
                "failing_percent": round(res.get("unexpected_percent") or 0.0, 3),
                "examples": (res.get("partial_unexpected_index_list") or [])[:EXAMPLES],
                "error": (r.get("exception_info") or {}).get("exception_message"),
            })
    return checks


def describe(example: dict[str, Any]) -> str:
    if "sentence" not in example:
        return ", ".join(f"{k} {v}" for k, v in example.items())
    where = f"{example.get('split')} sentence {example.get('sentence')} ({example.get('line')})"
    if "token" in example:
        where += f" token {example['token']!r} tag {example.get('tag')!r}"
    return where


def validate_dataset(params: dict[str, Any], dataset_dir: str | Path, report_dir: str | Path) -> dict[str, Any]:
    """Validate the canonical dataset; write the report; raise ValidationFailed on a failed error check."""
    settings = check_settings(params)
    dataset = load_dataset_dir(dataset_dir)
    manifest = read_manifest(dataset_dir)
    tables, facts = build_tables(dataset, manifest, params, settings)
    gx_results = run_gx(tables, expectations(settings))
    checks = summarise(gx_results)
    failed = [c for c in checks if not c["success"] and c["severity"] == "error"]
    summary = {
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
    if failed and params.get("fail_on_error", True):
        first = failed[0]
        example = describe(first["examples"][0]) if first["examples"] else "see report"
        more = f"; {len(failed) - 1} more failing check(s)" if len(failed) > 1 else ""
        raise ValidationFailed(
            f"data validation failed: {first['check']}: {first['failing_rows']} row(s), "
            f"first at {example}{more}; report: {Path(report_dir) / 'report.html'}"
        )
    return summary


def format_table(summary: dict[str, Any]) -> str:
    lines = [f"{'check':<64} {'severity':<8} {'result':<6} {'failing':>8}"]
    for c in summary["checks"]:
        status = "ok" if c["success"] else ("FAIL" if c["severity"] == "error" else "WARN")
        lines.append(f"{c['check'][:64]:<64} {c['severity']:<8} {status:<6} {c['failing_rows']:>8}")
    over = summary.get("over_max_length", {})
    lines.append(f"sentences over max_length {summary.get('max_length')} sub-tokens: {over.get('sentences', 0)} "
                 f"({over.get('entities', 0)} entities; {over.get('note', '')})")
    return "\n".join(lines)


def render_html(summary: dict[str, Any]) -> str:
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
    verdict = "PASSED" if summary["success"] else "FAILED"
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>nerflow data validation: {verdict}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;margin-bottom:2em}}
td,th{{border:1px solid #ccc;padding:4px 8px;vertical-align:top;text-align:left}}
tr.fail td{{background:#fdd}}tr.warn td{{background:#ffd}}tr.ok td:nth-child(3){{color:#070}}</style></head>
<body><h1>Data validation {verdict}</h1>
<p>{summary.get('errors', 0)} error(s), {summary.get('warnings', 0)} warning(s).
Data version (content hash): <code>{esc(summary['content_hash'])}</code>; level: {esc(summary.get('level', 'word'))}</p>
<p>Labels: {esc(' '.join(summary['labels']))}</p>
<h2>Splits</h2><table><tr><th>split</th><th>sentences</th><th>tokens</th><th>entities</th></tr>{splits}</table>
<h2>Entities per type</h2><table><tr><th>type</th>{''.join(f'<th>{s}</th>' for s in SPLITS)}</tr>{type_rows}</table>
<p>Type distribution drift (total variation distance):</p><ul>{drift}</ul>
<p>Sentences over max_length ({summary.get('max_length')}) sub-tokens: {over.get('sentences', 0)},
holding {over.get('entities', 0)} entities ({esc(over.get('note', ''))}).</p>
<h2>Checks (Great Expectations)</h2>
<table><tr><th>check</th><th>severity</th><th>result</th><th>failing rows</th><th>first examples</th></tr>
{''.join(rows)}</table></body></html>
"""
