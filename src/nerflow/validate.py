"""Step `validate`: check the canonical dataset with Great Expectations.

Two tables go through GX: one row per sentence and one row per token, with derived columns
for the NER-specific checks (IOB2 validity, label seen in train). Every expectation carries a
severity: ``critical`` stops the run, ``warning`` is reported only. Writes ``results.json``
(GX's validation results plus a summary) and ``report.html`` into the report directory.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from nerflow import NerflowError
from nerflow.atomic import atomic_dir, atomic_file, write_json
from nerflow.data import SPLITS, load_dataset_dir, read_manifest

LABEL_PATTERN = r"^(O|[BI]-[^\s-][^\s]*)$"
CONTROL_OR_SPACE = r"[\s\x00-\x1f\x7f]"
EXAMPLES = 10


class ValidationFailed(NerflowError):
    pass


def _tables(dataset, manifest: dict[str, Any]):
    import pandas as pd

    sentence_rows: dict[str, list] = {k: [] for k in ("split", "sentence", "line", "n_tokens", "n_tags")}
    token_cols = ("split", "sentence", "line", "token", "tag", "iob2_valid", "seen_in_train")
    token_rows: dict[str, list] = {k: [] for k in token_cols}
    train_labels: set[str] = set()
    for split in SPLITS:
        if split not in dataset:
            continue
        names = dataset[split].features["ner_tags"].feature.names
        file = manifest.get("sources", {}).get(split, split)
        for i, row in enumerate(dataset[split]):
            tags = [names[t] if 0 <= t < len(names) else str(t) for t in row["ner_tags"]]
            if split == "train":
                train_labels.update(tags)
            tokens = row["tokens"]
            first = row.get("source_line") or 0
            sentence_rows["split"].append(split)
            sentence_rows["sentence"].append(i)
            sentence_rows["line"].append(f"{file}:{first}")
            sentence_rows["n_tokens"].append(len(tokens))
            sentence_rows["n_tags"].append(len(tags))
            prev = "O"
            for j, (token, tag) in enumerate(zip(tokens, tags)):
                token_rows["split"].append(split)
                token_rows["sentence"].append(i)
                token_rows["line"].append(f"{file}:{first + j}" if first else f"{file}")
                token_rows["token"].append(token)
                token_rows["tag"].append(tag)
                token_rows["iob2_valid"].append(
                    not tag.startswith("I-") or prev in (f"B-{tag[2:]}", tag)
                )
                token_rows["seen_in_train"].append(True)  # filled in below for dev/test
                prev = tag
    tokens = pd.DataFrame(token_rows)
    tokens["seen_in_train"] = tokens["tag"].isin(train_labels)
    return pd.DataFrame(sentence_rows), tokens


def _expectations(params: dict[str, Any]):
    import great_expectations.expectations as gxe

    max_tokens = int(params.get("max_sentence_tokens", 1000))
    sentence_checks = [
        gxe.ExpectColumnPairValuesToBeEqual(
            column_A="n_tokens", column_B="n_tags", severity="critical",
            description="every sentence has as many tags as tokens",
        ),
        gxe.ExpectColumnValuesToBeBetween(
            column="n_tokens", min_value=1, max_value=max_tokens, severity="critical",
            description=f"sentence length between 1 and {max_tokens} tokens",
        ),
    ]
    token_checks = [
        gxe.ExpectColumnValueLengthsToBeBetween(
            column="token", min_value=1, severity="critical",
            description="no empty token",
        ),
        gxe.ExpectColumnValuesToNotMatchRegex(
            column="token", regex=CONTROL_OR_SPACE, severity="critical",
            description="no whitespace or control character inside a token",
        ),
        gxe.ExpectColumnValuesToMatchRegex(
            column="tag", regex=LABEL_PATTERN, severity="critical",
            description="every tag is O, B-<type> or I-<type>",
        ),
        gxe.ExpectColumnValuesToBeInSet(
            column="iob2_valid", value_set=[True], severity="critical",
            description="valid IOB2: an I-X follows B-X or I-X",
        ),
        gxe.ExpectColumnValuesToBeInSet(
            column="seen_in_train", value_set=[True], severity="critical",
            description="every dev/test label occurs in train",
        ),
    ]
    return {"sentences": sentence_checks, "tokens": token_checks}


def _run_gx(tables: dict[str, Any], checks: dict[str, list]) -> list[dict[str, Any]]:
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    source = context.data_sources.add_pandas("nerflow")
    results = []
    for name, frame in tables.items():
        batch = source.add_dataframe_asset(name).add_batch_definition_whole_dataframe("all")
        suite = context.suites.add(gx.ExpectationSuite(name=f"ner_{name}"))
        for expectation in checks[name]:
            suite.add_expectation(expectation)
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=f"validate_{name}", data=batch, suite=suite)
        )
        index_cols = ["split", "sentence", "line"] + (["token", "tag"] if name == "tokens" else [])
        result = definition.run(
            batch_parameters={"dataframe": frame},
            result_format={
                "result_format": "SUMMARY",
                "partial_unexpected_count": EXAMPLES,
                "unexpected_index_column_names": index_cols,
            },
        )
        results.append(result.to_json_dict())
    return results


def _summarise(gx_results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    checks = []
    for suite in gx_results:
        for r in suite["results"]:
            cfg = r["expectation_config"]
            res = r.get("result", {})
            examples = res.get("partial_unexpected_index_list") or []
            checks.append(
                {
                    "check": cfg.get("description") or cfg["type"],
                    "expectation": cfg["type"],
                    "table": suite["suite_name"].removeprefix("ner_"),
                    "severity": cfg.get("severity", "critical"),
                    "success": bool(r["success"]),
                    "rows": res.get("element_count"),
                    "failing_rows": res.get("unexpected_count", 0) or 0,
                    "examples": examples[:EXAMPLES],
                    "error": (r.get("exception_info") or {}).get("exception_message"),
                }
            )
    return checks


def _describe(example: dict[str, Any]) -> str:
    where = f"{example.get('split')} sentence {example.get('sentence')} ({example.get('line')})"
    if "token" in example:
        where += f" token {example['token']!r} tag {example.get('tag')!r}"
    return where


def validate_dataset(params: dict[str, Any], dataset_dir: str | Path, report_dir: str | Path) -> dict[str, Any]:
    """Validate the canonical dataset; write the report; raise ValidationFailed on a critical failure."""
    dataset = load_dataset_dir(dataset_dir)
    manifest = read_manifest(dataset_dir)
    sentences, tokens = _tables(dataset, manifest)
    gx_results = _run_gx({"sentences": sentences, "tokens": tokens}, _expectations(params))
    checks = _summarise(gx_results)
    failed = [c for c in checks if not c["success"] and c["severity"] == "critical"]
    summary = {
        "success": not failed,
        "content_hash": manifest["content_hash"],
        "splits": manifest["splits"],
        "labels": manifest["labels"],
        "checks": checks,
    }
    with atomic_dir(report_dir) as tmp:
        write_json(tmp / "results.json", {**summary, "great_expectations": gx_results})
        with atomic_file(tmp / "report.html") as fh:
            fh.write(render_html(summary))
    if failed and params.get("fail_on_error", True):
        first = failed[0]
        example = _describe(first["examples"][0]) if first["examples"] else "see report"
        more = f"; {len(failed) - 1} more failing check(s)" if len(failed) > 1 else ""
        raise ValidationFailed(
            f"data validation failed: {first['check']}: {first['failing_rows']} row(s), "
            f"first at {example}{more}; report: {Path(report_dir) / 'report.html'}"
        )
    return summary


def format_table(summary: dict[str, Any]) -> str:
    lines = [f"{'check':<52} {'severity':<9} {'result':<6} {'failing':>8}"]
    for c in summary["checks"]:
        status = "ok" if c["success"] else "FAIL"
        lines.append(f"{c['check'][:52]:<52} {c['severity']:<9} {status:<6} {c['failing_rows']:>8}")
    return "\n".join(lines)


def render_html(summary: dict[str, Any]) -> str:
    esc = html.escape
    rows = []
    for c in summary["checks"]:
        status = "ok" if c["success"] else "FAIL"
        examples = "".join(f"<li>{esc(_describe(e))}</li>" for e in c["examples"])
        rows.append(
            f"<tr class='{status.lower()}'><td>{esc(c['check'])}</td><td>{esc(c['severity'])}</td>"
            f"<td>{status}</td><td>{c['failing_rows']} / {c['rows']}</td>"
            f"<td><ul>{examples}</ul>{esc(c['error'] or '')}</td></tr>"
        )
    splits = "".join(
        f"<tr><td>{esc(s)}</td><td>{v['sentences']}</td><td>{v['tokens']}</td><td>{v['entities']}</td></tr>"
        for s, v in summary["splits"].items()
    )
    verdict = "PASSED" if summary["success"] else "FAILED"
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>nerflow data validation: {verdict}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;margin-bottom:2em}}
td,th{{border:1px solid #ccc;padding:4px 8px;vertical-align:top;text-align:left}}
tr.fail td{{background:#fdd}}tr.ok td:nth-child(3){{color:#070}}</style></head>
<body><h1>Data validation {verdict}</h1>
<p>Data version (content hash): <code>{esc(summary['content_hash'])}</code></p>
<p>Labels: {esc(' '.join(summary['labels']))}</p>
<h2>Splits</h2><table><tr><th>split</th><th>sentences</th><th>tokens</th><th>entities</th></tr>{splits}</table>
<h2>Checks (Great Expectations)</h2>
<table><tr><th>check</th><th>severity</th><th>result</th><th>failing rows</th><th>first examples</th></tr>
{''.join(rows)}</table></body></html>
"""
