"""seqeval scores, with hand-checked numbers (the gate: test_gate_registry.py)."""

import pytest

from nerflow.tasks.token.metrics import score

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
