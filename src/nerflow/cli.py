"""`nerflow <step>`: one subcommand per pipeline step, plus `summary`.

Each subcommand reads its section of params.yaml and explicit input/output paths (defaults
below match dvc.yaml). Bad input: one line on stderr naming the problem, exit code 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from nerflow import NerflowError

PATHS = {
    "dataset": "data/dataset",
    "validation_report": "reports/validation",
    "features": "data/features",
    "model": "models/candidate",
    "metrics": "reports/metrics.json",
    "predictions": "reports/predictions.jsonl",
    "evaluation_report": "reports/evaluation",
    "decision": "reports/gate.json",
    "package_record": "reports/package.json",
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nerflow", description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    sub = parser.add_subparsers(dest="step", required=True)

    def add(name: str, help: str, **paths: str) -> None:
        p = sub.add_parser(name, help=help)
        for arg, key in paths.items():
            p.add_argument(f"--{arg.replace('_', '-')}", default=PATHS[key], help=f"(default: {PATHS[key]})")

    add("data", "read the corpus into the canonical dataset", out="dataset")
    add("validate", "validate the dataset with Great Expectations", dataset="dataset", report="validation_report")
    add("preprocess", "tokenize and align labels to sub-words", dataset="dataset", out="features")
    add("train", "fine-tune the encoder", features="features", out="model")
    add("evaluate", "score the model on the test split (seqeval)", model="model", dataset="dataset",
        metrics="metrics", predictions="predictions", report="evaluation_report")
    add("gate", "decide whether the model is promoted", metrics="metrics", out="decision")
    add("package", "store the promoted model in BentoML and build a Bento", model="model",
        decision="decision", metrics="metrics", out="package_record")
    add("summary", "print what the last run produced", dataset="dataset",
        report="validation_report", model="model", metrics="metrics", decision="decision",
        record="package_record", evaluation_report="evaluation_report")
    return parser


def run(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from nerflow.params import bentoml_home, load_params

    params = load_params(args.params)
    os.environ["BENTOML_HOME"] = bentoml_home(params["package"])
    step = args.step
    if step == "data":
        from nerflow.data import prepare_data

        m = prepare_data(params["data"], args.out)
        print(f"data: {args.out}: " + ", ".join(f"{s} {v['sentences']} sentences" for s, v in m["splits"].items())
              + f"; {len(m['labels'])} labels; version {m['content_hash'][:12]}")
    elif step == "validate":
        from nerflow.validate import ValidationFailed, format_table, validate_dataset

        try:
            summary = validate_dataset(params["validate"], args.dataset, args.report)
        except ValidationFailed:
            from nerflow.atomic import read_json

            print(format_table(read_json(Path(args.report) / "results.json")))
            raise
        print(format_table(summary))
        print(f"validate: passed with {summary['warnings']} warning(s); report {Path(args.report) / 'report.html'}")
    elif step == "preprocess":
        from nerflow.preprocess import preprocess

        info = preprocess(params["preprocess"], args.dataset, args.out)
        print(f"preprocess: {args.out}: " + ", ".join(
            f"{s} {v['windows']} windows ({v['sentences_split_into_windows']} long sentences split)"
            for s, v in info["splits"].items()))
    elif step == "train":
        from nerflow.train import train

        s = train(params["train"], args.features, args.out)
        print(f"train: {args.out}: {s['steps']} steps in {s['train_seconds']} s on {s['device']} ({s['precision']}), "
              f"{s['train_sentences_per_second']} sentences/s; dev F1 by epoch: "
              + ", ".join(f"{d['f1']:.4f}" for d in s["dev_f1"]))
    elif step == "evaluate":
        from nerflow.evaluate import evaluate

        m = evaluate(params["evaluate"], args.model, args.dataset, args.metrics, args.predictions, args.report)
        print(f"evaluate: test F1 {m['f1']:.4f} (P {m['precision']:.4f}, R {m['recall']:.4f}); "
              + ", ".join(f"{t} {v['f1']:.3f}" for t, v in m["per_type"].items())
              + f"; error analysis {Path(args.report) / 'errors.html'}")
        if len(m["test_sets"]) > 1:
            print((Path(args.report) / "test_sets.md").read_text())
    elif step == "gate":
        from nerflow.gate import gate

        d = gate(params["gate"], args.metrics, args.out)
        print(f"gate: {'PROMOTE' if d['promote'] else 'REFUSE'}: " + "; ".join(d["reasons"]))
    elif step == "package":
        from nerflow.package import package

        r = package(params["package"], args.model, args.decision, args.metrics, args.out, params["train"])
        print("package: " + (f"model {r['model_tag']}, bento {r.get('bento_tag', '-')}" if r["packaged"] else r["reason"]))
    elif step == "summary":
        from nerflow.summary import summary

        print(summary(vars(args)))
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        return run(argv)
    except NerflowError as exc:
        print(f"nerflow: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
