"""The inference runtime (ONNX Runtime export, int8) and constrained IOB2 decoding."""

import json
import shutil

import numpy as np
import pytest

from nerflow.tasks.token.predict import constrained_path, iob2_transitions

LABELS = ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]


def test_constrained_decoding_by_hand():
    allowed, first = iob2_transitions(LABELS)
    assert not first[2] and not first[4] and first[1]
    assert allowed[1, 2] and allowed[2, 2] and not allowed[0, 2] and not allowed[3, 2] and allowed[4, 0]
    # argmax would read O I-PER I-PER: an entity without its start. The best valid sequence
    # starts it: B-PER (0.35 beats O's 0.6 once the I-PERs that follow count)
    d = [[0.6, 0.0, 0.0, 0.35, 0.05], [0.2, 0.0, 0.0, 0.0, 0.8], [0.1, 0.0, 0.0, 0.0, 0.9]]
    assert [LABELS[i] for i in constrained_path(d, allowed, first, 0)] == ["B-PER", "I-PER", "I-PER"]
    # B-LOC I-PER: the type switch is impossible; I-PER strong, B-LOC weak -> B-PER I-PER
    d = [[0.1, 0.5, 0.0, 0.4, 0.0], [0.05, 0.0, 0.15, 0.0, 0.8]]
    assert [LABELS[i] for i in constrained_path(d, allowed, first, 0)] == ["B-PER", "I-PER"]
    # valid argmax sequences are left alone; a word with no distribution is O
    d = [[0.1, 0.8, 0.1, 0.0, 0.0], [0.2, 0.0, 0.7, 0.1, 0.0], None, [0.9, 0.0, 0.0, 0.1, 0.0]]
    assert [LABELS[i] for i in constrained_path(d, allowed, first, 0)] == ["B-LOC", "I-LOC", "O", "O"]
    assert constrained_path([], allowed, first, 0) == []
    # IO labels (an I-X with no B-X) are not constrained
    assert iob2_transitions(["O", "I-LOC", "I-PER"]) is None


def test_viterbi_never_outputs_an_invalid_sequence_and_agrees_with_brute_force():
    import itertools

    allowed, first = iob2_transitions(LABELS)
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(1, 5))
        d = rng.dirichlet(np.ones(len(LABELS)) * 0.3, size=n)
        best = max((p for p in itertools.product(range(len(LABELS)), repeat=n)
                    if first[p[0]] and all(allowed[a, b] for a, b in zip(p, p[1:]))),
                   key=lambda p: sum(np.log(max(d[t][k], 1e-12)) for t, k in enumerate(p)))
        assert constrained_path(list(d), allowed, first, 0) == list(best)


def test_auto_runtime_keeps_int8_only_within_its_dev_budget(library_run, strong_model, tmp_path):
    """runtime auto: the exports scored on the dev windows exactly as the Trainer scores its dev
    F1, int8 kept only within int8_max_drop of fp32 (every MatMul int8 first, then the feed-forward
    outputs fp32), the other file removed."""
    pytest.importorskip("onnxruntime")
    from datasets import load_from_disk
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    from nerflow.core.runtime import OnnxModel, export
    from nerflow.steps.train import _dev_scorer
    from nerflow.tasks.registry import task_of

    model = strong_model["model"]
    info = json.loads((model / "nerflow.json").read_text())
    # the scorer is the Trainer's dev F1: the torch model scores what training recorded for it
    features_dir = library_run["features"]
    tokenizer = AutoTokenizer.from_pretrained(str(features_dir / "tokenizer"))
    features = load_from_disk(str(features_dir))
    preprocessed = json.loads((features_dir / "preprocess.json").read_text())
    score = _dev_scorer(task_of(preprocessed), preprocessed, features, tokenizer, 32)
    hf = AutoModelForTokenClassification.from_pretrained(str(model)).eval()
    assert info["train"]["best_dev_f1"] > 0.05  # a model that finds entities (about 0.08 on the dev slice)
    assert score(hf) == pytest.approx(info["train"]["best_dev_f1"], abs=1e-9)
    kept = {"onnx": "model.onnx", "onnx-int8": "model.int8.onnx"}
    out = tmp_path / "auto"
    out.mkdir()
    record = export(hf, tokenizer, out, "auto", score, 0.003)
    check = record["runtime_check"]
    fp32, int8 = check["dev_f1"]["onnx"], check["dev_f1"]["onnx-int8"]
    fallback = check["dev_f1"].get("onnx-int8 (feed-forward outputs fp32)")
    assert fp32 == pytest.approx(round(score(hf), 5), abs=1e-5)  # fp32 ONNX scores as torch does
    # every MatMul int8 first; the feed-forward outputs fp32 tried only when that loses too much
    assert (fallback is None) == (int8 >= fp32 - 0.003)
    assert record["runtime"] == check["chosen"] == ("onnx-int8" if max(int8, fallback or 0) >= fp32 - 0.003 else "onnx")
    assert sorted(p.name for p in out.glob("*.onnx")) == [kept[record["runtime"]]]
    # the rule both ways: a budget no int8 can meet keeps fp32 (both int8 exports tried), a generous
    # one keeps the first int8 export
    for budget, chosen, tried in ((-1.0, "onnx", 3), (1.0, "onnx-int8", 2)):
        out = tmp_path / chosen
        out.mkdir()
        record = export(hf, tokenizer, out, "auto", score, budget)
        assert record["runtime"] == chosen == record["runtime_check"]["chosen"]
        assert len(record["runtime_check"]["dev_f1"]) == tried
        assert record.get("int8_export") == ("all int8" if chosen == "onnx-int8" else None)
        assert sorted(p.name for p in out.glob("*.onnx")) == [kept[chosen]]
        logits = OnnxModel(out, record, config=hf.config)(**tokenizer(["a b"], return_tensors="pt")).logits
        assert logits.shape[0] == 1 and logits.shape[2] == len(info["labels"])
    # the first int8 export over budget, the second within: the second is kept (a scorer that
    # marks the first down by a point: its feed-forward outputs read with a zero point, ReduceMin)
    import onnx

    def all_int8(model) -> bool:
        return "ReduceMin" in {n.op_type for n in onnx.load(str(model.path)).graph.node}

    out = tmp_path / "fallback"
    out.mkdir()
    record = export(hf, tokenizer, out, "auto", lambda m: score(m) - (1.0 if all_int8(m) else 0.0), 0.5)
    assert record["runtime"] == "onnx-int8" and record["int8_export"] == "feed-forward outputs fp32"
    assert list(record["runtime_check"]["dev_f1"]) == ["onnx", "onnx-int8", "onnx-int8 (feed-forward outputs fp32)"]
    assert record["runtime_check"]["dev_f1"]["onnx-int8"] < fp32 - 0.5
    graph = onnx.load(str(out / "model.int8.onnx")).graph
    assert "ReduceMin" not in {n.op_type for n in graph.node}
    assert sum(n.op_type == "MatMul" and n.input[1] in {t.name for t in graph.initializer} for n in graph.node) == 2
    # the saved model's dev F1 already known from training: only int8 is scored, the choice the same
    calls = []
    out = tmp_path / "known"
    out.mkdir()
    record = export(hf, tokenizer, out, "auto", lambda m: calls.append(m) or score(m), 0.003,
                    info["train"]["best_dev_f1"])
    assert len(calls) == (1 if fallback is None else 2) and {c.path.name for c in calls} == {"model.int8.onnx"}
    assert record["runtime_check"]["dev_f1"] == {"onnx": round(info["train"]["best_dev_f1"], 5), "onnx-int8": int8,
                                                 **({} if fallback is None else {"onnx-int8 (feed-forward outputs fp32)": fallback})}
    assert record["runtime"] == check["chosen"]
    # without a dev split to check int8 against, auto exports fp32
    out = tmp_path / "no-dev"
    out.mkdir()
    assert export(hf, tokenizer, out, "auto", None)["runtime"] == "onnx"


def test_onnx_runtime_tags_exactly_as_torch_and_int8_runs(library_run, tmp_path):
    """An fp32 ONNX export tags the test slice exactly as torch does; an int8 export runs and
    records itself; a missing runtime file is one clear error."""
    pytest.importorskip("onnxruntime")
    import torch
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    from nerflow.core.dataset import load_dataset_dir
    from nerflow.core.runtime import OnnxModel, export
    from nerflow.tasks.token.predict import WordTagger

    model = library_run["model"]
    info = json.loads((model / "nerflow.json").read_text())
    assert info["decoding"] == "viterbi"
    hf = AutoModelForTokenClassification.from_pretrained(str(model)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(model))
    out = tmp_path / "fp32"
    shutil.copytree(model, out, ignore=shutil.ignore_patterns("*.onnx"))
    record = export(hf, tokenizer, out, "onnx")
    assert record["runtime"] == "onnx" and (out / "model.onnx").is_file() and not (out / "model.int8.onnx").exists()
    (out / "nerflow.json").write_text(json.dumps({**info, **record}))
    tokens = load_dataset_dir(library_run["dataset"])["test"]["tokens"]
    served = WordTagger(out)
    assert isinstance(served.model, OnnxModel)
    # fp32 both: "auto" runs torch under bf16 autocast on a CPU with AVX512-BF16 (probabilities 1e-3 apart
    # there), while the export computes fp32
    torch_tagger = WordTagger(out, runtime="torch", precision="fp32")
    assert not isinstance(torch_tagger.model, OnnxModel)
    # the blocks layout: the tagger's windows go into rows of up to PACK_TOKENS_MANY tokens, every token
    # ONNX Runtime computes is a real one (padded batches of sorted windows computed 10-20% padding here),
    # and attention runs within each window's block: far fewer scores than over whole rows
    from nerflow.core.runtime import PACK_TOKENS_MANY

    assert record["runtime_layout"] == "blocks" and record["position_offset"] == 0 and served.model.packed
    assert record["runtime_inputs"][:2] == ["input_ids", "position_ids"]
    assert record["runtime_inputs"][-6:] == ["block_index", "block_bias", "token_slot", "read_index", "read_block", "read_slot"]
    runs, reads, session_run = [], [], served.model.session.run
    served.model.session.run = lambda names, feed: runs.append(
        (*feed["input_ids"].shape, *feed["block_index"].shape)) or reads.append(len(feed["read_index"])) or session_run(names, feed)
    a, b = served.predict(tokens, distributions=True), torch_tagger.predict(tokens, distributions=True)
    served.model.session.run = session_run
    from nerflow.tasks.token.align import encode_words

    encoded = encode_words(served.tokenizer, tokens, served.max_length, served.stride)
    windows = encoded.input_ids
    assert all(rows == 1 for rows, *_ in runs) and sum(width for _, width, *_ in runs) == sum(len(w) for w in windows)
    # the last layer computes each word's first sub-token only (the one its tags and probabilities come from)
    heads = sum(len({w for w in ids if w is not None}) for ids in encoded.word_ids)
    assert sum(reads) == heads < 0.9 * sum(len(w) for w in windows), (sum(reads), heads)
    assert sum(texts for *_, texts, _ in runs) == len(windows)
    assert len(runs) < 0.8 * len(windows) and max(width for _, width, *_ in runs) <= max(PACK_TOKENS_MANY, max(map(len, windows)))
    scores, whole_rows = sum(n * longest ** 2 for *_, n, longest in runs), sum(width ** 2 for _, width, *_ in runs)
    assert scores < 0.5 * whole_rows, (scores, whole_rows)
    assert a[0] == b[0]
    diff = max(abs(x - y) for ra, rb in zip(a[2], b[2]) for da, db in zip(ra, rb) if da is not None for x, y in zip(da, db))
    assert diff < 1e-4
    # int8: a smaller file, the same interface; tags mostly as fp32's (weights rounded to 7 bits)
    out8 = tmp_path / "int8"
    shutil.copytree(model, out8, ignore=shutil.ignore_patterns("*.onnx"))
    record = export(hf, tokenizer, out8, "onnx-int8")
    assert record["runtime"] == "onnx-int8" and (out8 / "model.int8.onnx").is_file() and not (out8 / "model.onnx").exists()
    # 7-bit weights (reduce_range): full-range int8 saturates AVX2's 16-bit pair sums (-0.34 test F1
    # on the main job's model, -0.17 with 7 bits); every quantized weight within [-64, 64]
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(out8 / "model.int8.onnx")).graph
    weights = [numpy_helper.to_array(t) for t in graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert len(weights) == 6 * 2 + 1 and max(int(abs(w.astype(int)).max()) for w in weights) == 63
    # every MatMul by a weight is int8 (q, k, v, attention output, feed-forward in and out, per layer;
    # the classifier), its activations rounded with one scale per token: a text's logits are the same
    # alone and batched with another (per batch tensor, as quantize_dynamic does, they were not). The
    # feed-forward output projections (weight [intermediate, hidden], found by shape: one per layer)
    # take a GELU's output, -0.17 up: rounded with a zero point per token, on 256 steps, not 128
    from nerflow.core.runtime import feed_forward_outputs

    ffn = feed_forward_outputs(out / "model.onnx", hf.config)
    # (the last layer's: its read-tokens-only module's second output/dense)
    assert len(ffn) == hf.config.num_hidden_layers == 2 and all("/output/dense" in k and "attention" not in k for k in ffn)
    assert record["int8_export"] == "all int8"
    fp32_graph = onnx.load(str(out / "model.onnx")).graph
    fp32_weights = {t.name: t for t in fp32_graph.initializer}
    quantized = [fp32_weights[n.input[1]] for n in fp32_graph.node if n.op_type == "MatMul" and n.input[1] in fp32_weights]
    assert len(quantized) == 6 * 2 + 1
    # their weights take a byte instead of 4 (the embeddings stay fp32)
    saved = (out / "model.onnx").stat().st_size - (out8 / "model.int8.onnx").stat().st_size
    assert saved > 2 * sum(int(np.prod(t.dims)) for t in quantized)  # (3 bytes an element, less the new nodes)
    initializers = {t.name for t in graph.initializer}
    assert not [n for n in graph.node if n.op_type == "MatMul" and any(i in initializers for i in n.input)]
    ops = [n.op_type for n in graph.node]
    # the integer product, its conversion and the weight's scales in one ONNX Runtime kernel each
    assert ops.count("MatMulIntegerToFloat") == 6 * 2 + 1 and "DynamicQuantizeLinear" not in ops
    assert "MatMulInteger" not in ops
    # one QuantizeLinear per row-quantized input (q, k and v share theirs once ONNX Runtime merges
    # the equal nodes; here written per MatMul), with a zero point per token for the 2 feed-forward outputs
    assert ops.count("QuantizeLinear") == 6 * 2 + 1 and ops.count("ReduceMin") == 2
    # the other int8 export (auto's fallback): the feed-forward outputs fp32
    from nerflow.core.runtime import quantize_rows

    assert quantize_rows(out / "model.onnx", tmp_path / "hybrid.onnx", keep_fp32=set(ffn)) == 5 * 2 + 1
    hybrid = onnx.load(str(tmp_path / "hybrid.onnx")).graph
    hybrid_weights = {t.name for t in hybrid.initializer}
    assert {n.name for n in hybrid.node if n.op_type == "MatMul" and any(i in hybrid_weights for i in n.input)} == set(ffn)
    session = OnnxModel(out8, record, config=hf.config)
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(5, hf.config.vocab_size, (2, 12), generator=generator)
    ids[1, 3:9] = ids[0, 3]  # a repetitive text: its activations differ from the other's
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}
    together = session(**inputs).logits
    for row in range(2):
        alone = session(**{k: v[row:row + 1] for k, v in inputs.items()}).logits
        assert torch.equal(alone[0], together[row]), (row, float((alone[0] - together[row]).abs().max()))
    (out8 / "nerflow.json").write_text(json.dumps({**info, **record}))
    int8 = WordTagger(out8).predict(tokens)[0]
    agree = sum(x == y for r, s in zip(int8, a[0]) for x, y in zip(r, s)) / sum(len(r) for r in int8)
    assert agree > 0.9
    # nerflow.json naming a runtime whose file is gone: one clear error
    (out8 / "model.int8.onnx").unlink()
    from nerflow import NerflowError

    with pytest.raises(NerflowError, match="runtime onnx-int8 but model.int8.onnx is missing"):
        WordTagger(out8)


def test_argmax_decoding_is_kept_for_models_that_record_it(library_run, tmp_path):
    from nerflow.core.dataset import load_dataset_dir
    from nerflow.tasks.token.predict import WordTagger

    tokens = load_dataset_dir(library_run["dataset"])["test"]["tokens"]
    free = WordTagger(library_run["model"], decoding="argmax")
    tags, probs, dists = free.predict(tokens, distributions=True)
    assert tags == [[free.labels[int(np.argmax(d))] if d is not None else "O" for d in row] for row in dists]
    viterbi = WordTagger(library_run["model"]).predict(tokens)[0]
    allowed, first = iob2_transitions(free.labels)
    index = {t: i for i, t in enumerate(free.labels)}
    for row in viterbi:  # every served sequence is valid IOB2
        ids = [index[t] for t in row]
        assert not ids or first[ids[0]]
        assert all(allowed[a, b] for a, b in zip(ids, ids[1:]))


def test_the_registry_records_the_runtime_a_model_was_packaged_for(library_run, tmp_path):
    from nerflow.steps.package import register, registry_for

    params = {"model_name": "runtime-test", "bentoml_home": str(tmp_path / "home")}
    record = register(params, library_run["model"], library_run["metrics"], tmp_path / "registered.json")
    registry = registry_for(params)
    runtime = json.loads((library_run["model"] / "nerflow.json").read_text())["runtime"]
    assert runtime in ("onnx", "onnx-int8")
    assert registry.info(record["model_tag"])["metadata"]["runtime"] == runtime
    # and, for int8, which export: every MatMul int8 or the feed-forward outputs fp32 (nerflow.core.runtime.INT8_EXPORTS)
    from nerflow.core.runtime import INT8_EXPORTS

    int8_export = json.loads((library_run["model"] / "nerflow.json").read_text()).get("int8_export")
    assert (int8_export in INT8_EXPORTS) == (runtime == "onnx-int8")
    assert registry.info(record["model_tag"])["metadata"].get("int8_export") == int8_export
    stored = registry.model_dir(record["model_tag"])
    # the stored model carries the file the service runs
    assert (stored / {"onnx": "model.onnx", "onnx-int8": "model.int8.onnx"}[runtime]).is_file()
    assert json.loads((library_run["metrics"]).read_text())["runtime"] == runtime


def test_train_layers_keeps_the_bottom_layers_and_all_of_a_shallower_encoder(library_run, tmp_path, capsys):
    """train.layers N keeps at most the bottom N layers: the default 6 cuts the default 12-layer
    encoder in half and leaves a shallower one (the tiny test encoder's 2 layers) whole, saying so."""
    from transformers import AutoConfig, GPT2Config

    from nerflow.core.config import TrainParams
    from nerflow.steps.train import _layers, train

    assert TrainParams().layers == 6
    p = dict(library_run["params"]["train"], layers=1, max_steps=2, eval_each_epoch=False, runtime="torch")
    train(p, library_run["features"], tmp_path / "one")
    assert AutoConfig.from_pretrained(str(tmp_path / "one")).num_hidden_layers == 1  # the tiny encoder has 2
    capsys.readouterr()
    train(dict(p, layers=3), library_run["features"], tmp_path / "three")
    assert AutoConfig.from_pretrained(str(tmp_path / "three")).num_hidden_layers == 2
    assert "train.layers 3, but the encoder" in capsys.readouterr().err
    assert _layers(tmp_path / "three", 2) == {} and _layers(tmp_path / "three", None) == {}
    GPT2Config(n_layer=4).save_pretrained(str(tmp_path / "gpt2"))  # n_layer, read as num_hidden_layers
    assert _layers(tmp_path / "gpt2", 3) == {"num_hidden_layers": 3}


def test_train_attention_dropout_sets_the_encoders_own_key_and_refuses_an_encoder_without_one(library_run, tmp_path):
    """train.attention_dropout (default 0: PyTorch's fused attention kernel trains; with dropout it
    falls back to the unfused one) lands in the encoder's own config key; null keeps the encoder's."""
    from transformers import AutoConfig, GPT2Config

    from nerflow import NerflowError
    from nerflow.steps.train import _attention_dropout, train

    p = dict(library_run["params"]["train"], max_steps=1, eval_each_epoch=False, runtime="torch")
    assert p["attention_dropout"] == 0.0  # the default
    train(p, library_run["features"], tmp_path / "zero")
    assert AutoConfig.from_pretrained(str(tmp_path / "zero")).attention_probs_dropout_prob == 0.0
    train(dict(p, attention_dropout=None), library_run["features"], tmp_path / "own")
    assert AutoConfig.from_pretrained(str(tmp_path / "own")).attention_probs_dropout_prob == 0.1  # BertConfig's
    GPT2Config(n_layer=1).save_pretrained(str(tmp_path / "gpt2"))  # calls it attn_pdrop
    assert _attention_dropout(tmp_path / "gpt2", None) == {}
    with pytest.raises(NerflowError, match=r"train.attention_dropout: 0.0, but the encoder .*gpt2 \(gpt2\) names its "
                                           r"attention dropout none of attention_probs_dropout_prob, attention_dropout"):
        _attention_dropout(tmp_path / "gpt2", 0.0)


def test_train_freeze_layers_keeps_the_embeddings_and_bottom_layers_as_loaded(library_run, tiny_model, tmp_path):
    """train.freeze_layers N: the embeddings and the encoder's bottom N layers come out as they
    went in (no backward through them); the layers above train; every layer is kept."""
    import torch
    from transformers import AutoModel

    from nerflow import NerflowError
    from nerflow.steps.train import train

    p = dict(library_run["params"]["train"], max_steps=3, eval_each_epoch=False, runtime="torch", freeze_layers=1)
    train(p, library_run["features"], tmp_path / "frozen")
    before = AutoModel.from_pretrained(str(tiny_model)).state_dict()
    after = AutoModel.from_pretrained(str(tmp_path / "frozen")).state_dict()
    assert len(AutoModel.from_pretrained(str(tmp_path / "frozen")).encoder.layer) == 2
    for name in ("embeddings.position_embeddings.weight", "embeddings.LayerNorm.weight",
                 "encoder.layer.0.attention.self.query.weight", "encoder.layer.0.output.dense.weight"):
        assert torch.equal(before[name], after[name]), name
    for name in ("encoder.layer.1.attention.self.query.weight", "encoder.layer.1.output.dense.weight"):
        assert not torch.allclose(before[name], after[name]), name
    with pytest.raises(NerflowError, match=r"train.freeze_layers: 2, but the encoder has 2 layers \(at least one must train\)"):
        train(dict(p, freeze_layers=2), library_run["features"], tmp_path / "all")
    assert not (tmp_path / "all").exists()


def test_quantize_rows_rounds_each_token_on_its_own_scale_and_zero_point(tmp_path):
    """quantize_rows against numpy on a one-MatMul graph: symmetric rows (zero point 128, 127 steps
    a side) and asymmetric ones (a zero point per row over [min(lo, 0), max(hi, 0)], 255 steps),
    7-bit weights per output channel; on GELU-like inputs (-0.17 up) the asymmetric rounding errs
    less, and a row's result never depends on the other rows."""
    pytest.importorskip("onnxruntime")
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from nerflow.core.runtime import quantize_rows

    rng = np.random.default_rng(0)
    w = rng.normal(size=(16, 5)).astype(np.float32)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", "t", 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", "t", 5])],
                              [numpy_helper.from_array(w, "w")])
    fp32 = tmp_path / "mm.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(fp32))
    x = rng.normal(size=(2, 3, 16)).astype(np.float32)
    x = (np.maximum(x, 0) * rng.uniform(0.5, 8, size=(2, 3, 1)) - 0.17 * (x < 0)).astype(np.float32)  # GELU-like rows
    x[1, 2] = 0.0  # an all-zero row (a padded token): no division by zero
    w_scale = np.abs(w).max(0) / 63
    w_q = np.clip(np.round(w / w_scale), -63, 63)
    exact = x @ (w_q * w_scale)  # the rounding of the activations alone
    errors = {}
    for name, asym in (("sym", ()), ("asym", {"mm"})):
        assert quantize_rows(fp32, tmp_path / f"{name}.onnx", asymmetric=asym) == 1
        run = ort.InferenceSession(str(tmp_path / f"{name}.onnx"), providers=["CPUExecutionProvider"]).run
        y = run(["y"], {"x": x})[0]
        if asym:
            lo, hi = np.minimum(x.min(-1, keepdims=True), 0), np.maximum(x.max(-1, keepdims=True), 0)
            s = np.maximum(hi - lo, 1e-12) / 255
            z = -np.round(lo / s)
        else:
            s, z = np.maximum(np.abs(x).max(-1, keepdims=True), 1e-12) / 127, 128
        x_q = np.clip(np.round(x / s) + z, 0, 255)
        assert np.allclose(y, ((x_q - z) @ w_q) * s * w_scale, rtol=1e-5, atol=1e-6), name
        assert np.array_equal(y[1, 2], np.zeros(5, np.float32))
        assert np.array_equal(run(["y"], {"x": x[:1]})[0], y[:1])  # alone as batched
        errors[name] = np.linalg.norm(y - exact) / np.linalg.norm(exact)
    assert errors["asym"] < 0.6 * errors["sym"], errors


def test_packed_export_gives_each_text_its_logits_alone_across_encoder_families(tmp_path):
    """Texts packed one after another into one row (a token attends only to its own text, positions
    restart per text) get the logits each has alone, for BERT, XLM-R (positions from padding_idx + 1),
    DistilBERT and ELECTRA, in the blocks layout (attention within each text's block, the texts
    sorted by length) and the earlier packed one (a masked attention over the row; older exports,
    and MPNet, whose attention does not go through transformers' attention interface);
    an encoder that cannot take it (DeBERTa-v2: relative positions, no position_ids) is exported
    padded, as before. A row longer than the budget runs alone."""
    pytest.importorskip("onnxruntime")
    import torch
    from transformers import (
        AutoModelForTokenClassification,
        BertConfig,
        BertTokenizer,
        DebertaV2Config,
        DistilBertConfig,
        ElectraConfig,
        MPNetConfig,
        XLMRobertaConfig,
    )

    from nerflow.core.runtime import OnnxModel, export

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list("abcdefghij")
    tokenizer = BertTokenizer(vocab={t: i for i, t in enumerate(vocab)})
    size = dict(vocab_size=len(vocab), num_labels=5)
    layers = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, **size)
    families = {  # config -> the position offset the export must find (None: padded)
        "bert": (BertConfig(**layers), 0),
        "xlm-roberta": (XLMRobertaConfig(pad_token_id=1, **layers), 2),
        "distilbert": (DistilBertConfig(dim=32, n_layers=2, n_heads=2, hidden_dim=64, **size), 0),
        "electra": (ElectraConfig(embedding_size=16, **layers), 0),
        "deberta-v2": (DebertaV2Config(**layers), None),
        "mpnet": (MPNetConfig(**layers), 2),  # RoBERTa-like positions; no attention interface: the earlier packed layout, even when blocks are asked
    }
    earlier_only = {"mpnet"}
    rows = [[2, 5, 6, 7, 3], [2, 8, 3], [2] + list(range(5, 15)) * 3 + [3], [2, 9, 10, 11, 12, 13, 3]]
    cases = [(name, layout) for name in families for layout in ("blocks", "packed")]
    for name, layout in cases:
        config, offset = families[name]
        torch.manual_seed(0)
        model = AutoModelForTokenClassification.from_config(config).eval()
        out = tmp_path / f"{name}-{layout}"
        out.mkdir()
        record = export(model, tokenizer, out, "onnx", layout=layout)
        with torch.no_grad():
            alone = [model(input_ids=torch.tensor([r])).logits[0].numpy() for r in rows]
        session = OnnxModel(out, record, config=config)
        # BERT-likes compute their last layer for the tokens read only, when told which: the others
        # (DistilBERT, MPNet: other layer modules) all tokens, as before
        assert session.reads == (name in ("bert", "xlm-roberta", "electra") and layout == "blocks"), (name, layout)
        if offset is None:
            assert "runtime_layout" not in record and not session.packed, name
        else:
            got = "packed" if name in earlier_only else layout
            assert record["runtime_layout"] == got and record["position_offset"] == offset, (name, record)
            assert ("block_index" in record["runtime_inputs"]) == (got == "blocks")
            runs, session_run = [], session.session.run
            session.session.run = lambda names, feed: runs.append(feed["input_ids"].shape[1]) or session_run(names, feed)
            packed = session.packed_logits(rows, budget=20)
            # blocks: sorted by length, 3 + 5 + 7 in one row; the earlier layout as they come; the 32-token row alone
            # (the runs side by side on threads: in any order)
            assert sorted(runs) == sorted([3 + 5 + 7, 32] if got == "blocks" else [5 + 3, 32, 7]), (name, layout, runs)
            assert np.abs(packed - np.concatenate(alone)).max() < 1e-4, name
            if name == "bert" and got == "blocks":  # 2 threads: its 2 runs in flight at once (else the barrier times out)
                import threading

                both, two = threading.Barrier(2, timeout=60), OnnxModel(out, record, config=config, threads=2)
                one_run = two.session.run

                def meet(names, feed):
                    both.wait()
                    return one_run(names, feed)

                two.session.run = meet
                assert np.array_equal(two.packed_logits(rows, budget=20), packed), layout
            # some tokens of each row read (none of one: it still runs): theirs as alone; the others 0 when skipped
            read = [[1, 3], [], list(range(0, 32, 3)), [6]]
            some = session.packed_logits(rows, budget=20, read=read)
            at = np.cumsum([0] + [len(r) for r in rows])
            wanted = np.concatenate([at[i] + np.array(p, int) for i, p in enumerate(read)])
            assert np.abs(some[wanted] - np.concatenate(alone)[wanted]).max() < 1e-4, name
            skipped = np.setdiff1d(np.arange(at[-1]), np.concatenate([wanted, [at[1]]]))  # the empty row computes its first
            assert (np.abs(some[skipped]).max() == 0) == session.reads, name
        # a padded batch (evaluate's and the dev check's way) is taken by either layout
        width = max(len(r) for r in rows)
        batch = {"input_ids": torch.tensor([r + [0] * (width - len(r)) for r in rows]),
                 "attention_mask": torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])}
        batch["token_type_ids"] = torch.zeros_like(batch["input_ids"])
        logits = session(**batch).logits.numpy()
        assert max(np.abs(logits[i, :len(r)] - alone[i]).max() for i, r in enumerate(rows)) < 1e-4, name
