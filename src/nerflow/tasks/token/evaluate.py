"""Token classification's evaluation: seqeval at word (or character) level on the test split and
on any further named test sets, with an error analysis.

Writes ``metrics.json`` (a DVC metric: the chosen scheme's overall and per-type scores at the
top, both seqeval modes under ``schemes``, KLUE's numbers for character-level data, one entry
per test set under ``test_sets``), ``predictions.jsonl`` (tokens, gold and predicted tags per
test sentence) and a report folder: ``confusion.csv`` (DVC plot), ``confusion.png``,
``errors.json`` (error kinds, highest-loss sentences), ``errors.html``, ``test_sets.md``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from nerflow.core.config import EvaluateParams, section
from nerflow.core.dataset import load_dataset_dir, read_manifest
from nerflow.core.files import atomic_dir, atomic_file, read_records, write_json
from nerflow.core.paths import resolve_path
from nerflow.core.reports import write_confusion
from nerflow.core.stats import by_group
from nerflow.tasks.base import TOKEN
from nerflow.tasks.token.analysis import (
    confusion,
    error_kinds,
    error_report_html,
    sentence_losses,
)
from nerflow.tasks.token.metrics import all_scores
from nerflow.tasks.token.predict import WordTagger
from nerflow.tasks.token.readers import read_split, to_iob2


def _extra_test_sets(params: EvaluateParams) -> list[tuple[str, list[list[str]], list[list[str]]]]:
    """Further test sets from ``evaluate.test_sets``: [{name, path, format?, scheme?, ...}]."""
    out = []
    for spec in params.test_sets:
        sentences = read_split(resolve_path(spec.path), spec.format, spec)
        out.append((spec.name, [s.tokens for s in sentences], [to_iob2(s.tags, spec.scheme) for s in sentences]))
    return out


def evaluate(params: EvaluateParams | dict[str, Any], model_dir: str | Path, dataset_dir: str | Path,
             metrics_out: str | Path, predictions_out: str | Path, report_dir: str | Path | None = None,
             split: str = "test") -> dict[str, Any]:
    """Evaluate for token classification (see the module doc)."""
    params = section(EvaluateParams, params)
    dataset = load_dataset_dir(dataset_dir)
    manifest = read_manifest(dataset_dir)
    level = manifest.get("level", "word")
    rows = dataset[split]
    names = rows.features["ner_tags"].feature.names
    test_sets = [(split, rows["tokens"], [[names[t] for t in tags] for tags in rows["ner_tags"]])]
    # consecutive sentences of one document: read in one window when the model was trained so
    documents = list(zip(rows["source"], rows["document"])) if "document" in rows.column_names else None
    test_sets += _extra_test_sets(params)
    tagger = WordTagger(model_dir, precision=params.precision, batch_size=params.batch_size)
    scheme = params.scheme

    results = {name: _tagged(tagger, tokens, gold, level, name == split, documents if name == split else None)
               for name, tokens, gold in test_sets}
    main = results[split]
    metrics = dict(main["scores"][scheme])
    metrics.update(
        task=TOKEN,
        split=split,
        level=level,
        sentences=len(main["tokens"]),
        words=sum(len(t) for t in main["tokens"]),
        content_hash=manifest["content_hash"],
        runtime=tagger.info.get("runtime", "torch"),
        predict_seconds=round(main["seconds"], 2),
        sentences_per_second=round(len(main["tokens"]) / max(main["seconds"], 1e-9), 1),
        schemes={k: v for k, v in main["scores"].items() if k != "klue"},
        test_sets={
            name: {"sentences": len(r["tokens"]), "f1": r["scores"][scheme]["f1"], "precision": r["scores"][scheme]["precision"],
                   "recall": r["scores"][scheme]["recall"], "strict_f1": r["scores"]["strict"]["f1"],
                   "macro_f1": r["scores"][scheme]["macro_f1"], "accuracy": r["scores"][scheme]["accuracy"]}
            for name, r in results.items()
        },
    )
    if "klue" in main["scores"]:
        metrics["klue"] = main["scores"]["klue"]
    groups = rows["source"] if "source" in rows.column_names else []
    if any(groups):  # several corpora (languages): one table each, as the PAN-X system reports
        metrics["per_source"] = per_source(groups, main["gold"], main["pred"], level, scheme)
    kinds = error_kinds(main["gold"], main["pred"])
    metrics["error_kinds"] = kinds["counts"]

    _write_predictions(predictions_out, main, documents)
    if report_dir is not None:
        write_report(report_dir, main, kinds, metrics, tagger, level, params.top_loss_sentences)
    write_json(metrics_out, metrics)
    return metrics


def _tagged(tagger: WordTagger, tokens, gold, level: str, main_split: bool, documents) -> dict[str, Any]:
    """One test set tagged and scored, with the time it took; the probability vectors (for the error
    analysis) on the main split only."""
    started = time.perf_counter()
    predicted = tagger.predict(tokens, distributions=main_split, documents=documents)
    pred, dists = predicted[0], predicted[2] if main_split else None
    seconds = time.perf_counter() - started
    return {"tokens": tokens, "gold": gold, "pred": pred, "dists": dists, "scores": all_scores(gold, pred, level),
            "seconds": seconds}


def _write_predictions(path: str | Path, main: dict[str, Any], documents: list[tuple] | None) -> None:
    """predictions.jsonl, with each sentence's document (source, id) where the corpus has them: the
    gate re-scores the champion reading the same windows the challenger was read in."""
    with atomic_file(path) as fh:
        for k, (t, g, p) in enumerate(zip(main["tokens"], main["gold"], main["pred"])):
            record = {"tokens": t, "gold": g, "pred": p, **({"document": list(documents[k])} if documents else {})}
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")


def per_source(groups: list[str], gold: list[list[str]], pred: list[list[str]], level: str, scheme: str) -> dict[str, Any]:
    """Scores of each source's sentences: {source: {sentences, f1, ..., per_type}}."""
    def summarise(g: list, p: list) -> dict[str, Any]:
        scores = all_scores(g, p, level)
        main = scores[scheme]
        return {"sentences": len(g), "f1": main["f1"], "precision": main["precision"], "recall": main["recall"],
                "strict_f1": scores["strict"]["f1"], "macro_f1": main["macro_f1"], "accuracy": main["accuracy"],
                "per_type": {t: round(v["f1"], 4) for t, v in main["per_type"].items()},
                **({"klue": scores["klue"]} if "klue" in scores else {})}

    return by_group(groups, gold, pred, summarise)


def write_report(report_dir, main: dict, kinds: dict, metrics: dict, tagger, level: str, top_n: int) -> None:
    labels = [label for label in tagger.labels]
    extra = sorted({t for row in main["gold"] for t in row} - set(labels))  # gold labels the model does not know
    labels += extra
    matrix = confusion(main["gold"], main["pred"], labels)
    losses = sentence_losses(main["gold"], main["dists"], tagger.label_index)
    order = sorted(range(len(losses)), key=lambda i: -losses[i])[:top_n]
    top = [{"index": i, "loss": losses[i], "tokens": main["tokens"][i], "gold": main["gold"][i], "pred": main["pred"][i]}
           for i in order]
    with atomic_dir(report_dir) as tmp:
        pairs = (pair for g_row, p_row in zip(main["gold"], main["pred"]) for pair in zip(g_row, p_row))  # a row per token
        write_confusion(tmp, pairs, matrix, labels)
        write_json(tmp / "errors.json", {"error_kinds": kinds, "labels": labels, "confusion": matrix,
                                         "highest_loss_sentences": top})
        (tmp / "errors.html").write_text(
            error_report_html("nerflow error analysis", top, kinds, metrics, joiner="" if level == "char" else " "),
            encoding="utf-8")
        lines = ["| test set | sentences | F1 | precision | recall | strict F1 | macro F1 | token accuracy |",
                 "|---|---|---|---|---|---|---|---|"]
        for name, r in metrics["test_sets"].items():
            lines.append(f"| {name} | {r['sentences']} | {r['f1']:.4f} | {r['precision']:.4f} | {r['recall']:.4f} | "
                         f"{r['strict_f1']:.4f} | {r['macro_f1']:.4f} | {r['accuracy']:.4f} |")
        if metrics.get("per_source"):
            types = sorted({t for r in metrics["per_source"].values() for t in r["per_type"]})
            lines += ["", f"Per source ({metrics['split']} split):", "",
                      "| source | sentences | F1 | precision | recall | " + " | ".join(types) + " |",
                      "|---|---|---|---|---|" + "---|" * len(types)]
            for name, r in metrics["per_source"].items():
                lines.append(f"| {name} | {r['sentences']} | {r['f1']:.4f} | {r['precision']:.4f} | {r['recall']:.4f} | "
                             + " | ".join(f"{r['per_type'].get(t, 0.0):.4f}" for t in types) + " |")
        (tmp / "test_sets.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def read_predictions(path: str | Path) -> tuple[list[list[str]], list[list[str]], list[list[str]], list[tuple] | None]:
    """tokens, gold and predicted tags from the evaluate step's predictions.jsonl, and each
    sentence's (source, document), None when the file records none (a corpus without documents,
    or a file from before they were recorded)."""
    rows = read_records(path, ("tokens", "gold", "pred"))
    documents = [tuple(r["document"]) for r in rows] if rows and "document" in rows[0] else None
    return [r["tokens"] for r in rows], [r["gold"] for r in rows], [r["pred"] for r in rows], documents
