"""The main job's closing summary, read back from the step outputs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from nerflow.core.dataset import read_manifest
from nerflow.core.files import read_json


def summary(paths: dict[str, Any]) -> str:

    lines = ["", "=" * 72, "nerflow run summary", "=" * 72]
    manifest = read_manifest(paths["dataset"])
    lines.append(f"data       version {manifest['content_hash'][:12]}, {len(manifest['labels'])} labels")
    for split, v in manifest["splits"].items():
        if "texts" in v:  # text classification
            lines.append(f"           {split:<10} {v['texts']:>6} texts " + ", ".join(f"{k} {n}" for k, n in v["label_counts"].items()))
        else:
            lines.append(f"           {split:<10} {v['sentences']:>6} sentences {v['tokens']:>7} tokens {v['entities']:>6} entities")
    report = Path(paths["report"])
    results = read_json(report / "results.json")
    passed = sum(c["success"] for c in results["checks"])
    warned = [c["name"] for c in results["checks"] if not c["success"] and c["severity"] == "warning"]
    lines.append(f"validation {'PASSED' if results['success'] else 'FAILED'}: {passed}/{len(results['checks'])} checks ok"
                 + (f", warnings: {', '.join(warned)}" if warned else "") + f"; {report / 'report.html'}")
    train = read_json(Path(paths["model"]) / "train_log.json")["summary"]
    lines.append(f"train      {train['steps']} steps, {train['train_seconds']} s, {train['train_sentences_per_second']} sentences/s "
                 f"({train['device']}, {train['precision']}); dev F1 " + ", ".join(f"{d['f1']:.4f}" for d in train["dev_f1"]))
    m = read_json(paths["metrics"])
    if "per_class" in m:  # text classification
        lines.append(f"test       accuracy {m['accuracy']:.4f}  macro F1 {m['macro_f1']:.4f}  F1 {m['f1']:.4f} ({m['f1_average']})"
                     f"  {m['texts']} texts, {m['truncated_texts']} cut to head and tail")
    else:
        lines.append(f"test       F1 {m['f1']:.4f}  P {m['precision']:.4f}  R {m['recall']:.4f}  accuracy {m['accuracy']:.4f}  "
                     f"({m['scheme']} scheme; runtime {m.get('runtime', 'torch')}, {m['sentences_per_second']} sentences/s)")
    for etype, v in (m.get("per_type") or m.get("per_class")).items():
        lines.append(f"           {etype:<10} F1 {v['f1']:.4f}  P {v['precision']:.4f}  R {v['recall']:.4f}  support {v['support']}")
    if "schemes" in m:
        lines.append(f"           strict IOB2 F1 {m['schemes']['strict']['f1']:.4f}; macro F1 {m['macro_f1']:.4f}")
    if "klue" in m:
        lines.append(f"           KLUE entity macro F1 {m['klue']['entity_macro_f1']:.4f}, character macro F1 {m['klue']['character_macro_f1']:.4f}")
    if "error_kinds" in m:
        lines.append("errors     " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in m["error_kinds"].items())
                     + f"; {Path(paths['evaluation_report']) / 'errors.html'}")
    for name, t in m.get("per_source", {}).items():
        lines.append(f"source     {name:<10} F1 {t['f1']:.4f}  ({t.get('sentences', t.get('texts'))} examples)")
    for name, t in list(m.get("test_sets", {}).items())[1:]:
        lines.append(f"test set   {name:<10} F1 {t['f1']:.4f}  ({t.get('sentences', t.get('texts'))} examples)")
    d = read_json(paths["decision"])
    champion = d.get("champion")
    what = {"macro_f1": "macro F1", "accuracy": "accuracy"}.get(d.get("metric", "f1"), "F1")
    lines.append(f"gate       {'PROMOTED' if d['promote'] else 'REFUSED'} {d['challenger']['tag']} ({what} {d['challenger']['f1']:.4f}) "
                 + (f"against champion {champion['tag']} ({what} {champion['f1']:.4f} on the same test set)" if champion
                    else "(no champion yet: thresholds only)"))
    for reason in d["reasons"]:
        if not reason.startswith("no production model yet"):  # said on the line above
            lines.append(f"           {reason}")
    r = read_json(paths["record"])
    if r["packaged"]:
        lines.append(f"production {r['model_tag']}")
        if r.get("bento_tag"):
            lines.append(f"bento      {r['bento_tag']}")
        lines.append(f"serve      BENTOML_HOME={_home()} {r['serve_command']}   (page: http://127.0.0.1:3000/ui/)")
    else:
        lines.append(f"package    skipped: the production model is unchanged{' (' + champion['tag'] + ')' if champion else ''}")
    return "\n".join(lines)


def _home() -> str:

    return os.environ.get("BENTOML_HOME", "~/bentoml")
