"""Error analysis of a model's predictions: token confusion matrix, error kinds, the
highest-loss sentences, and an HTML page that shows gold and predicted entities."""

from __future__ import annotations

import html
import math
from collections import Counter
from typing import Any, Sequence

ERROR_KINDS = ("correct", "missed", "spurious", "wrong_type", "wrong_boundary", "wrong_type_and_boundary")


def entities(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """(type, first, last) spans by conlleval's rules (seqeval's get_entities)."""
    from seqeval.metrics.sequence_labeling import get_entities

    return get_entities(list(tags))


def error_kinds(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> dict[str, Any]:
    """Entity-level outcome counts. A gold entity is correct (same type and span), of the wrong
    type (same span), of the wrong boundary (same type, overlapping span), of the wrong type
    and boundary (overlapping), or missed (no overlapping prediction); a prediction that
    overlaps no gold entity is spurious. Also counted per gold type."""
    counts: Counter = Counter()
    by_type: dict[str, Counter] = {}
    for g_tags, p_tags in zip(gold, pred):
        g_ents, p_ents = entities(g_tags), entities(p_tags)
        p_set = set(p_ents)
        for ent in g_ents:
            etype, a, b = ent
            overlapping = [p for p in p_ents if p[1] <= b and a <= p[2]]
            if ent in p_set:
                kind = "correct"
            elif any(p[1:] == (a, b) for p in overlapping):
                kind = "wrong_type"
            elif any(p[0] == etype for p in overlapping):
                kind = "wrong_boundary"
            elif overlapping:
                kind = "wrong_type_and_boundary"
            else:
                kind = "missed"
            counts[kind] += 1
            by_type.setdefault(etype, Counter())[kind] += 1
        for p in p_ents:
            if not any(g[1] <= p[2] and p[1] <= g[2] for g in g_ents):
                counts["spurious"] += 1
                by_type.setdefault(p[0], Counter())["spurious"] += 1
    return {"counts": {k: counts[k] for k in ERROR_KINDS},
            "by_type": {t: {k: c[k] for k in ERROR_KINDS} for t, c in sorted(by_type.items())}}


def sentence_losses(gold: Sequence[Sequence[str]], dists: Sequence[Sequence], label_index: dict[str, int]) -> list[float]:
    """Mean cross-entropy of the gold labels per sentence (tokens without a distribution,
    such as spaces in character-level corpora, and labels unknown to the model are skipped)."""
    out = []
    for g_tags, d_row in zip(gold, dists):
        terms = [-math.log(max(d[label_index[t]], 1e-12)) for t, d in zip(g_tags, d_row) if d is not None and t in label_index]
        out.append(sum(terms) / len(terms) if terms else 0.0)
    return out


def confusion(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]], labels: Sequence[str]) -> list[list[int]]:
    """Token-level confusion matrix: rows gold, columns predicted, in ``labels`` order."""
    index = {label: i for i, label in enumerate(labels)}
    matrix = [[0] * len(labels) for _ in labels]
    for g_tags, p_tags in zip(gold, pred):
        for g, p in zip(g_tags, p_tags):
            if g in index and p in index:
                matrix[index[g]][index[p]] += 1
    return matrix


def confusion_png(matrix: list[list[int]], labels: Sequence[str], path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    m = np.asarray(matrix, dtype=float)
    rows = m.sum(1, keepdims=True)
    norm = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
    size = max(5.0, 0.6 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size * 0.85))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=90)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    ax.set_title("Token confusion (row-normalised; numbers are counts)")
    if len(labels) <= 30:
        for i in range(len(labels)):
            for j in range(len(labels)):
                if m[i, j]:
                    ax.text(j, i, f"{int(m[i, j])}", ha="center", va="center", fontsize=7,
                            color="white" if norm[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


PALETTE = ["#8dd3c7", "#fdb462", "#bebada", "#fb8072", "#80b1d3", "#b3de69", "#fccde5", "#d9d9d9", "#bc80bd", "#ccebc5"]


def _marked(tokens: Sequence[str], tags: Sequence[str], colors: dict[str, str], joiner: str) -> str:
    spans = {a: (t, b) for t, a, b in entities(tags)}
    out, i = [], 0
    while i < len(tokens):
        if i in spans:
            etype, b = spans[i]
            text = html.escape(joiner.join(tokens[i : b + 1]))
            out.append(f"<mark style='background:{colors.get(etype, '#eee')}'>{text}<sub>{html.escape(etype)}</sub></mark>")
            i = b + 1
        else:
            out.append(html.escape(tokens[i]))
            i += 1
    return joiner.join(out)


def error_report_html(title: str, rows: list[dict[str, Any]], kinds: dict[str, Any], metrics: dict[str, Any],
                      joiner: str = " ") -> str:
    """A page with the error counts and, for each row (tokens, gold, pred, loss), the sentence
    twice: gold entities highlighted, then predicted ones."""
    types = sorted({t for r in rows for tags in (r["gold"], r["pred"]) for t, _, _ in entities(tags)} | set(metrics.get("per_type", {})))
    colors = {t: PALETTE[i % len(PALETTE)] for i, t in enumerate(types)}
    legend = " ".join(f"<mark style='background:{c}'>{html.escape(t)}</mark>" for t, c in colors.items())
    kind_rows = "".join(
        f"<tr><td>{html.escape(t)}</td>" + "".join(f"<td>{c[k]}</td>" for k in ERROR_KINDS) + "</tr>"
        for t, c in kinds["by_type"].items()
    )
    sentences = []
    for r in rows:
        wrong = " class='wrong'" if r["gold"] != r["pred"] else ""
        sentences.append(
            f"<tr{wrong}><td>{r['index']}</td><td>{r['loss']:.3f}</td><td><div class='g'>gold: {_marked(r['tokens'], r['gold'], colors, joiner)}</div>"
            f"<div class='p'>pred: {_marked(r['tokens'], r['pred'], colors, joiner)}</div></td></tr>"
        )
    head = "".join(f"<th>{k.replace('_', ' ')}</th>" for k in ERROR_KINDS)
    totals = "".join(f"<td><b>{kinds['counts'][k]}</b></td>" for k in ERROR_KINDS)
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:70em}}table{{border-collapse:collapse;margin-bottom:2em}}
td,th{{border:1px solid #ccc;padding:4px 8px;vertical-align:top;text-align:left}}mark{{padding:1px 3px;border-radius:3px}}
sub{{font-size:65%;margin-left:2px}}.g,.p{{margin:2px 0}}.p{{color:#333}}tr.wrong td:first-child{{background:#fdd}}</style></head>
<body><h1>{html.escape(title)}</h1>
<p>F1 {metrics.get('f1', 0):.4f} (P {metrics.get('precision', 0):.4f}, R {metrics.get('recall', 0):.4f}), {metrics.get('sentences', len(rows))} sentences. Types: {legend}</p>
<h2>Error kinds (entities)</h2>
<table><tr><th>type</th>{head}</tr>{kind_rows}<tr><td><b>all</b></td>{totals}</tr></table>
<p>missed: a gold entity no prediction overlaps; spurious: a prediction that overlaps no gold entity;
wrong boundary: same type, overlapping span; wrong type: same span.</p>
<h2>Sentences with the highest loss</h2>
<table><tr><th>#</th><th>loss</th><th>gold / predicted</th></tr>{''.join(sentences)}</table>
<p><img src="confusion.png" alt="token confusion matrix" style="max-width:100%"></p></body></html>
"""
