"""Alignment and evaluation fidelity: conlleval equality, alignment modes, long inputs,
tokenizer families, character-level corpora, error analysis."""

import json
import random
from pathlib import Path

import pytest
from conftest import SHARED_DATA, build_tiny_bert

from nerflow.tasks.token.align import (
    align_labels,
    encode_texts,
    encode_words,
    fill_characters,
    merge_windows,
)
from nerflow.tasks.token.analysis import error_kinds
from nerflow.tasks.token.metrics import character_f1, score, word_level

LABELS = ["O", "B-LOC", "I-LOC", "B-MISC", "I-MISC", "B-ORG", "I-ORG", "B-PER", "I-PER"]


def conlleval_numbers(gold, pred):
    from conlleval import evaluate

    lines = []
    for g_row, p_row in zip(gold, pred):
        lines += [f"w {g} {p}" for g, p in zip(g_row, p_row)] + [""]
    r = evaluate(lines)["overall"]["chunks"]["evals"]
    return r["prec"], r["rec"], r["f1"]


def noisy(gold, rate, seed):
    """A system output: gold tags with random substitutions (I- after O included)."""
    rng = random.Random(seed)
    return [[rng.choice(LABELS) if rng.random() < rate else t for t in row] for row in gold]


@pytest.mark.parametrize("rate", [0.05, 0.2, 0.5])
def test_default_scores_equal_conlleval_on_real_outputs(conll_dir, rate):
    from nerflow.tasks.token.readers import read_conll

    gold = [s.tags for s in read_conll(conll_dir / "test.txt")] + [s.tags for s in read_conll(conll_dir / "validation.txt")]
    pred = noisy(gold, rate, seed=int(rate * 100))
    ours = score(gold, pred)
    p, r, f1 = conlleval_numbers(gold, pred)
    assert (ours["precision"], ours["recall"], ours["f1"]) == pytest.approx((p, r, f1), abs=1e-12)


def test_all_subtoken_mode_scores_the_same_entities_as_first_subtoken_mode():
    word_ids = [None, 0, 0, 0, 1, 2, 2, 3, None]
    gold_words = [7, 8, 0, 1]  # B-PER I-PER O B-LOC
    pred_words = [7, 0, 0, 1]
    starts = [[0, 1, 0, 0, 1, 1, 0, 1, 0]]
    for all_sub in (False, True):
        gold_tokens = align_labels(word_ids, gold_words, LABELS, label_all_subtokens=all_sub)
        # identical predictions: every sub-token of a word carries the word's predicted label
        pred_tokens = align_labels(word_ids, pred_words, LABELS, label_all_subtokens=True)
        pred_tokens = [0 if t == -100 else t for t in pred_tokens]
        g, p = word_level([pred_tokens], [gold_tokens], starts, LABELS)
        assert g == [["B-PER", "I-PER", "O", "B-LOC"]] and p == [["B-PER", "O", "O", "B-LOC"]]
        assert score(g, p)["support"] == 2 and score(g, p)["f1"] == pytest.approx(0.5)  # LOC right, PER cut short
    # counting at sub-token level instead would have seen the B-PER word's 3 sub-tokens
    assert align_labels(word_ids, gold_words, LABELS, label_all_subtokens=True).count(8) == 3


def test_strict_and_default_differ_exactly_where_an_entity_starts_with_i():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-ORG", "O"]]
    pred_clean = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-ORG", "O"]]
    pred_i_start = [["I-PER", "I-PER", "O", "B-LOC"], ["O", "I-ORG", "O"]]
    assert score(gold, pred_clean)["f1"] == score(gold, pred_clean, "strict")["f1"] == 1.0
    assert score(gold, pred_i_start)["f1"] == 1.0  # conlleval: an I- after O starts an entity
    strict = score(gold, pred_i_start, "strict")
    assert strict["recall"] == pytest.approx(1 / 3) and strict["precision"] == 1.0  # the two I- starts are not entities


def test_long_sentence_is_fully_labelled_and_scored(library_run, tmp_path):
    from nerflow.tasks.token.predict import WordTagger

    tagger = WordTagger(library_run["model"])
    assert tagger.max_length == 64
    words = (["Peter", "Blackburn", "visited", "London", "."] * 600)
    tags, probs = tagger.predict([words, ["EU", "rejects"]])
    assert len(tags[0]) == 3000 and len(probs[0]) == 3000 and len(tags[1]) == 2
    gold = [["B-PER", "I-PER", "O", "B-LOC", "O"] * 600]
    s = score(gold, [tags[0]])
    assert s["support"] == 1200  # every gold entity of the 3,000 words is scored


def byte_bpe(tmp_path: Path, words):
    """A tiny byte-level BPE tokenizer (RoBERTa family): the 256 byte symbols, no merges."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import RobertaTokenizer

    alphabet = ByteLevel.alphabet()
    vocab = {t: i for i, t in enumerate(["<s>", "<pad>", "</s>", "<unk>", "<mask>"] + sorted(alphabet))}
    tok = RobertaTokenizer(vocab=vocab, merges=[], add_prefix_space=True)
    tok.save_pretrained(str(tmp_path))
    return tmp_path


def unigram_sp(tmp_path: Path, words):
    """A tiny SentencePiece-style Unigram tokenizer (XLM-R family)."""
    from transformers import XLMRobertaTokenizer

    pieces = sorted({c for w in words for c in w}) + sorted({w for w in words if len(w) > 3})[:50]
    vocab = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    vocab += [(p, -float(len(p) < 2) - 1.0) for p in pieces] + [("▁" + p, -1.5) for p in pieces]
    vocab.append(("<mask>", 0.0))
    tok = XLMRobertaTokenizer(vocab=vocab)
    tok.save_pretrained(str(tmp_path))
    return tmp_path


@pytest.mark.parametrize("family", ["wordpiece", "byte_bpe", "unigram"])
def test_tokenizer_families_label_every_word_once(family, tmp_path, conll_dir):
    from nerflow.core.inference import load_tokenizer
    from nerflow.tasks.token.readers import read_conll

    sents = read_conll(conll_dir / "test.txt")[:40]
    words = [w for s in sents for w in s.tokens]
    build = {"wordpiece": lambda p, w: build_tiny_bert(p, w), "byte_bpe": byte_bpe, "unigram": unigram_sp}[family]
    tok = load_tokenizer(str(build(tmp_path / family, words)))
    windows = encode_words(tok, [s.tokens for s in sents], max_length=24, stride=6)
    assert max(len(ids) for ids in windows.input_ids) <= 24
    labels = sorted({t for s in sents for t in s.tags})
    per_window = []
    for w, si in zip(windows.word_ids, windows.sentence):
        ids = [labels.index(t) for t in sents[si].tags]
        aligned = align_labels(w, ids, labels)
        per_window.append([labels[a] if a != -100 else None for a in aligned])
        # the first sub-token of every word present carries its label, nothing else does
        assert sum(a != -100 for a in aligned) == len({x for x in w if x is not None})
    merged = merge_windows(windows, per_window, [len(s.tokens) for s in sents])
    assert merged == [s.tags for s in sents]


def test_character_alignment_round_trips_tags(tmp_path):
    """KLUE-style: tags on characters -> sub-token labels -> characters again."""
    text = "경찰은 서울 삼성동 에서 박씨를"
    tags = ["B-OG", "I-OG", "O", "O", "B-LC", "I-LC", "I-LC", "I-LC", "I-LC", "I-LC", "O", "O", "O", "O", "B-PS", "O", "O"]
    assert len(text) == len(tags)
    tok_dir = build_tiny_bert(tmp_path / "tok", list(text.replace(" ", "")) + ["서울", "삼성", "경찰"])
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tok_dir))
    windows, cover = encode_texts(tok, [text], max_length=10, stride=3)
    assert len(windows.input_ids) > 1  # several windows
    labels = sorted(set(tags))
    per_window = [[labels[a] if a != -100 else None for a in align_labels(w, [labels.index(t) for t in tags], labels)]
                  for w in windows.word_ids]
    heads = merge_windows(windows, per_window, [len(text)])[0]
    assert fill_characters(text, heads, cover[0]) == tags


def test_character_f1_is_macro_over_labels_without_o():
    gold = [["B-PS", "I-PS", "O", "B-LC"]]
    pred = [["B-PS", "O", "O", "B-LC"]]
    # B-PS 1.0, I-PS 0.0, B-LC 1.0 -> macro 2/3
    assert character_f1(gold, pred) == pytest.approx(2 / 3)


def test_error_kinds_by_hand():
    gold = [["B-PER", "I-PER", "O", "B-LOC", "O", "B-ORG", "O", "O"]]
    pred = [["B-PER", "O", "O", "B-ORG", "O", "O", "O", "B-MISC"]]
    k = error_kinds(gold, pred)["counts"]
    assert k == {"correct": 0, "missed": 1, "spurious": 1, "wrong_type": 1, "wrong_boundary": 1, "wrong_type_and_boundary": 0}


def test_evaluate_writes_error_analysis_and_scores_several_test_sets(library_run, tmp_path, conll_dir):
    from nerflow.steps.evaluate import evaluate

    params = dict(library_run["params"]["evaluate"], top_loss_sentences=5,
                  test_sets=[{"name": "dev-as-extra", "path": str(conll_dir / "validation.txt")}])
    m = evaluate(params, library_run["model"], library_run["dataset"], tmp_path / "m.json", tmp_path / "p.jsonl", tmp_path / "rep")
    assert set(m["test_sets"]) == {"test", "dev-as-extra"} and m["test_sets"]["dev-as-extra"]["sentences"] == 60
    assert set(m["schemes"]) == {"default", "strict"} and m["f1"] == m["schemes"]["default"]["f1"]
    errors = json.loads((tmp_path / "rep" / "errors.json").read_text())
    total_gold = sum(v for k, v in m["error_kinds"].items() if k != "spurious")
    assert total_gold == m["support"]
    assert len(errors["highest_loss_sentences"]) == 5
    losses = [r["loss"] for r in errors["highest_loss_sentences"]]
    assert losses == sorted(losses, reverse=True)
    matrix = errors["confusion"]
    assert sum(map(sum, matrix)) == m["words"]
    assert (tmp_path / "rep" / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = (tmp_path / "rep" / "errors.html").read_text()
    assert html.count("<mark") > 0 and "Error kinds" in html
    assert (tmp_path / "rep" / "test_sets.md").read_text().count("\n") == 4


@pytest.mark.skipif(not SHARED_DATA.exists(), reason="../shared/data is not on this machine")
def test_klue_ner_slice_trains_and_reports_entity_and_character_f1(tmp_path):
    from nerflow.steps.data import prepare_data
    from nerflow.steps.evaluate import evaluate
    from nerflow.steps.preprocess import preprocess
    from nerflow.steps.train import train
    from nerflow.tasks.token.readers import read_klue

    path = SHARED_DATA / "klue-ner" / "klue-ner-v1.1_dev.tsv"
    manifest = prepare_data({"path": str(path), "split_ratios": {"train": 0.8, "validation": 0.1, "test": 0.1},
                             "max_sentences": 150}, tmp_path / "ds")
    assert manifest["level"] == "char"
    chars = [c for s in read_klue(path)[:300] for c in s.tokens if c != " "]
    tok = build_tiny_bert(tmp_path / "tiny", chars)
    info = preprocess({"model": str(tok), "max_length": 48, "stride": 12}, tmp_path / "ds", tmp_path / "features")
    assert info["level"] == "char" and info["splits"]["train"]["sentences_split_into_windows"] > 0
    train({"model": str(tok), "epochs": 1, "max_steps": 6, "batch_size": 16, "learning_rate": 5e-3,
           "head_learning_rate": 5e-3, "progress": False, "threads": 1}, tmp_path / "features", tmp_path / "model")
    m = evaluate({}, tmp_path / "model", tmp_path / "ds", tmp_path / "m.json", tmp_path / "p.jsonl", tmp_path / "rep")
    assert m["level"] == "char" and set(m["klue"]) == {"entity_macro_f1", "character_macro_f1"}
    assert 0.0 <= m["klue"]["character_macro_f1"] <= 1.0
    preds = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert all(len(p["pred"]) == len(p["tokens"]) for p in preds)  # every character labelled
    assert m["klue"]["entity_macro_f1"] == pytest.approx(m["schemes"]["strict"]["macro_f1"])


def test_raw_text_words_keep_their_combining_marks_and_emoji_whole():
    """The service and `nerflow predict` split raw text into words: an accent typed as a combining
    mark (macOS input: Zoe + U+0308), a Devanagari conjunct, a Persian ZWNJ word stay one word; an
    emoji with its skin tone, a flag and a ZWJ sequence are one token each; the spans are Python
    code-point offsets that slice the text."""
    from nerflow.tasks.token.predict import split_words

    text = ("😀 Zoe\u0308 Bjo\u0308rk met 👍🏽 Ca\u0301diz 🇫🇷🇩🇪 क्\u200dष می\u200cخواهم 👩\u200d💻 O'Neil U.S. "
            "1996-08-22 東京, Paris.")
    spans = split_words(text)
    assert all(text[a:b] == w for w, a, b in spans)
    assert [w for w, _, _ in spans] == [
        "😀", "Zoe\u0308", "Bjo\u0308rk", "met", "👍🏽", "Ca\u0301diz", "🇫🇷", "🇩🇪", "क्\u200dष", "می\u200cخواهم",
        "👩\u200d💻", "O'Neil", "U.S", ".", "1996-08-22", "東京", ",", "Paris", "."]
