"""Benchmark: the multilingual systems this project comes from, with the embedded multilingual
encoder (multilingual-e5-small, `make multilingual`), through the pipeline's own steps.

  klue      KLUE-NER (Korean, character level): only KLUE's dev set is here, so it is split
            80/10/10 by seed 42; entity macro F1 (strict) and character macro F1, KLUE's two.
  en        PAN-X style cross-lingual transfer: train on CoNLL-2003 English, score the English
            test set and CoNLL-2002 Spanish test zero-shot (one table per language).
  en+es     train on English + Spanish at once (each sentence keeps its language), score both.

Every run uses ``preprocess.trim_vocabulary``; the share of <unk> sub-tokens on text the
trimming never saw is measured (Korean: NSMC reviews; English: WNUT-17 tweets; Spanish: the
Spanish dev set for the English-only model).

    .venv/bin/python bench/multilingual.py [--runs klue,en,en+es] [--epochs-klue 3] [--epochs 1]

Needs ../shared/data (absent on a user's machine) and the folder `make multilingual` builds.
Prints one table per run and writes bench/multilingual_results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
MODEL = ROOT / "models" / "multilingual-e5-small"
CONLL_EN = "pkg:neuroner/data/conll2003/en"
ES = SHARED / "conll2002-es"


def cpu_flags() -> str:
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    name = re.search(r"model name\s*:\s*(.*)", text)
    flags = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if re.search(rf"\b{f}\b", text)]
    return f"{name.group(1) if name else platform.processor()}; {os.cpu_count()} cores; flags {' '.join(flags)}"


def held_out_texts(run: str) -> dict[str, list[str]]:
    """Text the run's trimming did not see, by language."""
    from nerflow.tasks.token.readers import read_conll

    if run == "klue":
        lines = (SHARED / "nsmc" / "ratings_test.txt").read_text(encoding="utf-8").splitlines()[1:2001]
        return {"ko (NSMC reviews)": [line.split("\t")[1] for line in lines if line.count("\t") == 2]}
    out = {"en (WNUT-17 dev)": [" ".join(s.tokens) for s in read_conll(SHARED / "wnut17" / "emerging.dev.conll")]}
    if run == "en":
        out["es (CoNLL-2002 dev)"] = [" ".join(s.tokens) for s in read_conll(ES / "esp.testa")]
    return out


def data_params(run: str) -> dict:
    if run == "klue":
        return {"path": str(SHARED / "klue-ner" / "klue-ner-v1.1_dev.tsv"),
                "split_ratios": {"train": 0.8, "validation": 0.1, "test": 0.1}, "split_seed": 42}
    en = {s: {"path": f"{CONLL_EN}/{f}", "source": "en"} for s, f in
          (("train", "train.txt"), ("validation", "valid.txt"), ("test", "test.txt"))}
    es = {s: {"path": str(ES / f), "source": "es"} for s, f in
          (("train", "esp.train"), ("validation", "esp.testa"), ("test", "esp.testb"))}
    if run == "en":
        return {"train": [en["train"]], "validation": [en["validation"]], "test": [en["test"], es["test"]]}
    return {split: [en[split], es[split]] for split in ("train", "validation", "test")}


def run_one(run: str, epochs: float, work: Path) -> dict:
    from transformers import AutoTokenizer

    from nerflow.steps.data import prepare_data
    from nerflow.steps.evaluate import evaluate
    from nerflow.steps.preprocess import preprocess
    from nerflow.steps.train import train
    from nerflow.core.vocab import unknown_share

    times = {}
    started = time.perf_counter()
    manifest = prepare_data(data_params(run), work / "ds")
    times["data"] = time.perf_counter() - started
    started = time.perf_counter()
    info = preprocess({"model": str(MODEL), "max_length": 128, "stride": 16, "trim_vocabulary": True},
                      work / "ds", work / "features")
    times["preprocess"] = time.perf_counter() - started
    started = time.perf_counter()
    summary = train({"model": str(MODEL), "epochs": epochs, "batch_size": 32, "layers": None, "progress": False},
                    work / "features", work / "model")
    times["train"] = time.perf_counter() - started
    started = time.perf_counter()
    metrics = evaluate({}, work / "model", work / "ds", work / "metrics.json", work / "predictions.jsonl")
    times["evaluate"] = time.perf_counter() - started
    trimmed = AutoTokenizer.from_pretrained(str(work / "features" / "tokenizer"))
    full = AutoTokenizer.from_pretrained(str(MODEL))
    unk = {}
    for name, texts in held_out_texts(run).items():
        unk[name] = {"trimmed": unknown_share(trimmed, texts), "full": unknown_share(full, texts)}
    return {"run": run, "epochs": epochs, "level": manifest["level"], "splits": manifest["splits"],
            "source_sentences": manifest.get("source_sentences"), "vocabulary": info["vocabulary"],
            "train": {k: summary.get(k) for k in ("steps", "train_seconds", "train_sentences_per_second", "device",
                                                  "precision", "dev_f1")},
            "seconds": {k: round(v, 1) for k, v in times.items()},
            "test": {k: metrics.get(k) for k in ("f1", "precision", "recall", "macro_f1", "per_type", "klue", "per_source")},
            "strict_f1": metrics["schemes"]["strict"]["f1"], "unknown_on_held_out": unk}


def table(r: dict) -> str:
    out = [f"## {r['run']}: {r['epochs']} epoch(s); train {r['seconds']['train']} s "
           f"({r['train']['train_sentences_per_second']} sentences/s, {r['train']['device']}, {r['train']['precision']})",
           f"vocabulary trimmed {r['vocabulary']['original']} -> {r['vocabulary']['kept']} rows"]
    t = r["test"]
    if t.get("klue"):
        out.append(f"KLUE entity macro F1 (strict) {t['klue']['entity_macro_f1']:.4f}, character macro F1 "
                   f"{t['klue']['character_macro_f1']:.4f}; micro F1 {t['f1']:.4f}")
        out.append("per type: " + ", ".join(f"{k} {v['f1']:.4f}" for k, v in t["per_type"].items()))
    for name, s in (t.get("per_source") or {}).items():
        out.append(f"test {name}: F1 {s['f1']:.4f} (P {s['precision']:.4f} R {s['recall']:.4f}, {s['sentences']} sentences); "
                   + ", ".join(f"{k} {v:.4f}" for k, v in s["per_type"].items()))
    for name, u in r["unknown_on_held_out"].items():
        out.append(f"<unk> on {name}: trimmed {u['trimmed']['unknown_share']:.4%} of {u['trimmed']['subtokens']} sub-tokens, "
                   f"full vocabulary {u['full']['unknown_share']:.4%}")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="klue,en,en+es")
    parser.add_argument("--epochs", type=float, default=1.0, help="epochs of the English / English+Spanish runs")
    parser.add_argument("--epochs-klue", type=float, default=3.0)
    parser.add_argument("--out", default=str(ROOT / "bench" / "multilingual_results.json"))
    args = parser.parse_args()
    if not SHARED.exists() or not (MODEL / "config.json").exists():
        sys.exit(f"needs {SHARED} and {MODEL} (make multilingual)")
    from nerflow.core.paths import configure

    configure()
    print(cpu_flags(), flush=True)
    results = {"cpu": cpu_flags(), "runs": {}}
    if Path(args.out).exists():
        results["runs"] = json.loads(Path(args.out).read_text()).get("runs", {})
    for run in args.runs.split(","):
        with tempfile.TemporaryDirectory(prefix=f"nerflow-bench-{run}-") as tmp:
            r = run_one(run, args.epochs_klue if run == "klue" else args.epochs, Path(tmp))
        results["runs"][run] = r
        print(table(r), flush=True)
        Path(args.out).write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
