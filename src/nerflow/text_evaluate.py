"""Step `evaluate` for text classification (nerflow.tasks): the model's test scores, its
predictions with every class's probability, and the error analysis."""

from __future__ import annotations


def evaluate_texts(params, model_dir, dataset_dir, metrics_out, predictions_out, report_dir=None, split: str = "test"):
    """Evaluate for text classification: metrics.json (accuracy, macro and per-class P/R/F1,
    binary F1 for two classes, confusion matrix, per source), predictions.jsonl (text, gold,
    predicted, every class's probability) and the report: confusion.csv (DVC plot),
    confusion.png, errors.json and errors.html with the highest-loss texts."""
    import json
    import time

    import numpy as np

    from nerflow.atomic import atomic_dir, atomic_file, write_json
    from nerflow.classify import TextClassifier
    from nerflow.config import EvaluateParams, section
    from nerflow.data import load_dataset_dir, read_manifest
    from nerflow.text import read_text_source
    from nerflow.text_metrics import scores

    params = section(EvaluateParams, params)
    dataset, manifest = load_dataset_dir(dataset_dir), read_manifest(dataset_dir)
    rows = dataset[split]
    texts, gold = list(rows["text"]), list(rows["label"])
    clf = TextClassifier(model_dir, precision=params.precision, batch_size=params.batch_size)
    started = time.perf_counter()
    probs, cut = clf.run(texts)  # the texts cut to max_length come with the probabilities: no second tokenization
    seconds = time.perf_counter() - started
    labels = clf.labels
    pred = [labels[i] for i in probs.argmax(1)]
    s = scores(gold, pred, labels)
    metrics = {k: v for k, v in s.items() if k not in ("confusion",)}
    metrics.update(task="text-classification", split=split, texts=len(texts), content_hash=manifest["content_hash"],
                   truncated_texts=int(sum(cut)), predict_seconds=round(seconds, 2),
                   texts_per_second=round(len(texts) / max(seconds, 1e-9), 1),
                   test_sets={split: {"texts": len(texts), "accuracy": s["accuracy"], "macro_f1": s["macro_f1"], "f1": s["f1"]}})
    for spec in params.test_sets:  # further named test sets, read as the data section reads a source
        from nerflow.config import ReaderOptions, Source

        src = Source.model_validate({**{k: getattr(spec, k) for k in ReaderOptions.model_fields}, "path": spec.path})
        table = next(iter(read_text_source(src, spec, "test")[0].values()))
        other_texts, other_gold = table["text"].to_pylist(), table["label"].to_pylist()
        other = scores(other_gold, [labels[i] for i in clf.probabilities(other_texts).argmax(1)], labels)
        metrics["test_sets"][spec.name] = {"texts": len(other_texts), "accuracy": other["accuracy"],
                                           "macro_f1": other["macro_f1"], "f1": other["f1"]}
    if split != "train" and "train" in dataset:  # the same text in train: scored apart (NSMC's test shares reviews with train)
        seen_texts = set(dataset["train"]["text"])
        seen = [t in seen_texts for t in texts]
        if any(seen):
            metrics["by_train_overlap"] = {}
            for name, keep in (("in_train", True), ("not_in_train", False)):
                idx = [i for i, flag in enumerate(seen) if flag is keep]
                if idx:
                    sub = scores([gold[i] for i in idx], [pred[i] for i in idx], labels)
                    metrics["by_train_overlap"][name] = {"texts": len(idx), "accuracy": sub["accuracy"],
                                                         "macro_f1": sub["macro_f1"], "f1": sub["f1"]}
    groups = list(rows["source"])
    if any(groups):
        metrics["per_source"] = {}
        for name in sorted(set(groups)):
            idx = [i for i, g in enumerate(groups) if g == name]
            sub = scores([gold[i] for i in idx], [pred[i] for i in idx], labels)
            metrics["per_source"][name or "(unnamed)"] = {"texts": len(idx), "accuracy": sub["accuracy"],
                                                          "macro_f1": sub["macro_f1"], "f1": sub["f1"]}
    index = {label: i for i, label in enumerate(labels)}
    p_gold = np.array([probs[k, index[g]] if g in index else 0.0 for k, g in enumerate(gold)])
    losses = -np.log(np.clip(p_gold, 1e-12, 1.0))
    order = np.argsort(-losses, kind="stable")[: params.top_loss_sentences]
    top = [{"index": int(i), "loss": round(float(losses[i]), 4), "text": texts[i], "gold": gold[i], "pred": pred[i],
            "p_gold": round(float(p_gold[i]), 4), "line": int(rows[int(i)]["source_line"])} for i in order]
    with atomic_file(predictions_out) as fh:
        for k, (t, g, p) in enumerate(zip(texts, gold, pred)):
            fh.write(json.dumps({"text": t, "gold": g, "pred": p,
                                 "scores": {label: round(float(probs[k, j]), 5) for j, label in enumerate(labels)}},
                                ensure_ascii=False) + "\n")
    if report_dir is not None:
        import csv

        from nerflow.analysis import confusion_png

        with atomic_dir(report_dir) as tmp:
            with open(tmp / "confusion.csv", "w", newline="", encoding="utf-8") as fh:
                writer = csv.writer(fh)  # one row per text: DVC's confusion template counts rows
                writer.writerow(["actual", "predicted"])
                writer.writerows(zip(gold, pred))
            confusion_png(s["confusion"], s["labels"], tmp / "confusion.png")
            write_json(tmp / "errors.json", {"labels": s["labels"], "confusion": s["confusion"], "highest_loss_texts": top})
            (tmp / "errors.html").write_text(errors_html(metrics, s, top, manifest.get("sources", {}).get(split, "")),
                                             encoding="utf-8")
    write_json(metrics_out, metrics)
    return metrics


def errors_html(metrics: dict, s: dict, top: list[dict], source: str) -> str:
    """The error analysis page: scores per class, the confusion matrix, the highest-loss texts."""
    import html

    esc = html.escape
    labels = s["labels"]
    per_class = "".join(f"<tr><td>{esc(c)}</td><td>{v['precision']:.4f}</td><td>{v['recall']:.4f}</td><td>{v['f1']:.4f}</td>"
                        f"<td>{v['support']}</td></tr>" for c, v in s["per_class"].items())
    matrix = "".join(f"<tr><th>{esc(g)}</th>" + "".join(f"<td>{n}</td>" for n in row) + "</tr>"
                     for g, row in zip(labels, s["confusion"]))
    worst = "".join(f"<tr><td>{t['loss']:.3f}</td><td>{esc(t['gold'])}</td><td>{esc(t['pred'])}</td><td>{t['p_gold']:.3f}</td>"
                    f"<td>{esc(source)}:{t['line']}</td><td>{esc(t['text'] or '')}</td></tr>" for t in top)
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>nerflow error analysis (text classification)</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;margin-bottom:2em}}
td,th{{border:1px solid #ccc;padding:4px 8px;vertical-align:top;text-align:left}}</style></head>
<body><h1>Error analysis: text classification</h1>
<p>{metrics['texts']} {esc(metrics['split'])} texts: accuracy {metrics['accuracy']:.4f}, macro F1 {metrics['macro_f1']:.4f},
F1 {metrics['f1']:.4f} ({esc(metrics['f1_average'])}); {metrics['truncated_texts']} texts over max_length kept their head and tail.</p>
<h2>Per class</h2><table><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>{per_class}</table>
<h2>Confusion matrix (rows: gold, columns: predicted)</h2>
<table><tr><th></th>{''.join(f'<th>{esc(c)}</th>' for c in labels)}</tr>{matrix}</table>
<h2>Highest-loss texts</h2>
<table><tr><th>loss</th><th>gold</th><th>predicted</th><th>p(gold)</th><th>where</th><th>text</th></tr>{worst}</table>
</body></html>
"""
