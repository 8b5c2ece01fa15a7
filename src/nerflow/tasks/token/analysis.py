"""Error analysis of a model's predictions: token confusion matrix, error kinds, the
highest-loss sentences, and an HTML page that shows gold and predicted entities."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

from nerflow.core.reports import render

# Heavy libraries (seqeval) are imported inside the functions that use them, on purpose:
# the CLI starts without them and a step loads only what it runs.

TEMPLATES = Path(__file__).parent / "templates"  # errors.html.j2
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


PALETTE = ["#8dd3c7", "#fdb462", "#bebada", "#fb8072", "#80b1d3", "#b3de69", "#fccde5", "#d9d9d9", "#bc80bd", "#ccebc5"]


def _marked(tokens: Sequence[str], tags: Sequence[str], joiner: str) -> list[tuple[str, str | None]]:
    """The sentence as pieces to show: (the tokens of an entity joined with ``joiner``, its
    type) or (a token outside entities, None); the page joins them with ``joiner``."""
    spans = {a: (t, b) for t, a, b in entities(tags)}
    out, i = [], 0
    while i < len(tokens):
        if i in spans:
            etype, b = spans[i]
            out.append((joiner.join(tokens[i : b + 1]), etype))
            i = b + 1
        else:
            out.append((tokens[i], None))
            i += 1
    return out


def error_report_html(title: str, rows: list[dict[str, Any]], kinds: dict[str, Any], metrics: dict[str, Any],
                      joiner: str = " ") -> str:
    """A page with the error counts and, for each row (tokens, gold, pred, loss), the sentence
    twice: gold entities highlighted, then predicted ones (templates/errors.html.j2)."""
    types = sorted({t for r in rows for tags in (r["gold"], r["pred"]) for t, _, _ in entities(tags)} | set(metrics.get("per_type", {})))
    colors = {t: PALETTE[i % len(PALETTE)] for i, t in enumerate(types)}
    return render("errors.html.j2", TEMPLATES, title=title, rows=rows, kinds=kinds, metrics=metrics, colors=colors,
                  kinds_order=ERROR_KINDS, joiner=joiner, spans=lambda tokens, tags: _marked(tokens, tags, joiner))
