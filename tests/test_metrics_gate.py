"""seqeval scores and the gate decision, with hand-checked numbers."""

import pytest

from nerflow.gate import decide
from nerflow.metrics import score

GOLD = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O", "B-LOC", "I-LOC"]]
PRED = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "O", "B-LOC", "O"]]


def test_entity_level_scores_by_hand():
    s = score(GOLD, PRED)
    # gold: PER, LOC, ORG, LOC(2 words) = 4; pred: PER, ORG, ORG, LOC(1 word) = 4; correct: PER, ORG = 2
    assert s["precision"] == pytest.approx(0.5) and s["recall"] == pytest.approx(0.5) and s["f1"] == pytest.approx(0.5)
    assert s["support"] == 4
    assert s["per_type"]["PER"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1}
    assert s["per_type"]["LOC"]["f1"] == 0.0 and s["per_type"]["LOC"]["support"] == 2
    assert s["per_type"]["ORG"]["precision"] == pytest.approx(0.5)
    assert s["accuracy"] == pytest.approx(6 / 8)
    assert s["macro_f1"] == pytest.approx((1.0 + 0.0 + 2 / 3) / 3)


def test_strict_and_default_differ_on_entities_starting_with_i():
    gold = [["I-PER", "I-PER", "O"]]
    assert score(gold, gold)["f1"] == 1.0
    # conlleval (default) counts "I-PER I-PER" as one PER entity; strict IOB2 rejects it
    assert score(gold, gold, "strict")["support"] == 0


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError):
        score([["O"]], [["O", "O"]])


@pytest.mark.parametrize("f1, threshold, promote", [(0.81, 0.80, True), (0.80, 0.80, True), (0.7999, 0.80, False)])
def test_gate_threshold(f1, threshold, promote):
    d = decide({"min_f1": threshold}, {"f1": f1, "precision": 0.8, "recall": 0.8})
    assert d["promote"] is promote
    assert d["checks"][0]["value"] == f1 and d["checks"][0]["threshold"] == threshold
    assert ("<" in d["reasons"][0]) is (not promote)
