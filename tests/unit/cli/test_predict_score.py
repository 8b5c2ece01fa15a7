"""`nerflow predict` and `nerflow score` with the tiny model the session fixtures train."""

import argparse
import json
import random

import pytest
from conftest import run_cli, write_params

from nerflow import NerflowError
from nerflow.cli import commands as cli_main
from nerflow.cli import predict as batch
from nerflow.tasks.token.predict import split_words
from nerflow.tasks.token.readers import read_conll

LABELS = ["O", "B-LOC", "I-LOC", "B-MISC", "I-MISC", "B-ORG", "I-ORG", "B-PER", "I-PER"]


def nerflow(argv, params=None):
    """`nerflow ARGV` in-process, with the CLI's error handling (one line, exit 2)."""
    import sys

    parser = argparse.ArgumentParser(prog="nerflow")
    cli_main._add_predict_parsers(parser.add_subparsers(dest="step", required=True))
    try:
        return batch.run(parser.parse_args([str(a) for a in argv]), params)
    except NerflowError as exc:
        print(f"nerflow: error: {exc}", file=sys.stderr)
        return 2


def typed(p: dict, **registry):
    from nerflow.core.config import parse_params

    p = json.loads(json.dumps(p))
    p["registry"].update(registry)
    return parse_params(p)


@pytest.fixture(scope="module")
def params(library_run):
    return typed(library_run["params"])


@pytest.fixture(scope="module")
def trained(strong_model):
    """A model that finds entities (the 8-step library run's tags everything O)."""
    return strong_model


@pytest.fixture(scope="module")
def tagger(trained):
    from nerflow.tasks.token.predict import WordTagger

    return WordTagger(trained["model"])


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def no_temp_files(folder):
    return not [p.name for p in folder.iterdir() if ".tmp-" in p.name]


def test_predict_text_lines_offsets_slice_the_text(trained, params, tagger, conll_dir, tmp_path):
    texts = [" ".join(s.tokens) for s in read_conll(conll_dir / "test.txt")[:40]]
    texts += ["", "  Angela Merkel visited Paris, naïve café — 東京.  ", "U.S. AT&T 1996-08-22 rose 5%\t!"]
    src, out = tmp_path / "texts.txt", tmp_path / "out.jsonl"
    src.write_bytes(("\r\n".join(texts) + "\r\n").encode())  # CRLF: offsets are into the line without its end
    assert nerflow(["predict", src, "--model", trained["model"], "--out", out, "--no-progress"], params) == 0
    records = read_jsonl(out)
    assert [r["text"] for r in records] == texts
    words = [[w for w, _, _ in split_words(t)] for t in texts]
    expected, _ = tagger.predict([w for w in words if w])
    assert [r["tags"] for r in records if r["tokens"]] == expected  # the model's own tags, in input order
    n_entities = 0
    for r, w, text in zip(records, words, texts):
        assert r["tokens"] == w and len(r["tags"]) == len(r["scores"]) == len(w)
        starts = {a for _, a, _ in split_words(text)}
        ends = {b for _, _, b in split_words(text)}
        for e in r["entities"]:
            assert text[e["start"] : e["end"]] == e["text"] and e["start"] in starts and e["end"] in ends
            n_entities += 1
    assert n_entities > 0
    assert records[40] == {"text": "", "tokens": [], "tags": [], "scores": [], "entities": []}


@pytest.fixture(scope="module")
def conll_predictions(trained, params, conll_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("pred") / "test.pred.conll"
    assert nerflow(["predict", conll_dir / "test.txt", "--model", trained["model"], "--output-format", "conll",
                    "--out", out], params) == 0
    return out


def test_conll_predictions_round_trip_into_score_equal_evaluate(trained, params, conll_dir, conll_predictions, capsys):
    gold = read_conll(conll_dir / "test.txt")
    pred = read_conll(conll_predictions)
    assert [s.tokens for s in pred] == [s.tokens for s in gold]
    metrics = json.loads(trained["metrics"].read_text())
    assert metrics["f1"] > 0.1  # a model that finds entities: the equality below means something
    capsys.readouterr()
    for scheme in ("default", "strict"):
        assert nerflow(["score", conll_dir / "test.txt", conll_predictions, "--scheme", scheme, "--json"], params) == 0
        result = json.loads(capsys.readouterr().out)
        want = metrics["schemes"][scheme]
        assert result["scheme"] == scheme and result["sentences"] == metrics["sentences"] == len(gold)
        assert result["f1"] == pytest.approx(want["f1"], abs=1e-9)
        assert (result["precision"], result["recall"]) == pytest.approx((want["precision"], want["recall"]), abs=1e-9)
        for etype, row in want["per_type"].items():
            assert result["per_type"][etype]["f1"] == pytest.approx(row["f1"], abs=1e-9)
            assert result["per_type"][etype]["support"] == row["support"]
        assert result["schemes"]["default"]["f1"] == pytest.approx(metrics["schemes"]["default"]["f1"], abs=1e-9)
    assert nerflow(["score", conll_dir / "test.txt", conll_predictions], params) == 0
    table = capsys.readouterr().out
    assert f"{metrics['schemes']['default']['f1']:9.4f}" in table.splitlines()[2]
    assert table.splitlines()[3].startswith("strict (IOB2)") and f"{metrics['schemes']['strict']['f1']:9.4f}" in table


def test_predict_jsonl_text_and_tokens_to_stdout(trained, params, conll_dir, tmp_path, capsys):
    sents = read_conll(conll_dir / "test.txt")[:12]
    lines = [json.dumps({"text": " ".join(s.tokens)}) if k % 2 else json.dumps({"id": f"s{k}", "tokens": s.tokens})
             for k, s in enumerate(sents)]
    lines.insert(3, "")  # blank lines are skipped
    lines.append(json.dumps({"text": ""}))
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    capsys.readouterr()
    assert nerflow(["predict", src, "--model", trained["model"]], params) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(records) == len(sents) + 1
    n_entities = 0
    for k, (r, s) in enumerate(zip(records, sents)):
        assert r["tokens"] == s.tokens and len(r["tags"]) == len(r["scores"]) == len(s.tokens)
        for e in r["entities"]:
            n_entities += 1
            if k % 2:  # text: character offsets
                assert r["text"][e["start"] : e["end"]] == e["text"]
            else:  # tokens: token indices, end exclusive
                assert r["id"] == f"s{k}" and " ".join(s.tokens[e["start"] : e["end"]]) == e["text"]
                assert r["tags"][e["start"]][2:] == e["type"]
    assert n_entities > 0
    assert records[-1]["tokens"] == []


def test_predict_conll_input_to_jsonl_has_one_record_per_sentence(trained, params, conll_dir, conll_predictions, tmp_path):
    out = tmp_path / "out.jsonl"
    assert nerflow(["predict", conll_dir / "test.txt", "--model", trained["model"], "--out", out,
                    "--input-format", "auto"], params) == 0
    records = read_jsonl(out)
    pred = read_conll(conll_predictions)
    assert [r["tokens"] for r in records] == [s.tokens for s in pred]
    assert [r["tags"] for r in records] == [s.tags for s in pred]
    for r in records:
        for e in r["entities"]:
            assert " ".join(r["tokens"][e["start"] : e["end"]]) == e["text"]


def conll_lines(path):
    """1-based line number of every token line (not -DOCSTART-) of a CoNLL file."""
    return [n for n, line in enumerate(path.read_text().splitlines(), 1) if line.strip() and not line.startswith("-DOCSTART-")]


def test_score_of_one_conlleval_file_equals_conlleval(conll_dir, tmp_path, capsys):
    from conlleval import evaluate

    gold = read_conll(conll_dir / "test.txt") + read_conll(conll_dir / "validation.txt")
    rng = random.Random(7)
    pred = [[rng.choice(LABELS) if rng.random() < 0.25 else t for t in s.tags] for s in gold]
    lines = []
    for s, p in zip(gold, pred):
        lines += [f"{tok} NNP {g} {q}" for tok, g, q in zip(s.tokens, s.tags, p)] + [""]
    one = tmp_path / "system.txt"
    one.write_text("\n".join(lines) + "\n")
    reference = evaluate(lines)
    capsys.readouterr()
    assert nerflow(["score", one, "--json"]) == 0
    ours = json.loads(capsys.readouterr().out)
    evals = reference["overall"]["chunks"]["evals"]
    assert (ours["precision"], ours["recall"], ours["f1"]) == pytest.approx((evals["prec"], evals["rec"], evals["f1"]), abs=1e-12)
    assert ours["support"] == reference["overall"]["chunks"]["stats"]["gold"]
    for etype, r in reference["slots"]["chunks"].items():
        assert ours["per_type"][etype]["f1"] == pytest.approx(r["evals"]["f1"], abs=1e-12)
        assert ours["per_type"][etype]["support"] == r["stats"]["gold"]
    assert ours["schemes"]["strict"]["f1"] != ours["f1"]  # random I- starts: the modes differ
    # the same predictions as a second file (token<TAB>tag) score the same
    second = tmp_path / "pred.conll"
    second.write_text("".join("".join(f"{t}\t{q}\n" for t, q in zip(s.tokens, p)) + "\n" for s, p in zip(gold, pred)))
    both = tmp_path / "gold.conll"
    both.write_text("".join("".join(f"{t} {g}\n" for t, g in zip(s.tokens, s.tags)) + "\n" for s in gold))
    assert nerflow(["score", both, second, "--json"]) == 0
    two = json.loads(capsys.readouterr().out)
    assert two["schemes"]["default"]["f1"] == ours["f1"] and two["schemes"]["strict"]["f1"] == ours["schemes"]["strict"]["f1"]


def test_line_by_line_scores_a_system_that_normalised_tokens_as_conlleval_does(conll_dir, tmp_path, capsys):
    """A shared-task submission whose system rewrote some tokens (WNUT-17: `gt` written as `get`):
    refused by default, naming the option; with --line-by-line paired in order and scored as
    conlleval.pl scores the pasted files, with the number of differing lines reported."""
    from conlleval import evaluate

    gold = read_conll(conll_dir / "test.txt")
    rng = random.Random(11)
    pred = [[rng.choice(LABELS) if rng.random() < 0.2 else t for t in s.tags] for s in gold]
    normalised = [[t.lower() if i % 7 == 3 else t for i, t in enumerate(s.tokens)] for s in gold]
    changed = sum(t != n for s, ns in zip(gold, normalised) for t, n in zip(s.tokens, ns))
    assert changed > 10
    gold_file, pred_file = tmp_path / "gold.conll", tmp_path / "system.conll"
    gold_file.write_text("".join("".join(f"{t} {g}\n" for t, g in zip(s.tokens, s.tags)) + "\n" for s in gold))
    pred_file.write_text("".join("".join(f"{t}\t{q}\n" for t, q in zip(ns, p)) + "\n" for ns, p in zip(normalised, pred)))
    assert nerflow(["score", gold_file, pred_file]) == 2
    assert "--line-by-line pairs token lines in order" in capsys.readouterr().err
    assert nerflow(["score", gold_file, pred_file, "--line-by-line", "--json"]) == 0
    ours = json.loads(capsys.readouterr().out)
    pasted = []  # conlleval.pl's input: the two files side by side, line by line
    for s, ns, p in zip(gold, normalised, pred):
        pasted += [f"{n} {g} {q}" for n, g, q in zip(ns, s.tags, p)] + [""]
    evals = evaluate(pasted)["overall"]["chunks"]["evals"]
    assert (ours["precision"], ours["recall"], ours["f1"]) == pytest.approx((evals["prec"], evals["rec"], evals["f1"]), abs=1e-12)
    assert ours["differing_tokens"] == changed and ours["first_differing"]["gold"].startswith(f"{gold_file}:")
    assert nerflow(["score", gold_file, pred_file, "--line-by-line"]) == 0
    assert f"scored line by line: {changed} of {ours['tokens']} token lines differ" in capsys.readouterr().out
    # a missing line is still an error: line by line needs as many token lines in both files
    short = tmp_path / "short.conll"
    short.write_text("".join(pred_file.read_text().splitlines(keepends=True)[1:]))
    assert nerflow(["score", gold_file, short, "--line-by-line"]) == 2
    assert "has no counterpart" in capsys.readouterr().err


def test_score_mismatches_name_both_files_and_lines(conll_dir, conll_predictions, tmp_path, capsys):
    gold = conll_dir / "test.txt"
    text = conll_predictions.read_text().splitlines(keepends=True)
    token_lines = conll_lines(conll_predictions)
    k = 57  # the 58th token
    changed = tmp_path / "changed.conll"
    text_changed = list(text)
    text_changed[token_lines[k] - 1] = "Nonsense\tO\n"
    changed.write_text("".join(text_changed))
    assert nerflow(["score", gold, changed]) == 2
    err = capsys.readouterr().err
    assert f"{gold}:{conll_lines(gold)[k]}: token" in err and f"{changed}:{token_lines[k]}: token 'Nonsense'" in err

    short = tmp_path / "short.conll"
    short.write_text("".join(text[: token_lines[k]]))
    assert nerflow(["score", gold, short]) == 2
    err = capsys.readouterr().err
    assert str(short) in err and f"{gold}:{conll_lines(gold)[k + 1]}" in err

    moved = tmp_path / "moved.conll"  # same tokens, one sentence break removed
    blank = next(n for n, line in enumerate(text) if not line.strip())
    moved.write_text("".join(text[:blank] + text[blank + 1 :]))
    assert nerflow(["score", gold, moved]) == 2
    assert "sentence breaks differ" in capsys.readouterr().err

    assert nerflow(["score", conll_predictions]) == 2  # token<TAB>tag only: no second tag column
    assert f"{conll_predictions}: expected `token ... gold pred`" in capsys.readouterr().err
    assert nerflow(["score", tmp_path / "nosuch.conll", conll_predictions]) == 2
    assert "nosuch.conll: no such file" in capsys.readouterr().err


def test_bad_predict_inputs_fail_with_file_line_and_write_nothing(trained, params, tmp_path, capsys):
    model = trained["model"]
    out = tmp_path / "out.jsonl"
    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text('{"text": "EU rejects"}\n{"tokens": ["a", "b"]}\n{"text": "oops"\n')
    bad_shape = tmp_path / "shape.jsonl"
    bad_shape.write_text('{"text": "EU rejects"}\n\n{"tokens": "EU rejects"}\n')
    spaced = tmp_path / "spaced.jsonl"
    spaced.write_text('{"tokens": ["New York", "rejects"]}\n')
    not_utf8 = tmp_path / "latin.txt"
    not_utf8.write_bytes("ok\nMünchen\n".encode("latin-1"))
    cases = [
        (["predict", tmp_path / "nosuch.txt"], f"{tmp_path / 'nosuch.txt'}: no such file"),
        (["predict", bad_json], f"{bad_json}:3: not valid JSON"),
        (["predict", bad_shape], f"{bad_shape}:3: expected"),
        (["predict", spaced, "--output-format", "conll"], f"{spaced}:1: token 'New York'"),
        (["predict", not_utf8], f"{not_utf8}:2: not UTF-8"),
        (["predict", tmp_path], f"{tmp_path}: is a directory"),
        (["predict", bad_json, "--model", tmp_path / "nosuch-model"], "nosuch-model: no such model folder"),
        (["predict", bad_json, "--model", tmp_path], f"{tmp_path}: not a trained model folder"),
    ]
    for argv, message in cases:
        if "--model" not in argv:
            argv = argv + ["--model", model]
        assert nerflow(argv + ["--out", out], params) == 2, argv
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, (argv, err)
        assert not out.exists() and no_temp_files(tmp_path)


def test_tagging_in_chunks_and_a_failure_midway_keeps_the_old_output(trained, params, conll_dir, tmp_path, monkeypatch):
    from nerflow.tasks.token.predict import WordTagger

    sizes = []
    original = WordTagger.predict

    def spy(self, sentences, *a, **k):
        if k.get("documents") is not None:  # a chunk (predict calls itself with a document's windows)
            sizes.append(len(sentences))
            if fail and len(sizes) == 3:
                raise RuntimeError("killed")
        return original(self, sentences, *a, **k)

    monkeypatch.setattr(batch, "CHUNK", 16)
    monkeypatch.setattr(WordTagger, "predict", spy)
    out = tmp_path / "out.conll"
    fail = False
    assert nerflow(["predict", conll_dir / "test.txt", "--model", trained["model"], "--out", out,
                    "--output-format", "conll"], params) == 0
    assert sizes == [16, 16, 16, 12] and len(read_conll(out)) == 60
    before = out.read_bytes()
    fail, sizes[:] = True, []
    with pytest.raises(RuntimeError):
        nerflow(["predict", conll_dir / "test.txt", "--model", trained["model"], "--out", out,
                 "--output-format", "conll"], params)
    assert out.read_bytes() == before and no_temp_files(tmp_path)


def test_production_model_and_registry_tags(library_run, trained, tmp_path, conll_dir, monkeypatch, capsys):
    from nerflow.release.registry import Registry

    monkeypatch.delenv("BENTOML_HOME", raising=False)
    store = tmp_path / "store"
    params = typed(library_run["params"], bentoml_home=str(store))
    src = tmp_path / "in.txt"
    src.write_text("EU rejects German call to boycott British lamb .\nPeter Blackburn\n")
    assert nerflow(["predict", src], params) == 2
    assert "no production model" in capsys.readouterr().err

    registry = Registry("nerflow-ner", store)
    tag = registry.register(trained["model"], {"metrics": {"f1": 0.5}, "data_hash": "x"}, {})
    outputs = {}
    for name, model in (("folder", trained["model"]), ("tag", tag), ("production", None)):
        if name == "production":
            registry.promote(tag, "test")
        argv = ["predict", src, "--out", tmp_path / f"{name}.jsonl"] + (["--model", model] if model else [])
        assert nerflow(argv, params) == 0, capsys.readouterr().err
        outputs[name] = read_jsonl(tmp_path / f"{name}.jsonl")
    assert len(outputs["folder"]) == 2 and outputs["folder"] == outputs["tag"] == outputs["production"]
    assert nerflow(["predict", src, "--model", "nerflow-ner:nosuch"], params) == 2
    assert "nerflow-ner:nosuch: no such model" in capsys.readouterr().err


def test_character_level_model_tags_characters(trained, params, conll_dir, tmp_path, capsys):
    import shutil

    model = tmp_path / "char-model"
    shutil.copytree(trained["model"], model)
    info = json.loads((model / "nerflow.json").read_text())
    (model / "nerflow.json").write_text(json.dumps({**info, "level": "char"}))  # as a KLUE-trained model's
    texts = [" ".join(s.tokens) for s in read_conll(conll_dir / "test.txt")[:20]] + ["", " 서울 CHINA  "]
    src = tmp_path / "texts.txt"
    src.write_text("\n".join(texts) + "\n", encoding="utf-8")
    capsys.readouterr()
    assert nerflow(["predict", src, "--model", model], params) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["tokens"] for r in records] == [list(t) for t in texts]  # spaces included, as in KLUE
    assert all(len(r["tags"]) == len(r["text"]) for r in records)
    entities = [(r["text"], e) for r in records for e in r["entities"]]
    assert entities and all(text[e["start"] : e["end"]] == e["text"] for text, e in entities)
    assert nerflow(["predict", conll_dir / "test.txt", "--model", model], params) == 2  # words, not characters
    assert f"{conll_dir / 'test.txt'}:3: the model tags characters" in capsys.readouterr().err


def test_cli_predict_with_the_production_model_then_score(library_run, trained, conll_dir, tmp_path, capsys):
    from nerflow.release.registry import Registry

    p = json.loads(json.dumps(library_run["params"]))
    p["registry"]["bentoml_home"] = str(tmp_path / "store")
    pfile = write_params(p, tmp_path / "params.yaml")
    registry = Registry("nerflow-ner", tmp_path / "store")
    registry.promote(registry.register(trained["model"], {"metrics": {"f1": 0.5}, "data_hash": "x"}, {}), "test")
    gold, out = conll_dir / "test.txt", tmp_path / "pred.conll"
    r = run_cli(["predict", str(gold), "--output-format", "conll", "--out", str(out)], pfile)
    assert r.returncode == 0 and r.stdout == "", r.stderr
    # stderr is no terminal: no bar (nor transformers' "Loading weights" one), a plain line at the end
    sentences = len(read_conll(gold))
    assert "\r" not in r.stderr and r.stderr.startswith(f"predict: {sentences}/{sentences} sentences (100%), "), r.stderr
    assert len(r.stderr.splitlines()) == 1 and r.stderr.rstrip().endswith("(done)")
    capsys.readouterr()
    assert nerflow(["score", gold, out, "--json"]) == 0  # (score through the CLI: same parsers and run)
    assert json.loads(capsys.readouterr().out)["f1"] == pytest.approx(json.loads(trained["metrics"].read_text())["f1"], abs=1e-9)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "EU rejects German call"}\n{"txt": "oops"}\n')
    r = run_cli(["predict", str(bad), "--out", str(tmp_path / "never.jsonl"), "--params", str(pfile)], pfile)
    assert r.returncode == 2 and r.stderr == f'nerflow: error: {bad}:2: expected {{"text": "..."}} or {{"tokens": ["...", ...]}}\n'
    assert not (tmp_path / "never.jsonl").exists()
