"""The champion/challenger gate (numbers and properties) and the registry in the BentoML store:
promotion, rollback, history, and crashes during promotion."""

import json
import os
import random

import pytest
from conftest import run_cli, write_params
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nerflow import NerflowError
from nerflow.core.stats import paired_bootstrap
from nerflow.steps.gate import decide
from nerflow.tasks.token.metrics import score, sentence_counts

LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG"]


def noisy(rows, rate, seed):
    rng = random.Random(seed)
    return [[rng.choice(LABELS) if rng.random() < rate else t for t in row] for row in rows]


@pytest.fixture(scope="module")
def real_tags(conll_dir):
    from nerflow.tasks.token.readers import read_conll

    gold = [s.tags for s in read_conll(conll_dir / "test.txt")] + [s.tags for s in read_conll(conll_dir / "train.txt")]
    return gold


@pytest.mark.parametrize("scheme", ["default", "strict"])
def test_per_sentence_counts_add_up_to_seqeval(real_tags, scheme):
    pred = noisy(real_tags, 0.15, 1)
    tp, n_pred, n_gold = sentence_counts(real_tags, pred, scheme).sum(0)
    s = score(real_tags, pred, scheme)
    assert n_gold == s["support"] and n_gold > 400
    assert 2 * tp / (n_pred + n_gold) == pytest.approx(s["f1"], abs=1e-12)


@pytest.mark.parametrize("f1_gap, threshold, promote", [(0, 0.80, True), (0, 1.0, True), (1, 1.0, False)])
def test_no_champion_thresholds_only(real_tags, f1_gap, threshold, promote):
    pred = real_tags if not f1_gap else noisy(real_tags, 0.05, 2)
    d = decide({"min_f1": threshold}, real_tags, pred)
    assert d["promote"] is promote and d["champion"] is None and "bootstrap" not in d
    assert d["checks"][0]["value"] == score(real_tags, pred)["f1"] and d["checks"][0]["threshold"] == threshold
    if promote:
        assert "no production model yet: thresholds only" in d["reasons"]
        assert "set gate.min_f1" not in d["checks"][0]["reason"]
    else:  # a refusal by the bar names the knob that sets it for the user's corpus
        assert d["reasons"][0].startswith(f"test F1 {d['checks'][0]['value']:.4f} < gate.min_f1 1.0000")
        assert "(the bar for this corpus: set gate.min_f1 in the params file; docs/evaluation.md)" in d["reasons"][0]


def test_clearly_better_challenger_is_promoted_with_every_number_recorded(real_tags):
    champion, challenger = noisy(real_tags, 0.10, 3), noisy(real_tags, 0.02, 4)
    d = decide({"min_f1": 0.5, "max_type_regression": 0.02, "bootstrap": {"samples": 500, "seed": 7}},
               real_tags, challenger, champion, "m:new", "m:old")
    assert d["promote"] is True, d["reasons"]
    assert d["challenger"]["f1"] > d["champion"]["f1"] + 0.05
    assert d["bootstrap"]["share_ahead"] == 1.0 and d["bootstrap"]["delta_interval"][0] > 0
    names = {c["check"] for c in d["checks"]}
    assert {"min_f1", "beats_champion", "bootstrap"} <= names
    assert {f"type_regression:{t}" for t in ("PER", "LOC", "ORG", "MISC")} <= names
    assert json.loads(json.dumps(d)) == d  # the decision is plain JSON


def test_gain_on_one_sentence_is_noise_and_refused(real_tags):
    champion = noisy(real_tags, 0.05, 5)
    challenger = [list(r) for r in champion]
    i = next(k for k, (g, c) in enumerate(zip(real_tags, champion)) if g != c)
    challenger[i] = list(real_tags[i])  # better on exactly one sentence
    d = decide({"min_f1": 0.0, "bootstrap": {"samples": 1000, "seed": 1}}, real_tags, challenger, champion)
    assert d["challenger"]["f1"] > d["champion"]["f1"]
    # the sentence is left out of ~37% of resamples, where the two tie: not 95% ahead
    assert 0.5 < d["bootstrap"]["share_ahead"] < 0.8
    assert d["promote"] is False and any("paired resamples (<" in r for r in d["reasons"])


def test_type_regression_and_type_floor_refuse_a_better_model(real_tags):
    champion = noisy(real_tags, 0.08, 6)
    challenger = [["O" if t.endswith("LOC") else t for t in g] for g in real_tags]  # perfect except LOC, missed
    base = {"min_f1": 0.0, "bootstrap": {"samples": 200, "seed": 1}}
    d = decide({**base, "max_type_regression": 0.05}, real_tags, challenger, champion)
    assert d["challenger"]["f1"] > d["champion"]["f1"]
    assert d["promote"] is False and d["reasons"][0].startswith("LOC F1 0.0000 vs champion")
    d = decide({**base, "type_min_f1": {"LOC": 0.5}}, real_tags, challenger)
    assert d["promote"] is False and d["reasons"] == ["LOC F1 0.0000 < floor 0.5000"]


def test_negative_min_delta_is_refused_as_a_param(real_tags):
    with pytest.raises(NerflowError, match="min_delta"):
        decide({"min_delta": -0.1}, real_tags, real_tags, real_tags)


sequences = st.lists(st.lists(st.sampled_from(LABELS), min_size=1, max_size=8), min_size=1, max_size=25)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), gold=sequences)
def test_property_a_worse_or_equal_challenger_is_never_promoted(data, gold):
    pred = lambda: [data.draw(st.lists(st.sampled_from(LABELS), min_size=len(g), max_size=len(g))) for g in gold]  # noqa: E731
    challenger, champion = pred(), pred()
    params = {
        "min_f1": data.draw(st.floats(0, 1)),
        "default_type_min_f1": data.draw(st.floats(0, 1)),
        "max_type_regression": data.draw(st.floats(0, 1)),
        "min_delta": data.draw(st.floats(0, 0.5)),
        "scheme": data.draw(st.sampled_from(["default", "strict"])),
        "bootstrap": {"samples": 100, "seed": data.draw(st.integers(0, 2**31)), "confidence": data.draw(st.floats(0.5, 0.99))},
    }
    d = decide(params, gold, challenger, champion)
    c_f1, k_f1 = score(gold, challenger, params["scheme"])["f1"], score(gold, champion, params["scheme"])["f1"]
    if c_f1 <= k_f1:
        assert d["promote"] is False
    if d["promote"]:  # promotion implies every threshold is met
        assert c_f1 >= params["min_f1"] and c_f1 - k_f1 > params["min_delta"]
        assert d["bootstrap"]["share_ahead"] >= params["bootstrap"]["confidence"]
    assert d["promote"] == all(c["passed"] for c in d["checks"])


def test_bootstrap_is_seeded():
    import numpy as np

    a = np.array([[1, 2, 2], [0, 1, 1], [3, 3, 4], [1, 1, 2]])
    b = np.array([[1, 2, 2], [1, 1, 1], [2, 3, 4], [0, 1, 2]])
    assert paired_bootstrap(a, b, 300, 5, 0.0, 0.9) == paired_bootstrap(a, b, 300, 5, 0.0, 0.9)
    assert paired_bootstrap(a, b, 300, 5, 0.0, 0.9) != paired_bootstrap(a, b, 300, 6, 0.0, 0.9)


# ---- the registry, with real models in a real BentoML store ------------------------------------

def run_round(name, model, metrics, predictions, pfile, tmp_path):
    """register -> gate -> package through the CLI, as dvc repro runs them; returns the decision."""
    out = tmp_path / name
    out.mkdir()
    run_cli(["register", "--model", str(model), "--metrics", str(metrics), "--out", str(out / "registered.json")], pfile, check=True)
    g = run_cli(["gate", "--predictions", str(predictions), "--registered", str(out / "registered.json"),
                 "--out", str(out / "gate.json")], pfile, check=True)
    run_cli(["package", "--decision", str(out / "gate.json"), "--out", str(out / "package.json")], pfile, check=True)
    decision = json.loads((out / "gate.json").read_text())
    decision["stdout"] = g.stdout
    return decision


def test_champion_challenger_rounds_history_and_rollback(library_run, strong_model, tmp_path):
    from nerflow.release.registry import Registry

    p = json.loads(json.dumps(library_run["params"]))
    p["registry"]["bentoml_home"] = str(tmp_path / "store")
    p["gate"].update(min_f1=0.0, max_type_regression=1.0)
    pfile = write_params(p, tmp_path / "params.yaml")
    weak = {"model": library_run["model"], "metrics": library_run["metrics"], "predictions": library_run["predictions"]}
    registry = Registry("nerflow-ner", tmp_path / "store")

    first = run_round("first", **weak, pfile=pfile, tmp_path=tmp_path)  # no champion: thresholds only
    assert first["promote"] is True and first["champion"] is None
    weak_tag = first["challenger"]["tag"]
    assert registry.production() == weak_tag

    better = run_round("better", **strong_model, pfile=pfile, tmp_path=tmp_path)
    assert better["champion"]["tag"] == weak_tag
    # the champion was re-scored on the same test set: its F1 is the weak model's own
    assert better["champion"]["f1"] == pytest.approx(json.loads(library_run["metrics"].read_text())["f1"], abs=1e-9)
    assert better["challenger"]["f1"] > better["champion"]["f1"] + 0.05
    assert better["promote"] is True, better["reasons"]
    strong_tag = better["challenger"]["tag"]
    assert registry.production() == strong_tag

    worse = run_round("worse", **weak, pfile=pfile, tmp_path=tmp_path)
    assert worse["promote"] is False and "REFUSE" in worse["stdout"]
    assert worse["challenger"]["f1"] < worse["champion"]["f1"]
    same = run_round("same", **strong_model, pfile=pfile, tmp_path=tmp_path)  # a re-run: gain 0
    assert same["promote"] is False and same["challenger"]["f1"] == same["champion"]["f1"]
    assert registry.production() == strong_tag

    history = registry.history()
    assert [r["stage"] for r in history] == ["archived", "production", "candidate", "candidate"]
    assert history[1]["f1"] == pytest.approx(better["challenger"]["f1"])
    text = run_cli(["registry", "history"], pfile, check=True).stdout
    assert strong_tag in text and "production" in text and f"{better['challenger']['f1']:.4f}" in text
    labels = {t: registry.info(t)["labels"]["stage"] for t in registry.versions()}  # bentoml's own view
    assert labels[strong_tag] == "production" and labels[weak_tag] == "archived"

    deploy = tmp_path / "store" / "deploy" / "nerflow-ner"
    production = deploy / "production.yaml"
    assert f"image: {strong_tag}" in production.read_text()  # the promotion wrote the new champion's manifests
    assert production.read_text() == (deploy / f"{strong_tag.split(':')[1]}.yaml").read_text()
    r = run_cli(["registry", "rollback"], pfile, check=True)
    assert f"{strong_tag} -> {weak_tag}" in r.stdout and f"kubectl apply -f {production}" in r.stdout
    assert production.read_text() == (deploy / f"{weak_tag.split(':')[1]}.yaml").read_text()  # the previous file
    assert registry.production() == weak_tag and registry.stage(strong_tag) == "rolled-back"
    assert registry.info(weak_tag)["labels"]["stage"] == "production"
    r = run_cli(["registry", "rollback"], pfile)  # nothing earlier
    assert r.returncode == 2 and "no earlier production model" in r.stderr

    run_cli(["registry", "promote", strong_tag, "--reason", "fixed upstream"], pfile, check=True)
    assert registry.production() == strong_tag
    assert registry.state()["events"][-1] == {**registry.state()["events"][-1], "event": "promote", "reason": "fixed upstream"}
    r = run_cli(["registry", "promote", "nerflow-ner:nosuch"], pfile)
    assert r.returncode == 2 and "no such model" in r.stderr


def registry_with_champion(library_run, tmp_path):
    from nerflow.release.registry import Registry

    registry = Registry("nerflow-ner", tmp_path / "store")
    meta = {"metrics": {"f1": 0.5}, "data_hash": "x"}
    old = registry.register(library_run["model"], meta, {})
    new = registry.register(library_run["model"], meta, {})
    registry.promote(old, "first")
    return registry, old, new


def test_a_crash_at_the_commit_point_leaves_the_old_champion(library_run, tmp_path, monkeypatch):
    registry, old, new = registry_with_champion(library_run, tmp_path)
    before = registry.state_path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("simulated power loss at the rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="power loss"):
        registry.promote(new, "challenger")
    monkeypatch.undo()
    assert registry.state_path.read_bytes() == before  # not a byte changed, no temp file left
    assert [p.name for p in registry.state_path.parent.iterdir() if not p.name.startswith(".nerflow-ner.lock")] == ["nerflow-ner.json"]
    assert registry.production() == old and registry.stage(new) == "candidate"


def test_a_crash_after_the_commit_is_repaired_on_the_next_call(library_run, tmp_path, monkeypatch):
    from nerflow.release.registry import Registry

    registry, old, new = registry_with_champion(library_run, tmp_path)
    monkeypatch.setattr(Registry, "sync_labels", lambda self: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        registry.promote(new, "challenger")
    monkeypatch.undo()
    assert registry.production() == new  # committed
    assert registry.info(new)["labels"]["stage"] == "candidate"  # labels not yet mirrored
    registry.sync_labels()
    assert registry.info(new)["labels"]["stage"] == "production" and registry.info(old)["labels"]["stage"] == "archived"


def test_a_failed_bento_build_leaves_the_old_champion(library_run, tmp_path, monkeypatch):
    import nerflow.steps.package as package

    registry, old, new = registry_with_champion(library_run, tmp_path)
    monkeypatch.setattr(package, "build_bento", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("build failed")))
    with pytest.raises(RuntimeError):
        package.promote(registry, new, {"build_bento": True}, None, reason="gate")
    assert registry.production() == old


def test_the_gate_rescores_a_champion_in_the_windows_evaluate_read_it(strong_model):
    """A champion trained with document context is re-scored with its sentences' documents, as
    the evaluate step read them (a bug: the gate read them a sentence at a time, so a model scored
    differently as champion than as challenger and a re-run of the same model could pass)."""
    from nerflow.tasks.registry import task_of

    task = task_of(strong_model["model"])
    inputs, gold, pred, _ = task.read_predictions(strong_model["predictions"])
    assert inputs.documents is not None and len(set(inputs.documents)) > 1  # the slice keeps -DOCSTART-
    assert len(inputs.documents) == len(inputs.tokens) == len(pred)
    assert task.predict_labels(strong_model["model"], inputs) == pred
