"""Text classification through the same workflow: readers (TSV/CSV with or without a header,
JSON Lines, Parquet, HF datasets), head+tail encoding, the scores against scikit-learn's, the
gate on accuracy / macro F1 with the paired bootstrap, the steps through the library, `dvc
repro` and a local KFP run (both gate branches), and the NSMC sample when ../shared is here.

The corpus: real sentences of the CoNLL-2003 slices, each labelled by whether it names a person
(`person` / `other`), written as NSMC lays its files out (`id<TAB>document<TAB>label`)."""

import json
import shutil
import sys

import conftest
import pytest
from conftest import ROOT, SHARED_DATA, run_cli, write_params

TEXT = "text-classification"


def labelled(path):
    from nerflow.tasks.token.readers import read_conll

    return [(" ".join(s.tokens), "person" if "B-PER" in s.tags else "other") for s in read_conll(path)]


def write_tsv(rows, path, header=True):
    lines = (["id\tdocument\tlabel"] if header else []) + [f"{i}\t{t}\t{lab}" for i, (t, lab) in enumerate(rows, 1)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def text_dir(conll_dir, tmp_path_factory):
    d = tmp_path_factory.mktemp("texts")
    rows = {split: labelled(conll_dir / f"{split}.txt") for split in ("train", "validation", "test")}
    rows["test"] += rows["train"][100:103]  # three test texts also in train, as NSMC's test has
    for split, texts in rows.items():
        write_tsv(texts, d / f"{split}.tsv")
    return d


def text_params(text_dir, tiny_model, work) -> dict:
    p = conftest.test_params(text_dir, tiny_model, work)  # the project's params.yaml sized for tests
    p["data"].update(task=TEXT, train=str(text_dir / "train.tsv"), validation=str(text_dir / "validation.tsv"),
                     test=str(text_dir / "test.tsv"))
    p["registry"]["model_name"] = "nerflow-cls"
    return p


@pytest.fixture(scope="session")
def text_run(text_dir, tiny_model, tmp_path_factory) -> dict:
    """data -> evaluate through the library on the person/other corpus with the tiny model."""
    from nerflow.steps.data import prepare_data
    from nerflow.steps.evaluate import evaluate
    from nerflow.steps.preprocess import preprocess
    from nerflow.steps.train import train
    from nerflow.steps.validate import validate_dataset

    work = tmp_path_factory.mktemp("text-run")
    p = text_params(text_dir, tiny_model, work)
    p["train"]["max_steps"] = 30
    paths = {k: work / k for k in ("dataset", "report", "features", "model", "evaluation")}
    paths.update(metrics=work / "metrics.json", predictions=work / "predictions.jsonl")
    manifest = prepare_data(p["data"], paths["dataset"])
    summary = validate_dataset(p["validate"], paths["dataset"], paths["report"])
    info = preprocess(p["preprocess"], paths["dataset"], paths["features"])
    trained = train(p["train"], paths["features"], paths["model"])
    metrics = evaluate(p["evaluate"], paths["model"], paths["dataset"], paths["metrics"], paths["predictions"],
                       paths["evaluation"])
    return {"params": p, "work": work, "manifest": manifest, "validation": summary, "info": info, "train": trained,
            "scores": metrics, **paths}


# ------------------------------------------------------------------------------ readers


def read(tmp_path, files: dict, **data):
    from nerflow.core.dataset import load_dataset_dir
    from nerflow.steps.data import prepare_data

    out = tmp_path / f"ds-{len(list(tmp_path.glob('ds-*')))}"
    manifest = prepare_data({"task": TEXT, **files, **data}, out)
    return manifest, load_dataset_dir(out)


ROWS = [("Good movie , 10/10", "1"), ('He said "meh" and left', "0"), ("Great acting", "1")]


def test_every_format_reads_the_same_texts_labels_and_data_version(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

    names = ["negative", "positive"]
    ids = [int(label) for _, label in ROWS]
    tsv = write_tsv(ROWS, tmp_path / "a.tsv")
    bare = write_tsv(ROWS, tmp_path / "bare.txt", header=False)  # NSMC's layout without its header line
    csv = tmp_path / "a.csv"
    csv.write_text('text,label\n"Good movie , 10/10",1\n"He said ""meh""\nand left",0\nGreat acting,1\n', encoding="utf-8")
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_text("".join(json.dumps({"text": t, "label": i}) + "\n" for (t, _), i in zip(ROWS, ids)), encoding="utf-8")
    parquet = tmp_path / "a.parquet"
    pq.write_table(pa.table({"sentence": [t for t, _ in ROWS], "label": ids}), parquet)
    hf = tmp_path / "hf"
    features = Features({"text": Value("string"), "label": ClassLabel(names=names)})
    split = Dataset.from_dict({"text": [t for t, _ in ROWS], "label": ids}, features=features)
    DatasetDict(train=split, validation=split, test=split).save_to_disk(str(hf))

    seen = {}
    for name, path in (("tsv", tsv), ("bare", bare), ("csv", csv), ("jsonl", jsonl), ("parquet", parquet)):
        spec = {split: str(path) for split in ("train", "validation", "test")}
        seen[name] = read(tmp_path, spec, label_names=names)
    seen["hf"] = read(tmp_path, {"train": None, "validation": None, "test": None, "path": str(hf)})
    want = ["positive", "negative", "positive"]
    for name, (manifest, ds) in seen.items():
        texts = ds["train"]["text"]
        assert ds["train"]["label"] == want, name
        assert texts[0] == "Good movie , 10/10" and texts[2] == "Great acting", name
        assert manifest["labels"] == names and manifest["splits"]["test"]["label_counts"] == {"negative": 1, "positive": 2}
    # TSV keeps quotes as written; CSV unquotes and keeps the line break of the quoted field
    assert seen["tsv"][1]["train"]["text"][1] == 'He said "meh" and left'
    assert seen["csv"][1]["train"]["text"][1] == 'He said "meh"\nand left'
    # rows keep the line they start on: the header is line 1; the CSV's 3rd row starts on line 5
    assert seen["tsv"][1]["train"]["source_line"] == [2, 3, 4]
    assert seen["bare"][1]["train"]["source_line"] == [1, 2, 3]
    assert seen["csv"][1]["train"]["source_line"] == [2, 3, 5]
    hashes = {name: m["content_hash"] for name, (m, _) in seen.items() if name not in ("csv",)}
    assert len(set(hashes.values())) == 1, hashes  # the data version is the content, not the layout
    assert seen["tsv"][0]["source_units"]["train"] == "row_lines" and seen["tsv"][0]["label_set_from"] == "params"


@pytest.mark.parametrize("content, data, message", [
    ("id\tdocument\tlabel\n1\tfine\t1\n2\tbroken row\n", {}, "b.tsv:3: 2 column(s), expected at least 3"),
    ("id\tdocument\tlabel\n1\tfine\t1\n2\tno label\t \n", {}, "b.tsv:3: empty label"),
    ("id\treview_text\tlabel\n1\tfine\t1\n", {}, "b.tsv:1: no text column (looked for text, document"),
    ("id\tdocument\tlabel\n1\tfine\t1\n", {"text_column": "body"}, "b.tsv:1: no column 'body' (data.text_column; has id, document, label)"),
    ("1\tfine\t1\n", {"text_column": "body", "header": False}, "names a column, but the file has no header"),
])
def test_bad_rows_are_one_line_naming_file_and_line_and_nothing_is_written(tmp_path, content, data, message):
    bad = tmp_path / "b.tsv"
    bad.write_text(content, encoding="utf-8")
    p = {"data": {"task": TEXT, "train": str(bad), "validation": str(bad), "test": str(bad), **data}}
    r = run_cli(["data", "--out", str(tmp_path / "out")], write_params(p, tmp_path / "params.yaml"))
    assert r.returncode == 2 and message in r.stderr, r.stderr
    assert r.stderr.count("\n") == 1 and not (tmp_path / "out").exists()


def test_validation_share_holds_out_part_of_train_by_seed_keeping_file_lines(tmp_path):
    rows = [(f"review number {i}", str(i % 2)) for i in range(200)]
    train = write_tsv(rows, tmp_path / "ratings_train.txt")
    test = write_tsv(rows[:10], tmp_path / "ratings_test.txt")
    spec = {"train": str(train), "validation": None, "test": str(test)}
    manifest, ds = read(tmp_path, spec, validation_share=0.1, split_seed=7)
    assert manifest["splits"]["train"]["texts"] == 180 and manifest["splits"]["validation"]["texts"] == 20
    assert manifest["validation_share"] == {"share": 0.1, "seed": 7, "of": "train"}
    dev, kept = ds["validation"], ds["train"]
    assert not set(dev["text"]) & set(kept["text"])
    assert all(t == f"review number {line - 2}" for t, line in zip(dev["text"], dev["source_line"]))
    assert manifest["sources"]["validation"] == str(train)
    again, ds2 = read(tmp_path, spec, validation_share=0.1, split_seed=7)
    assert ds2["validation"]["text"] == dev["text"] and again["content_hash"] == manifest["content_hash"]
    other, _ = read(tmp_path, spec, validation_share=0.1, split_seed=8)
    assert other["content_hash"] != manifest["content_hash"]
    from nerflow.core.config import DataParams

    with pytest.raises(ValueError, match="validation_share carves validation out of train"):
        DataParams.model_validate({**spec, "validation": str(train), "validation_share": 0.1})


# ----------------------------------------------------------------------------- encoding


def test_a_long_text_keeps_its_head_and_tail_and_is_counted(tiny_model):
    from transformers import AutoTokenizer

    from nerflow.tasks.text.encode import encode

    tok = AutoTokenizer.from_pretrained(str(tiny_model))
    long = " ".join(f"w{i % 10}" for i in range(100))
    whole = tok(long, add_special_tokens=False)["input_ids"]
    enc = encode(tok, [long, "short text", "", None], max_length=22, truncation="head_tail", head_share=0.25)
    ids = enc.input_ids[0]
    assert len(ids) == 22 and ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id
    assert ids[1:6] == whole[:5] and ids[6:-1] == whole[-15:]  # 20 of the budget: 5 head, 15 tail
    assert enc.cut == [True, False, False, False] and enc.lengths[0] == len(whole) + 2
    assert enc.input_ids[2] == enc.input_ids[3] == [tok.cls_token_id, tok.sep_token_id]
    head = encode(tok, [long], max_length=22, truncation="head").input_ids[0]
    assert head[1:-1] == whole[:20]


# ------------------------------------------------------------------------------ metrics


def test_scores_equal_scikit_learn_and_a_hand_count():
    import random

    from sklearn.metrics import classification_report

    from nerflow.tasks.text.metrics import scores

    s = scores(["a", "a", "b", "b"], ["a", "b", "b", "b"], ["a", "b"])
    assert s["accuracy"] == 0.75 and s["f1"] == pytest.approx(0.8) and s["precision"] == pytest.approx(2 / 3)
    assert s["macro_f1"] == pytest.approx((2 / 3 + 0.8) / 2) and s["f1_average"] == "binary (positive class b)"
    assert s["confusion"] == [[1, 1], [0, 2]]
    rng = random.Random(3)
    labels = ["neg", "neu", "pos"]
    gold = [rng.choice(labels) for _ in range(500)]
    pred = [g if rng.random() < 0.6 else rng.choice(labels) for g in gold]
    s = scores(gold, pred, labels)
    ref = classification_report(gold, pred, labels=labels, output_dict=True, zero_division=0)
    assert s["accuracy"] == pytest.approx(ref["accuracy"]) and s["macro_f1"] == pytest.approx(ref["macro avg"]["f1-score"])
    assert s["f1"] == s["macro_f1"] and s["f1_average"] == "macro"
    for c in labels:
        assert s["per_class"][c]["f1"] == pytest.approx(ref[c]["f1-score"])
        assert s["per_class"][c]["support"] == ref[c]["support"]


@pytest.mark.parametrize("metric", ["f1", "macro_f1", "accuracy"])
def test_bootstrap_counts_sum_to_the_gate_metric(metric):
    import random

    import numpy as np

    from nerflow.tasks.text.metrics import bootstrap_counts, gate_score

    rng = random.Random(5)
    gold = [rng.choice("xy") for _ in range(300)]
    pred = [g if rng.random() < 0.7 else rng.choice("xy") for g in gold]
    counts, value = bootstrap_counts(gold, pred, metric, ["x", "y"])
    assert value(counts.sum(0)[None, :].astype(float))[0] == pytest.approx(gate_score(gold, pred, metric, ["x", "y"])["value"])
    assert counts.shape[0] == 300 and np.all(counts >= 0)


def test_gate_on_texts_promotes_a_better_model_and_refuses_a_worse_one():
    import random

    from nerflow.steps.gate import decide
    from nerflow.tasks.registry import task_named

    task, labels = task_named(TEXT), ["neg", "pos"]
    rng = random.Random(11)
    gold = [rng.choice(labels) for _ in range(400)]
    good = [g if rng.random() < 0.92 else rng.choice(labels) for g in gold]
    weak = [g if rng.random() < 0.6 else rng.choice(labels) for g in gold]
    base = {"min_f1": 0.5, "metric": "accuracy", "bootstrap": {"samples": 500, "seed": 1}}
    d = decide(base, gold, good, weak, "new", "old", task=task, labels=labels)
    assert d["promote"] and d["bootstrap"]["share_ahead"] >= 0.95 and d["metric"] == "accuracy"
    assert d["challenger"]["f1"] == pytest.approx(sum(g == p for g, p in zip(gold, good)) / 400)
    d = decide(base, gold, weak, good, "new", "old", task=task, labels=labels)
    failed = {c["check"] for c in d["checks"] if not c["passed"]}
    assert not d["promote"] and {"beats_champion", "bootstrap", "type_regression:neg", "type_regression:pos"} <= failed
    assert any("accuracy" in r and "vs champion" in r for r in d["reasons"])
    d = decide({**base, "metric": "macro_f1", "type_min_f1": {"pos": 0.99}}, gold, good, None, task=task, labels=labels)
    assert not d["promote"] and [c["check"] for c in d["checks"] if not c["passed"]] == ["type_min_f1:pos"]
    with pytest.raises(Exception, match="token classification gates on entity F1"):
        decide({"metric": "accuracy"}, [["O"]], [["O"]])


# ------------------------------------------------------------------------- the steps


def test_steps_through_the_library(text_run, tiny_model):
    from transformers import AutoTokenizer

    m, manifest, info = text_run["scores"], text_run["manifest"], text_run["info"]
    assert manifest["task"] == TEXT and manifest["labels"] == ["other", "person"]
    assert text_run["validation"]["task"] == TEXT and text_run["validation"]["success"]
    model_info = json.loads((text_run["model"] / "nerflow.json").read_text())
    assert model_info["task"] == TEXT and model_info["labels"] == ["other", "person"]
    assert model_info["truncation"] == "head_tail" and model_info["max_length"] == 64
    # preprocess counts the texts it cut: exactly those over max_length sub-tokens
    tok = AutoTokenizer.from_pretrained(str(tiny_model))
    from nerflow.core.dataset import load_dataset_dir

    test = load_dataset_dir(text_run["dataset"])["test"]
    over = sum(len(ids) > 64 for ids in tok(list(test["text"]))["input_ids"])
    assert info["splits"]["test"]["truncated"] == over == m["truncated_texts"]
    # metrics.json is what predictions.jsonl says
    rows = [json.loads(line) for line in text_run["predictions"].read_text().splitlines()]
    assert len(rows) == m["texts"] == len(test)
    assert m["accuracy"] == pytest.approx(sum(r["gold"] == r["pred"] for r in rows) / len(rows))
    assert all(abs(sum(r["scores"].values()) - 1) < 1e-3 and r["pred"] == max(r["scores"], key=r["scores"].get)
               for r in rows)
    assert set(m["per_class"]) == {"other", "person"} and m["f1_average"] == "binary (positive class person)"
    train_texts = set(load_dataset_dir(text_run["dataset"])["train"]["text"])
    seen = [r for r in rows if r["text"] in train_texts]
    overlap = m["by_train_overlap"]  # scored apart: what a model memorised is not what it learned
    assert overlap["in_train"]["texts"] == len(seen) >= 3 and overlap["not_in_train"]["texts"] == len(rows) - len(seen)
    assert overlap["in_train"]["accuracy"] == pytest.approx(sum(r["gold"] == r["pred"] for r in seen) / len(seen))
    report = text_run["evaluation"]
    assert len((report / "confusion.csv").read_text().splitlines()) == len(rows) + 1
    errors = json.loads((report / "errors.json").read_text())
    assert len(errors["highest_loss_texts"]) == min(50, len(rows)) and sum(map(sum, errors["confusion"])) == len(rows)
    losses = [t["loss"] for t in errors["highest_loss_texts"]]
    assert losses == sorted(losses, reverse=True)
    assert "Highest-loss texts" in (report / "errors.html").read_text() and (report / "confusion.png").stat().st_size > 0
    assert text_run["train"]["steps"] == 30 and len(text_run["train"]["dev_f1"]) >= 1


def test_a_pooler_the_checkpoint_lacks_trains_at_the_head_learning_rate(text_run, tiny_model, tmp_path):
    """An encoder saved without a pooler (as multilingual-e5-small is): a sequence classifier's
    pooler is new, random, and must learn at the head's rate, not the encoder's (found by hand:
    it trained at 5e-5 in the NSMC run)."""
    import transformers
    from transformers import AutoModelForSequenceClassification, BertModel

    from nerflow.steps.train import train

    encoder = tmp_path / "encoder"
    BertModel.from_pretrained(str(tiny_model), add_pooling_layer=False).save_pretrained(str(encoder))
    for f in tiny_model.iterdir():
        if "token" in f.name or f.name == "vocab.txt":
            shutil.copy(f, encoder / f.name)
    p = dict(text_run["params"]["train"], model=str(encoder), max_steps=3, learning_rate=1e-9, head_learning_rate=1e-2,
             warmup_steps=0, eval_each_epoch=False, keep_best=False, lr_scheduler="constant")
    train(p, text_run["features"], tmp_path / "model")
    transformers.set_seed(p["seed"])  # the initial weights train() drew
    start = AutoModelForSequenceClassification.from_pretrained(str(encoder), num_labels=2)
    trained = AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "model"))
    moved = (trained.bert.pooler.dense.weight - start.bert.pooler.dense.weight).abs().max().item()
    kept = (trained.bert.encoder.layer[0].output.dense.weight - start.bert.encoder.layer[0].output.dense.weight).abs().max()
    assert moved > 1e-3 and kept.item() < 1e-6, (moved, kept)


def test_cli_runs_register_gate_package_and_summary_for_texts(text_run, tmp_path):
    p = dict(text_run["params"], registry={"model_name": "nerflow-cls", "bentoml_home": str(tmp_path / "bentoml")})
    pfile = write_params(p, tmp_path / "params.yaml")
    out = {k: str(tmp_path / f"{k}.json") for k in ("registered", "decision", "record")}
    run_cli(["register", "--model", str(text_run["model"]), "--metrics", str(text_run["metrics"]), "--out",
             out["registered"]], pfile, check=True)
    r = run_cli(["gate", "--predictions", str(text_run["predictions"]), "--registered", out["registered"], "--out",
                 out["decision"]], pfile, check=True)
    assert "gate: PROMOTE" in r.stdout and "no production model yet" in r.stdout
    run_cli(["package", "--decision", out["decision"], "--out", out["record"]], pfile, check=True)
    r = run_cli(["summary", "--dataset", str(text_run["dataset"]), "--report", str(text_run["report"]), "--model",
                 str(text_run["model"]), "--metrics", str(text_run["metrics"]), "--decision", out["decision"],
                 "--record", out["record"], "--evaluation-report", str(text_run["evaluation"])], pfile, check=True)
    m = text_run["scores"]
    assert f"test       accuracy {m['accuracy']:.4f}  macro F1 {m['macro_f1']:.4f}" in r.stdout
    assert "gate       PROMOTED nerflow-cls:" in r.stdout and "production nerflow-cls:" in r.stdout
    # the same model again is refused: it is the production model already
    r = run_cli(["gate", "--predictions", str(text_run["predictions"]), "--registered", out["registered"], "--out",
                 out["decision"]], pfile, check=True)
    assert "gate: REFUSE" in r.stdout and "is already the production model" in r.stdout


def test_predict_classifies_a_file_with_a_text_model(text_run, tmp_path):
    from nerflow.tasks.text.classify import TextClassifier

    texts = ["Angela Merkel visited Paris .", "The market fell 3 % on Monday ."]
    src = tmp_path / "texts.txt"
    src.write_text("\n".join(texts) + "\n", encoding="utf-8")
    pfile = write_params(text_run["params"], tmp_path / "params.yaml")
    out = tmp_path / "out.jsonl"
    run_cli(["predict", str(src), "--model", str(text_run["model"]), "--out", str(out)], pfile, check=True)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    expected = TextClassifier(text_run["model"]).predict(texts)
    assert [r["text"] for r in rows] == texts and [r["label"] for r in rows] == [e["label"] for e in expected]
    assert all(r["scores"] == pytest.approx(e["scores"], abs=1e-5) for r, e in zip(rows, expected))
    r = run_cli(["predict", str(src), "--model", str(text_run["model"]), "--output-format", "conll"], pfile)
    assert r.returncode == 2 and "reads text lines or JSON Lines and writes JSON Lines" in r.stderr


# ------------------------------------------------------------------------- DVC and KFP


def test_dvc_repro_runs_text_classification_from_params_alone(tmp_path, text_dir, tiny_model):
    from test_dvc_kfp import sh

    repo = tmp_path / "repo"
    repo.mkdir()
    for item in ("dvc.yaml", "src", "serving"):
        (shutil.copytree if (ROOT / item).is_dir() else shutil.copy)(ROOT / item, repo / item)
    p = text_params(text_dir, tiny_model, tmp_path)
    write_params(p, repo / "params.yaml")
    sh("git init -q && git config user.email t@t && git config user.name t && dvc init -q && git add -A && "
       "git commit -qm init", repo)
    first = sh(["dvc", "repro"], repo)
    for stage in ("data", "validate", "preprocess", "train", "evaluate", "register", "gate", "package"):
        assert f"Running stage '{stage}'" in first.stdout
    shown = json.loads(sh(["dvc", "metrics", "show", "--json"], repo).stdout)[""]["data"]["reports/metrics.json"]["data"]
    assert shown["task"] == TEXT and shown["accuracy"] == json.loads((repo / "reports/metrics.json").read_text())["accuracy"]
    record = json.loads((repo / "reports/package.json").read_text())
    assert record["packaged"] and record["model_tag"].startswith("nerflow-cls:")
    p["preprocess"]["truncation"] = "head"  # a text-classification key re-runs from preprocess
    write_params(p, repo / "params.yaml")
    status = json.loads(sh(["dvc", "status", "--json"], repo).stdout)
    assert "preprocess" in status and "validate" not in status


def test_kfp_local_run_of_text_classification_both_gate_branches(tmp_path, text_dir, tiny_model):
    from test_dvc_kfp import commit, kfp_run, sh

    from nerflow.release.registry import Registry

    p = text_params(text_dir, tiny_model, tmp_path)
    repo = tmp_path / "versioned"
    (repo / "corpus").mkdir(parents=True)
    for split in ("train", "validation", "test"):
        shutil.copy(text_dir / f"{split}.tsv", repo / "corpus" / f"{split}.tsv")
        p["data"][split] = f"corpus/{split}.tsv"
    p["gate"]["min_f1"] = 1.01
    write_params(p, repo / "params.yaml")
    sh("git init -q && git config user.email t@t && git config user.name t && dvc init -q && "
       f"dvc remote add -d storage {tmp_path / 'dvc-remote'} && dvc add -q corpus && git add -A && git commit -qm v1 && "
       "dvc push -q", repo)
    shutil.rmtree(repo / ".dvc" / "cache")
    root = tmp_path / "kfp"
    r, runs = kfp_run(repo, root)
    assert json.loads(r.stdout.strip().splitlines()[-1])["promoted"] is False
    decision = json.loads((runs[-1] / "gate-op" / "decision").read_text())
    assert decision["task"] == TEXT and not decision["promote"] and "package-op" not in {q.name for q in runs[-1].iterdir()}
    manifest = json.loads((runs[-1] / "data-op" / "dataset" / "manifest.json").read_text())
    assert manifest["task"] == TEXT and manifest["origin"]["sources"]
    tag = decision["challenger"]["tag"]
    registry = Registry("nerflow-cls", p["registry"]["bentoml_home"])
    assert registry.versions() == [tag] and registry.production() is None

    p["gate"]["min_f1"] = 0.0
    commit(repo, p, "gate: no floor")
    r, runs = kfp_run(repo, root)
    assert json.loads(r.stdout.strip().splitlines()[-1])["promoted"] is True
    assert {q.name for q in runs[-1].iterdir()} == {"source-op", "gate-op", "package-op"}  # the rest cached
    assert registry.production() == tag
    metrics = registry.info(tag)["metadata"]
    assert metrics["task"] == TEXT and set(metrics["metrics"]["per_class"]) == {"other", "person"}


# ----------------------------------------------------------------------------- NSMC


NSMC = SHARED_DATA / "nsmc"


@pytest.mark.skipif(not NSMC.is_dir(), reason="../shared/data/nsmc is not here (a developer machine's reference data)")
def test_nsmc_sample_reads_and_validation_reports_its_quirks(tmp_path, tiny_model):
    from nerflow.steps.data import prepare_data
    from nerflow.steps.validate import validate_dataset

    data = {"task": TEXT, "train": str(NSMC / "ratings_train.txt"), "validation": None, "validation_share": 0.1,
            "test": str(NSMC / "ratings_test.txt"), "label_names": ["negative", "positive"]}
    manifest = prepare_data(data, tmp_path / "ds")
    splits = manifest["splits"]
    assert splits["train"]["texts"] + splits["validation"]["texts"] == 10_000
    assert splits["test"]["label_counts"] == {"negative": 2044, "positive": 3781}
    summary = validate_dataset({"tokenizer": str(tiny_model), "max_length": 64}, tmp_path / "ds", tmp_path / "report")
    checks = {c["name"]: c for c in summary["checks"]}
    # 1,204 dev/test reviews also occur in train; 10 repeated within a split; class shares 50/50 in train,
    # 35/65 in test (total variation 0.151 > 0.1)
    assert checks["leakage"]["failing_rows"] == 1204 and not checks["leakage"]["success"]
    assert checks["leakage.error_fraction"]["success"]  # a warning: under half, the run goes on
    assert checks["duplicates"]["failing_rows"] == 10
    assert [round(d["distance"], 3) for d in summary["drift"]] == [0.019, 0.151] and not checks["class_drift"]["success"]
    assert checks["label_set"]["success"] and checks["rare_labels"]["success"] and summary["success"]
    assert checks["subtoken_overflow"]["failing_rows"] == summary["over_max_length"]["texts"] > 0
    print(f"NSMC sample: leakage {checks['leakage']['failing_rows']}, duplicates {checks['duplicates']['failing_rows']}, "
          f"over max_length {checks['subtoken_overflow']['failing_rows']}")


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
