"""`nerflow predict` (tag a file with a stored model) and `nerflow score` (score predictions
made elsewhere, in both seqeval modes).

predict reads plain text (one text per line), CoNLL (first column; sentences by blank lines)
or JSON Lines ({"text": ...} or {"tokens": [...]}) and writes JSON Lines (tokens, tags, scores,
entities) or CoNLL (token<TAB>tag). The whole input is read and checked before the model runs,
the tagger gets it in chunks (memory stays flat), and --out is written atomically.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from nerflow import NerflowError
from nerflow.core.files import atomic_file
from nerflow.core.inference import read_model_info
from nerflow.core.progress import progress as progress_of
from nerflow.core.progress import quiet_library_bars
from nerflow.steps.package import registry_for
from nerflow.tasks.base import TEXT
from nerflow.tasks.registry import task_of
from nerflow.tasks.text.classify import TextClassifier
from nerflow.tasks.token.metrics import all_scores
from nerflow.tasks.token.predict import WordTagger, entities_from_tags, split_words
from nerflow.tasks.token.readers import read_conll, text_lines

# Heavy libraries (transformers) are imported inside the functions that use them, on purpose:
# the CLI starts without them and a step loads only what it runs.

CHUNK = 256  # sentences handed to the tagger at a time
_TAG = re.compile(r"^(O|[BIESLU]-\S+)$")


@dataclass
class Item:
    tokens: list[str]
    line: int  # 1-based line of the input (first token's line for CoNLL)
    text: str | None = None  # text input: the text, and each token's character span in it
    spans: list[tuple[int, int]] | None = None
    id: Any = None
    document: int = -1  # CoNLL: its -DOCSTART- document (a model trained with document context reads them together)


def run(args, params) -> int:
    """Run `predict` or `score` (``args.step``); ``params``: the validated nerflow.core.config.Params."""
    if args.step == "score":
        result = score_files(args.gold, args.pred, args.scheme, args.line_by_line)
        print(json.dumps(result, indent=2) if args.json else format_scores(result))
        return 0
    if args.step == "predict":
        try:
            predict_file(args.input, args.model, params.registry, args.out, args.input_format, args.output_format,
                         args.batch_size or params.evaluate.batch_size, params.evaluate.precision,
                         progress=not args.no_progress)
        except BrokenPipeError:  # `nerflow predict FILE | head`: stop quietly
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    raise NerflowError(f"unknown command {args.step!r}")


# ------------------------------------------------------------------------------ predict


def resolve_model(spec: str, registry_params) -> tuple[Path, str]:
    """(model folder, name) for a folder, a registry tag or ``production``."""
    path = Path(spec)
    if spec != "production" and path.is_dir():
        if not (path / "config.json").is_file():
            raise NerflowError(f"{spec}: not a trained model folder (no config.json)")
        return path, spec
    if spec != "production" and ":" not in spec:
        raise NerflowError(f"{spec}: no such model folder (expected a folder, a registry tag <name>:<version> or production)")

    registry = registry_for(registry_params)
    tag = registry.production() if spec == "production" else spec
    if tag is None:
        raise NerflowError(f"registry {registry.name} in {registry.home}: no production model; "
                           "name a model folder or a registry tag with --model")
    return registry.model_dir(tag), tag


def _looks_like_conll(lines) -> bool:
    rows = [ln.split() for _, ln in lines if ln.strip() and not ln.startswith("-DOCSTART-")][:200]
    return bool(rows) and all(len(r) >= 2 and _TAG.match(r[-1]) for r in rows)


def _text_item(text: str, line: int, char_level: bool, id: Any = None) -> Item:

    words = [(c, i, i + 1) for i, c in enumerate(text)] if char_level else split_words(text)
    return Item([w for w, _, _ in words], line, text, [(a, b) for _, a, b in words], id)


def read_input(path: str | Path, fmt: str = "auto", char_level: bool = False) -> list[Item]:
    """The items to tag: one per text line, CoNLL sentence or JSONL record."""
    path = Path(path)
    lines = None  # [(line number, line)]
    if fmt == "auto":
        if path.suffix.lower() in (".jsonl", ".json", ".ndjson"):
            fmt = "jsonl"
        else:
            lines = list(text_lines(path))
            fmt = "conll" if _looks_like_conll(lines) else "text"
    if fmt == "conll":
        items = [Item(s.tokens, s.line, document=s.document) for s in read_conll(path)]
    elif fmt == "text":
        items = [_text_item(t, n, char_level) for n, t in (text_lines(path) if lines is None else lines)]
    else:
        items = []
        for n, line in text_lines(path):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise NerflowError(f"{path}:{n}: not valid JSON ({exc.msg})") from None
            if isinstance(rec, dict) and isinstance(rec.get("text"), str):
                items.append(_text_item(rec["text"], n, char_level, rec.get("id")))
            elif isinstance(rec, dict) and isinstance(rec.get("tokens"), list) and all(isinstance(t, str) for t in rec["tokens"]):
                items.append(Item(rec["tokens"], n, id=rec.get("id")))
            else:
                raise NerflowError(f"{path}:{n}: expected {{\"text\": \"...\"}} or {{\"tokens\": [\"...\", ...]}}")
    if not items:
        raise NerflowError(f"{path}: nothing to tag (empty file)")
    return items


def _check(path, items: list[Item], char_level: bool, conll_out: bool) -> None:
    for item in items:
        if item.text is None and char_level and any(len(t) != 1 for t in item.tokens):
            raise NerflowError(f"{path}:{item.line}: the model tags characters: token input needs one character per token")
        bad = next((t for t in item.tokens if t.split() != [t]), None) if conll_out else None
        if bad is not None:
            raise NerflowError(f"{path}:{item.line}: token {bad!r} is empty or holds whitespace: cannot be written as CoNLL")


def tag_items(tagger, items: list[Item], progress: bool = False) -> Iterator[tuple[Item, list[str], list[float]]]:
    """(item, tags, probabilities) for each item, in order, tagging CHUNK items at a time."""
    with progress_of(len(items), "predict", "sentences", progress) as bar:
        for start in range(0, len(items), CHUNK):
            chunk = items[start : start + CHUNK]
            todo = [k for k, item in enumerate(chunk) if item.tokens]
            tags, probs = tagger.predict([chunk[k].tokens for k in todo], documents=[("", chunk[k].document) for k in todo])
            done = dict(zip(todo, zip(tags, probs)))
            for k, item in enumerate(chunk):
                yield (item, *done.get(k, ([], [])))
            bar.update(len(chunk))


def record(item: Item, tags: list[str], probs: list[float]) -> dict[str, Any]:
    """The JSONL record: entity start/end are character offsets into ``text`` for text
    input and token indices (end exclusive) for token input, as the service returns them."""
    rec: dict[str, Any] = {} if item.id is None else {"id": item.id}
    if item.text is not None:
        rec["text"] = item.text
    rec.update(tokens=item.tokens, tags=tags, scores=[round(float(p), 4) for p in probs])
    rec["entities"] = [
        {"type": e["type"], "text": e["text"], "start": e.get("start", e["start_word"]),
         "end": e.get("end", e["end_word"]), "score": e["score"]}
        for e in entities_from_tags(item.tokens, tags, probs, item.spans, item.text)
    ]
    return rec


def predict_file(input_path, model: str, registry_params=None, out=None, input_format: str = "auto",
                 output_format: str = "jsonl", batch_size: int = 64, precision: str = "auto",
                 progress: bool = False) -> int:
    """Tag ``input_path`` with ``model``; write to ``out`` (atomically) or stdout. Returns the
    number of records written."""
    model_dir, _ = resolve_model(model, registry_params)
    info = read_model_info(model_dir)
    if task_of(info).name == TEXT:
        return classify_file(input_path, model_dir, out, input_format, output_format, batch_size, precision, progress)
    char_level = info.get("level") == "char"
    items = read_input(input_path, input_format, char_level)
    _check(input_path, items, char_level, output_format == "conll")
    quiet_library_bars(progress)  # transformers' "Loading weights" bar: on a terminal with progress only
    tagger = WordTagger(model_dir, precision=precision, batch_size=batch_size)

    with (atomic_file(out) if out else contextlib.nullcontext(sys.stdout)) as fh:
        for item, tags, probs in tag_items(tagger, items, progress):
            if output_format == "conll":
                fh.write("".join(f"{t}\t{g}\n" for t, g in zip(item.tokens, tags)) + "\n")
            else:
                fh.write(json.dumps(record(item, tags, probs), ensure_ascii=False) + "\n")
    return len(items)


def classify_file(input_path, model_dir: Path, out=None, input_format: str = "auto", output_format: str = "jsonl",
                  batch_size: int = 64, precision: str = "auto", progress: bool = False) -> int:
    """predict with a text-classification model: a label, its score and every class's
    probability per text line or JSONL {"text": ...} record (``truncated``: cut to head and
    tail as in training)."""
    if output_format == "conll" or input_format == "conll":
        raise NerflowError(f"{model_dir}: a text-classification model reads text lines or JSON Lines and writes JSON Lines")
    items = read_input(input_path, input_format if input_format != "auto" or str(input_path).endswith(
        (".jsonl", ".json", ".ndjson")) else "text")
    if any(item.text is None for item in items):
        bad = next(item for item in items if item.text is None)
        raise NerflowError(f"{input_path}:{bad.line}: a text-classification model needs {{\"text\": \"...\"}} records")
    quiet_library_bars(progress)
    classifier = TextClassifier(model_dir, precision=precision, batch_size=batch_size)
    with (atomic_file(out) if out else contextlib.nullcontext(sys.stdout)) as fh, \
            progress_of(len(items), "predict", "texts", progress) as bar:
        for start in range(0, len(items), CHUNK):
            chunk = items[start : start + CHUNK]
            for item, result in zip(chunk, classifier.predict([item.text for item in chunk])):
                rec = ({} if item.id is None else {"id": item.id}) | {"text": item.text, **result}
                fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
            bar.update(len(chunk))
    return len(items)


# -------------------------------------------------------------------------------- score


def _token_lines(sentences) -> list[tuple[int, str]]:
    return [(s.line + i, t) for s in sentences for i, t in enumerate(s.tokens)]


def score_files(gold_path, pred_path=None, scheme: str = "default", line_by_line: bool = False) -> dict[str, Any]:
    """Scores of GOLD and PRED (tags in each file's last column), or of one `token ... gold
    pred` file (conlleval's input): as metrics.json, ``scheme``'s scores at the top and both
    seqeval modes under ``schemes``. A token that differs between the files is an error, unless
    ``line_by_line``: then token lines are paired in order as conlleval.pl pairs them (a system
    that normalised `gt` to `get`) and the differing lines are counted. Different numbers of
    token lines or sentence breaks are errors either way."""
    differing: list[tuple[int, str, int, str]] = []
    if pred_path is None:
        gold = read_conll(gold_path, {"tag_column": -2})
        if all(s.tags == s.tokens for s in gold):  # two columns: "gold" was the token itself
            raise NerflowError(f"{gold_path}: expected `token ... gold pred` columns, or a predictions file as well")
        pred = read_conll(gold_path)
    else:
        gold, pred = read_conll(gold_path), read_conll(pred_path)
        g, p = _token_lines(gold), _token_lines(pred)
        differing = [(gl, gt, pl, pt) for (gl, gt), (pl, pt) in zip(g, p) if gt != pt]
        if differing and not line_by_line:
            gl, gt, pl, pt = differing[0]
            raise NerflowError(f"{gold_path}:{gl}: token {gt!r} but {pred_path}:{pl}: token {pt!r} (the files must hold the "
                               f"same tokens; --line-by-line pairs token lines in order as conlleval.pl does)")
        if len(g) != len(p):
            longer, lines, n = (gold_path, g, len(p)) if len(g) > len(p) else (pred_path, p, len(g))
            raise NerflowError(f"{gold_path} has {len(g)} tokens, {pred_path} {len(p)}: {longer}:{lines[n][0]}: token {lines[n][1]!r} has no counterpart")
        for gs, ps in zip(gold, pred):
            if len(gs.tokens) != len(ps.tokens):
                raise NerflowError(f"{gold_path}:{gs.line}: sentence of {len(gs.tokens)} tokens but {pred_path}:{ps.line}: "
                                   f"{len(ps.tokens)} (sentence breaks differ)")
    scores = all_scores([s.tags for s in gold], [s.tags for s in pred])
    result = {"gold": str(gold_path), "pred": str(pred_path or gold_path), "sentences": len(gold),
              "tokens": sum(len(s.tokens) for s in gold), **scores[scheme], "schemes": scores}
    if line_by_line:
        result["differing_tokens"] = len(differing)
        result["first_differing"] = ({"gold": f"{gold_path}:{differing[0][0]}", "gold_token": differing[0][1],
                                      "pred": f"{pred_path}:{differing[0][2]}", "pred_token": differing[0][3]}
                                     if differing else None)
    return result


def format_scores(result: dict[str, Any]) -> str:
    scores = result["schemes"]
    lines = [f"gold {result['gold']}, predictions {result['pred']}: {result['sentences']} sentences, "
             f"{result['tokens']} tokens, {result['support']} gold entities",
             f"{'scheme':<20} {'precision':>9} {'recall':>9} {'F1':>9} {'support':>8}"]
    if "differing_tokens" in result:
        first = result["first_differing"]
        lines.insert(1, f"scored line by line: {result['differing_tokens']} of {result['tokens']} token lines differ"
                        + (f" (first: {first['gold']} {first['gold_token']!r}, {first['pred']} {first['pred_token']!r})"
                           if first else ""))
    for name, label in (("default", "default (conlleval)"), ("strict", "strict (IOB2)")):
        s = scores[name]
        lines.append(f"{label:<20} {s['precision']:>9.4f} {s['recall']:>9.4f} {s['f1']:>9.4f} {s['support']:>8}")
    lines += ["", f"{'type (' + result['scheme'] + ')':<20} {'precision':>9} {'recall':>9} {'F1':>9} {'support':>8}"]
    for etype, s in result["per_type"].items():
        lines.append(f"{etype:<20} {s['precision']:>9.4f} {s['recall']:>9.4f} {s['f1']:>9.4f} {s['support']:>8}")
    return "\n".join(lines)
