"""Benchmark: nerflow's train step against the Hugging Face token-classification guide's recipe,
and nerflow's evaluate-step inference against a plain transformers pipeline.

Both trainings run in this process tree on the same data, model and epochs:
  (a) reference: the recipe as the HF guide writes it - Trainer, random batches, fp32, one
      learning rate (2e-5) for every parameter, batch 16, dynamic padding, truncation;
  (b) nerflow: `nerflow.steps.train.train` with the params.yaml defaults (only epochs set here).
Both models are scored by the same word-level seqeval evaluation on the test split.

    .venv/bin/python bench/benchmark.py [--epochs 1] [--train-sentences N] [--variant layers=6] [--out bench/results.json]

Prints and writes train sentences/s, test F1 and their ratios, and inference sentences/s.
Timings belong here, not in the tests.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def reference_train(model_path: Path, dataset_dir: Path, out: Path, epochs: float, seed: int) -> dict:
    """The HF token-classification guide, as written (tokenize_and_align_labels, Trainer)."""
    import transformers
    from transformers import (AutoModelForTokenClassification, AutoTokenizer, DataCollatorForTokenClassification,
                              Trainer, TrainingArguments)

    from nerflow.core.dataset import load_dataset_dir, read_manifest
    from nerflow.core.inference import MODEL_INFO

    transformers.logging.set_verbosity_error()
    transformers.set_seed(seed)
    dataset = load_dataset_dir(dataset_dir)
    labels = read_manifest(dataset_dir)["labels"]
    tokenizer = AutoTokenizer.from_pretrained(str(model_path))

    def tokenize_and_align_labels(examples):
        tokenized = tokenizer(examples["tokens"], truncation=True, is_split_into_words=True)
        all_labels = []
        for i, label in enumerate(examples["ner_tags"]):
            word_ids = tokenized.word_ids(batch_index=i)
            previous, ids = None, []
            for w in word_ids:
                ids.append(-100 if w is None or w == previous else label[w])
                previous = w
            all_labels.append(ids)
        tokenized["labels"] = all_labels
        return tokenized

    train_set = dataset["train"].map(tokenize_and_align_labels, batched=True, remove_columns=dataset["train"].column_names)
    model = AutoModelForTokenClassification.from_pretrained(
        str(model_path), num_labels=len(labels), id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)})
    import torch

    args = TrainingArguments(output_dir=str(out.parent / "reference-work"), learning_rate=2e-5,
                             per_device_train_batch_size=16, num_train_epochs=epochs, weight_decay=0.01,
                             save_strategy="no", report_to="none", seed=seed, use_cpu=not torch.cuda.is_available(),
                             disable_tqdm=True, logging_strategy="no")
    trainer = Trainer(model=model, args=args, train_dataset=train_set, processing_class=tokenizer,
                      data_collator=DataCollatorForTokenClassification(tokenizer=tokenizer))
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    trainer.save_model(str(out))
    tokenizer.save_pretrained(str(out))
    (out / MODEL_INFO).write_text(json.dumps({"labels": labels, "max_length": 512, "stride": 32, "level": "word"}))
    return {"train_seconds": seconds, "train_sentences_per_second": len(train_set) * epochs / seconds}


def pipeline_throughput(model_dir: Path, texts: list[str], batch_size: int | None) -> float:
    from transformers import pipeline

    import torch

    pipe = pipeline("token-classification", model=str(model_dir), aggregation_strategy="first",
                    device=0 if torch.cuda.is_available() else -1)
    pipe(texts[:8])  # warm up
    started = time.perf_counter()
    pipe(texts, **({"batch_size": batch_size} if batch_size else {}))
    return len(texts) / (time.perf_counter() - started)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default=str(ROOT / "params.yaml"))
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--train-sentences", type=int, default=None, help="use only the first N train sentences")
    parser.add_argument("--variant", action="append", default=[], metavar="KEY=VALUE[,KEY=VALUE]", help=(
        "also train nerflow with these train.* params changed (e.g. layers=6), side by side in this run; "
        "repeatable"))
    parser.add_argument("--out", default=str(ROOT / "bench" / "results.json"))
    args = parser.parse_args(argv)

    from nerflow import NerflowError
    from nerflow.core.paths import configure, load_params

    params = load_params(args.params)
    configure(params)
    variants = []  # checked before anything runs: a misspelled key stops here, not after the reference
    for spec in args.variant:
        import yaml

        from nerflow.core.config import TrainParams, section

        try:
            changed = {k.strip(): yaml.safe_load(v) for k, v in (item.split("=", 1) for item in spec.split(","))}
        except ValueError:
            parser.error(f"--variant {spec!r}: expected KEY=VALUE[,KEY=VALUE]")
        try:
            variants.append((changed, section(TrainParams, {**params.train.to_dict(), **changed,
                                                             "epochs": args.epochs, "progress": False})))
        except NerflowError as exc:
            parser.error(f"--variant {spec!r}: {exc}")
    work = Path(tempfile.mkdtemp(prefix="nerflow-bench-"))
    try:
        return measure(args, params, variants, work)
    finally:  # the datasets, features and three models (about 600 MB) are not left behind
        shutil.rmtree(work, ignore_errors=True)


def measure(args, params, variants: list, work: Path) -> int:
    """Both trainings, their test scores and the inference comparison, in ``work``."""
    from nerflow.steps.data import prepare_data
    from nerflow.steps.evaluate import evaluate
    from nerflow.core.hub import model_path as model_path_of
    from nerflow.steps.preprocess import preprocess
    from nerflow.steps.train import train

    manifest = prepare_data(params.data, work / "dataset")
    if args.train_sentences:
        from datasets import load_from_disk

        ds = load_from_disk(str(work / "dataset"))
        ds["train"] = ds["train"].select(range(min(args.train_sentences, len(ds["train"]))))
        ds.save_to_disk(str(work / "dataset-cut"))
        (work / "dataset-cut" / "manifest.json").write_text((work / "dataset" / "manifest.json").read_text())
        dataset_dir = work / "dataset-cut"
    else:
        dataset_dir = work / "dataset"
    model_path = model_path_of(params.train.model, "train.model")  # a folder, pkg:, asset: or Hub id
    preprocess(params.preprocess, dataset_dir, work / "features")
    n_train = len(__import__("datasets").load_from_disk(str(dataset_dir))["train"])

    sys.path.insert(0, str(ROOT / "bench"))
    from load import cpu_flags

    results: dict = {"cpu": cpu_flags(), "epochs": args.epochs, "train_sentences": n_train, "model": params.train.model,
                     "data_version": manifest["content_hash"][:12]}
    print(f"reference recipe: {n_train} sentences x {args.epochs} epoch(s) ...", flush=True)
    ref = reference_train(model_path, dataset_dir, work / "reference", args.epochs, params.train.seed)
    ref_eval = evaluate({}, work / "reference", dataset_dir, work / "ref-metrics.json", work / "ref-pred.jsonl")
    results["reference"] = {**ref, "test_f1": ref_eval["f1"]}
    print(f"  {ref['train_sentences_per_second']:.1f} sentences/s, test F1 {ref_eval['f1']:.4f}", flush=True)

    print("nerflow train step ...", flush=True)
    ours = train({**params.train.to_dict(), "epochs": args.epochs, "progress": False}, work / "features", work / "ours")
    our_eval = evaluate(params.evaluate, work / "ours", dataset_dir, work / "our-metrics.json", work / "our-pred.jsonl")
    results["nerflow"] = {"train_seconds": ours["train_seconds"], "dev_eval_seconds": ours["dev_eval_seconds"],
                          "train_sentences_per_second": ours["train_sentences_per_second"], "test_f1": our_eval["f1"],
                          "precision": ours["precision"], "device": ours["device"]}
    print(f"  {ours['train_sentences_per_second']:.1f} sentences/s, test F1 {our_eval['f1']:.4f}", flush=True)

    results["variants"] = []
    for changed, variant in variants:
        print(f"nerflow train step with {changed} ...", flush=True)
        run = train(variant, work / "features", work / "variant")
        run_eval = evaluate(params.evaluate, work / "variant", dataset_dir, work / "v-metrics.json", work / "v-pred.jsonl")
        results["variants"].append({
            "train": changed, "train_seconds": run["train_seconds"],
            "train_sentences_per_second": run["train_sentences_per_second"], "test_f1": run_eval["f1"],
            "train_throughput_ratio": run["train_sentences_per_second"] / ref["train_sentences_per_second"],
            "evaluate_sentences_per_second": run_eval["sentences_per_second"], "runtime": run_eval.get("runtime", "torch")})
        print(f"  {run['train_sentences_per_second']:.1f} sentences/s "
              f"({results['variants'][-1]['train_throughput_ratio']:.2f}x the recipe), test F1 {run_eval['f1']:.4f}", flush=True)
        shutil.rmtree(work / "variant")

    print("inference ...", flush=True)
    from nerflow.core.dataset import load_dataset_dir

    test_tokens = load_dataset_dir(dataset_dir)["test"]["tokens"]
    texts = [" ".join(t) for t in test_tokens]
    plain = pipeline_throughput(work / "ours", texts, None)
    results["inference"] = {"nerflow_evaluate_sentences_per_second": our_eval["sentences_per_second"],
                            "nerflow_runtime": our_eval.get("runtime", "torch"),
                            "plain_pipeline_sentences_per_second": round(plain, 1)}
    results["ratios"] = {
        "train_throughput": results["nerflow"]["train_sentences_per_second"] / ref["train_sentences_per_second"],
        "test_f1_difference_points": 100 * (our_eval["f1"] - ref_eval["f1"]),
        "inference_throughput": our_eval["sentences_per_second"] / plain,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    r = results["ratios"]
    print(f"\ntrain throughput  nerflow {results['nerflow']['train_sentences_per_second']:.1f} / reference "
          f"{ref['train_sentences_per_second']:.1f} sentences/s = {r['train_throughput']:.2f}x")
    print(f"test F1           nerflow {our_eval['f1']:.4f} vs reference {ref_eval['f1']:.4f} ({r['test_f1_difference_points']:+.1f} points)")
    print(f"inference         nerflow evaluate {our_eval['sentences_per_second']:.1f} / plain pipeline {plain:.1f} "
          f"sentences/s = {r['inference_throughput']:.2f}x")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
