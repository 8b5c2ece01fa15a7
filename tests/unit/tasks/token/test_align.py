"""Sub-word label alignment and window merging."""

from nerflow.tasks.token.align import IGNORE, align_labels, encode_words, merge_windows

LABELS = ["O", "B-PER", "I-PER"]


def test_first_subtoken_mode_labels_only_word_starts():
    word_ids = [None, 0, 1, 1, 1, 2, None]
    assert align_labels(word_ids, [1, 2, 0], LABELS) == [IGNORE, 1, 2, IGNORE, IGNORE, 0, IGNORE]


def test_all_subtoken_mode_turns_b_into_i_on_continuations():
    word_ids = [None, 0, 0, 1, 1, None]
    assert align_labels(word_ids, [1, 2], LABELS, label_all_subtokens=True) == [IGNORE, 1, 2, 2, 2, IGNORE]


def test_long_sentence_every_word_labelled_once(tiny_model):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_model))
    words = [f"w{i % 7}ord" for i in range(3000)]
    windows = encode_words(tok, [words, ["short"]], max_length=64, stride=16)
    assert max(len(ids) for ids in windows.input_ids) <= 64
    assert windows.sentence.count(0) > 1 and windows.sentence.count(1) == 1
    # per window, the word id at each position: merging must hand back every word's own id
    per_window = [[w for w in ids] for ids in windows.word_ids]
    merged = merge_windows(windows, per_window, [len(words), 1])
    assert merged[0] == list(range(3000)) and merged[1] == [0]


def test_merge_prefers_the_window_with_most_context():
    from nerflow.tasks.token.align import Windows

    # word 2 is at the right edge of window 0 (context 0) and in the middle of window 1
    w = Windows(input_ids=[[0] * 5, [0] * 5], attention_mask=[], token_type_ids=None,
                word_ids=[[None, 0, 1, 2, None], [None, 1, 2, 3, None]], sentence=[0, 0])
    merged = merge_windows(w, [["a0", "a0", "a1", "a2", "a-"], ["b0", "b1", "b2", "b3", "b-"]], [4])
    assert merged == [["a0", "a1", "b2", "b3"]]
