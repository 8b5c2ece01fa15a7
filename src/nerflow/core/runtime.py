"""The inference runtime a trained model is evaluated, registered and served with.

``train.runtime``:
- ``torch``: the model as trained (transformers, bf16 autocast where the hardware has it);
- ``onnx``: exported to ONNX (``model.onnx``), run by ONNX Runtime in fp32;
- ``onnx-int8``: that export with int8 weights (``model.int8.onnx``; 7-bit, one scale per output
  channel) and int8 activations quantized at run time with one scale per token (``quantize_rows``;
  every MatMul, the feed-forward output projections' GELU inputs with a zero point per token),
  run by ONNX Runtime: the fastest on CPUs;
- ``auto``: the exports are scored on the dev split the same way, and int8 is kept only when its
  dev score is at most ``train.int8_max_drop`` below fp32's (rounding to int8 costs some models
  nothing and others over half a point): first every MatMul int8, then, if that loses too much,
  the feed-forward output projections in fp32 (``INT8_EXPORTS``; see ``export``).

Token-classification exports take texts packed one after another into a row (``runtime_layout:
blocks`` in nerflow.json; ``OnnxModel.packed_logits``): the matrix products compute no padding, and
attention runs within each text only (its tokens gathered into blocks, ``_block_attention``), so
each text's logits are those it has alone; in BERT-likes the last layer is computed for the
tokens read only (each word's first sub-token: ``read_index``, ``_read_layer``). The earlier layout (``runtime_layout: packed``) attends
over the whole row with a mask: exports from before ``blocks`` still load, and encoders whose
attention does not go through transformers' attention interface are exported so. Encoders that
take neither (no ``position_ids``) are exported padded.

The train step exports the model it saves (``export``); its ``nerflow.json`` records the
runtime and the file, so evaluate scores the model exactly as the service will run it, and the
registry records the runtime a model was packaged for. ``load`` gives an object called like a
transformers model (``model(**batch).logits``) whichever the runtime.
"""

from __future__ import annotations

import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Collection, Sequence

import numpy as np

from nerflow import NerflowError
from nerflow.core.batching import pack_documents

# Heavy libraries (torch, transformers, onnx, onnxruntime) are imported inside the functions that use them, on purpose:
# the CLI starts without them and a step loads only what it runs.

RUNTIMES = ("torch", "onnx", "onnx-int8")
FILES = {"onnx": "model.onnx", "onnx-int8": "model.int8.onnx"}
# the int8 exports ``export`` writes (``int8_export`` in nerflow.json), the faster first
INT8_EXPORTS = ("all int8", "feed-forward outputs fp32")
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
# tokens in one packed row (OnnxModel.packed_logits). Short texts packed by the hundred: the service's
# batches of 8-32 CoNLL sentences ran 15-27% faster than padded batches, single thread, all-int8 (96-160
# tokens within 3% of one another with attention over the whole row)
PACK_TOKENS = 128
# the blocks layout, texts sorted by length: with over PACK_MANY texts to a call, rows of PACK_TOKENS_MANY
# (attention grows with the texts' lengths, not the row's). Single thread, all-int8, the main job's model,
# random CoNLL test sentences, against rows of 128 with attention over the row: 64 texts a call +5-7%
# (rows of 256), +4-6% (192); 8-16 texts: 256 -2 to -4%, 128 within 1% (so 128 there)
PACK_MANY = 16
PACK_TOKENS_MANY = 256
LAYOUTS = ("blocks", "packed")  # the packed layouts, the current first


def export(model, tokenizer, out_dir: str | Path, runtime: str, dev_score=None, max_drop: float = 0.003,
           reference: float | None = None, layout: str = LAYOUTS[0]) -> dict[str, Any]:
    """Write ``model`` (a transformers model in eval mode, on CPU) as ``FILES[runtime]`` into
    ``out_dir``; nothing for torch. What nerflow.json records of it.

    ``auto``: the fp32 export and the int8 exports of ``INT8_EXPORTS`` in turn are written and
    ``dev_score`` (a model called like a transformers model -> its dev score) scores each; the
    first int8 export at most ``max_drop`` below fp32 stays (``int8_export`` names it), else fp32
    does (without ``dev_score``: fp32, nothing to check int8 against). The file not chosen is
    removed; ``runtime_check`` records the scores. ``reference``: ``model``'s own dev
    score when training already measured it (the kept best checkpoint): fp32 is not scored again,
    as its export scores what torch does (tests/unit/core/test_runtime.py; the check took 70 -> 33 s on the main job).
    ``layout``: the packed layout tried first (``LAYOUTS``; ``packed``, the earlier one, for tests
    of models exported before ``blocks``); a model that cannot take it is tried with the layouts
    after it in ``LAYOUTS``, then padded."""
    if runtime == "torch":
        return {"runtime": "torch"}
    out_dir = Path(out_dir)
    started = time.perf_counter()
    names, record = _export_fp32(model, tokenizer, out_dir / FILES["onnx"], layout)
    if runtime == "auto" and dev_score is None:
        runtime = "onnx"
    if runtime in ("onnx-int8", "auto"):
        runtime = _export_int8(model.config, out_dir, runtime, record, dev_score, max_drop, reference)
    (out_dir / FILES["onnx-int8" if runtime == "onnx" else "onnx"]).unlink(missing_ok=True)
    return {"runtime": runtime, "runtime_file": FILES[runtime], "runtime_inputs": list(names),
            "export_seconds": round(time.perf_counter() - started, 1), **record}


def _export_fp32(model, tokenizer, fp32: Path, layout: str) -> tuple[list[str], dict[str, Any]]:
    """The fp32 ONNX file, in the first packed layout from ``layout`` on that the model takes (token
    classification), else padded: (its input names, what nerflow.json records of the layout)."""
    import torch

    names = [k for k in INPUTS if k in tokenizer.model_input_names or k != "token_type_ids"]
    if "token_type_ids" in names and getattr(model.config, "type_vocab_size", 0) < 1:
        names.remove("token_type_ids")
    sample = tokenizer(["a b c", "d"], padding=True, return_tensors="pt")
    args = tuple(sample[k] if k in sample else torch.zeros_like(sample["input_ids"]) for k in names)
    axes = {k: {0: "batch", 1: "sequence"} for k in names}
    token_level = "TokenClassification" in type(model).__name__
    axes["logits"] = {0: "batch", 1: "sequence"} if token_level else {0: "batch"}
    was_training = model.training
    model.eval()
    record: dict[str, Any] = {}
    # the tracer warns about shape checks it freezes: they hold for every input (a mask as long as its ids;
    # no causal mask), and an exported model scores the test split as torch does (tests/unit/core/test_runtime.py)
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = model.float()
        # texts packed into rows: no padding computed (``OnnxModel.packed_logits``); the blocks layout needs
        # transformers' attention interface, which some encoders do not call (MPNet, RemBERT, RoFormer,
        # SqueezeBERT in transformers 5.23): those take the earlier packed layout, as they did before it
        packing = None
        for layout in LAYOUTS[LAYOUTS.index(layout):] if token_level else ():
            packing = _packing(model, tokenizer, names, layout)
            if packing is not None:
                break
        if packing is not None:
            offset, names, args = packing
            record = {"runtime_layout": layout, "position_offset": offset}
            axes = _packed_axes(names, layout)
        torch.onnx.export(_Logits(model, names), args, str(fp32), input_names=list(names), output_names=["logits"],
                          dynamic_axes=axes, opset_version=17, dynamo=False)
    model.train(was_training)
    return names, record


def _packed_axes(names: list[str], layout: str) -> dict[str, dict[int, str]]:
    """The dynamic axes of a packed export's inputs and logits."""
    axes = {k: {0: "rows", 1: "sequence"} for k in (*names, "logits")}
    if layout == "blocks":
        axes.update(block_index={0: "texts", 1: "longest"}, block_bias={0: "texts", 1: "longest"},
                    token_slot={0: "sequence"}, read_index={0: "reads"},
                    read_block={0: "texts", 1: "longest_read"}, read_slot={0: "reads"})
        axes = {k: v for k, v in axes.items() if k in names or k == "logits"}
        if "read_index" in names:
            axes["logits"] = {0: "rows", 1: "reads"}
    return axes


def _export_int8(config, out_dir: Path, runtime: str, record: dict[str, Any], dev_score, max_drop: float,
                 reference: float | None) -> str:
    """The int8 exports, the faster first: every MatMul int8 (the feed-forward outputs with a zero
    point per token), then the feed-forward outputs fp32 (slower; closer to fp32 on models whose
    GELU outliers the first rounds too coarsely). ``onnx-int8`` writes the first; ``auto`` keeps the
    first within ``max_drop`` of fp32's dev score, else fp32. The runtime chosen; ``record`` gets
    ``int8_export`` and, for auto, ``runtime_check``."""
    fp32, int8 = out_dir / FILES["onnx"], out_dir / FILES["onnx-int8"]
    ffn = set(feed_forward_outputs(fp32, config))
    exports = {INT8_EXPORTS[0]: {"asymmetric": ffn}, INT8_EXPORTS[1]: {"keep_fp32": ffn}}
    if runtime == "onnx-int8":
        quantize_rows(fp32, int8, **exports[INT8_EXPORTS[0]])
        record["int8_export"] = INT8_EXPORTS[0]
        return runtime
    scores = {"onnx": dev_score(OnnxModel(out_dir, {**record, "runtime": "onnx"}, config=config))
              if reference is None else float(reference)}
    runtime = "onnx"
    for name, how in exports.items():
        quantize_rows(fp32, int8, **how)
        key = "onnx-int8" if name == INT8_EXPORTS[0] else f"onnx-int8 ({name})"
        scores[key] = dev_score(OnnxModel(out_dir, {**record, "runtime": "onnx-int8"}, config=config))
        if scores[key] >= scores["onnx"] - max_drop:
            runtime, record["int8_export"] = "onnx-int8", name
            break
    record["runtime_check"] = {"dev_f1": {k: round(v, 5) for k, v in scores.items()}, "max_drop": max_drop,
                               "chosen": runtime}
    return runtime


def _Logits(inner, names):
    """A torch module giving ``inner``'s logits as a plain tensor, its inputs named in the order of
    ``names``. A row may hold several texts one after another (``position_ids`` restart for every
    text), and a token attends only to the tokens of its own text, so that each text's logits are
    those it has alone:

    - ``block_index`` among the names (``blocks``): attention by ``_block_attention``, each text's
      tokens gathered into a block of their own; with ``read_index`` too, the last layer computed
      for those tokens only (``_read_layer``), and the logits theirs, in that order;
    - ``segment_ids`` (``packed``, the earlier layout): segment k (1, 2, ...) is the k-th text, 0
      padding; attention over the whole row with an additive 4-D mask (transformers takes one as given)."""
    import torch

    class Logits(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = inner
            self.read = _read_layer(inner) if "read_index" in names else None  # a submodule: named in the export

        def forward(self, *tensors):
            inputs = dict(zip(names, tensors))
            segments = inputs.pop("segment_ids", None)
            if segments is not None:
                same = segments[:, None, :, None] == segments[:, None, None, :]
                inputs["attention_mask"] = torch.where(same, 0.0, torch.finfo(torch.float32).min)
            if "block_index" not in inputs:
                return self.inner(**inputs).logits
            config = self.inner.config
            before = config._attn_implementation
            _register_block_attention()
            config._attn_implementation = BLOCK_ATTENTION
            layers = self.inner.base_model.encoder.layer if self.read is not None else None
            if layers is not None:
                last, layers[-1] = layers[-1], self.read
            try:  # a 4-D mask is passed through untouched, and ignored: the blocks are the mask
                return self.inner(**inputs, attention_mask=torch.zeros(1, 1, 1, 1)).logits
            finally:
                config._attn_implementation = before
                if layers is not None:
                    layers[-1] = last

    return Logits()


BLOCK_ATTENTION = "nerflow_blocks"


def _block_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, block_index=None,
                     block_bias=None, token_slot=None, **_):
    """Attention within each text of a packed row (transformers' attention interface; query, key,
    value [1, heads, tokens, head size]): ``block_index`` [texts, longest] gathers each text's
    tokens into a block (padded to the longest text), ``block_bias`` [texts, longest] (0, or the
    lowest float for padding) masks the padding keys, ``token_slot`` [tokens] takes each token's
    output back from its block. Its cost grows with the texts' lengths, not the row's (a row of
    128 tokens holding six CoNLL sentences: 6 x 21^2 scores a head instead of 128^2)."""
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    return _blocks(query, key, value, block_index, block_bias, token_slot, scaling).transpose(1, 2), None


def _blocks(query, key, value, block_index, block_bias, slot, scaling, query_index=None):
    """``_block_attention``'s product: [1, heads, queries, head size], the queries gathered into
    blocks by ``query_index`` (default ``block_index``: every token) and taken back by ``slot``."""
    import torch

    q = query[:, :, block_index if query_index is None else query_index]  # [1, heads, texts, longest, head size]
    k, v = (x[:, :, block_index] for x in (key, value))
    scores = torch.matmul(q, k.transpose(-1, -2)) * scaling + block_bias[:, None, :]
    return torch.matmul(torch.softmax(scores, -1), v).flatten(2, 3)[:, :, slot]


def _read_layer(model):
    """A module computing ``model``'s last encoder layer for the read tokens only (``read_index``:
    the first sub-token of each word; their keys and values still from every token of their text),
    to put in its place: a word's logits come from its first sub-token, so the last layer's query,
    attention output and feed-forward are wasted on the others (a third of CoNLL's tokens with
    multilingual-e5's vocabulary, counting [CLS] and [SEP]). For BERT-likes (BERT, RoBERTa,
    XLM-R, ELECTRA: ``attention.self`` with query, key and value, ``attention.output`` and
    ``feed_forward_chunk``); None for other encoders (those compute every token, as before)."""
    import torch

    layers = getattr(getattr(getattr(model, "base_model", None), "encoder", None), "layer", None)
    last = layers[-1] if isinstance(layers, torch.nn.ModuleList) and len(layers) else None
    attention = getattr(getattr(last, "attention", None), "self", None)
    if not (hasattr(last, "feed_forward_chunk") and hasattr(last.attention, "output")
            and all(hasattr(attention, k) for k in ("query", "key", "value", "attention_head_size"))):
        return None

    class ReadLayer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = last

        def forward(self, hidden_states, *_, read_index=None, read_block=None, read_slot=None, block_index=None,
                    block_bias=None, **__):
            layer = self.inner
            size = layer.attention.self.attention_head_size

            def heads(x):  # [1, n, hidden] -> [1, heads, n, head size]
                return x.view(1, x.shape[1], -1, size).transpose(1, 2)

            read = hidden_states[:, read_index]
            own = layer.attention.self
            context = _blocks(heads(own.query(read)), heads(own.key(hidden_states)), heads(own.value(hidden_states)),
                              block_index, block_bias, read_slot, getattr(own, "scaling", size ** -0.5),
                              query_index=read_block)
            out = layer.attention.output(context.transpose(1, 2).flatten(2), read)
            return layer.feed_forward_chunk(out)

    return ReadLayer()


def _register_block_attention():
    from transformers import AttentionInterface

    AttentionInterface.register(BLOCK_ATTENTION, _block_attention)


def _packing(model, tokenizer, names: list[str], layout: str = LAYOUTS[0]):
    """(position offset, input names, a traced sample) of the packed ``layout`` for ``model``, or
    None when it cannot take it. The offset is the position of a text's first token (0 for
    BERT-likes; RoBERTa-likes count from padding_idx + 1): the one with which three texts packed
    in one row get, token for token, the logits each has alone in a padded batch. A model that
    takes no ``position_ids`` (or 4-D mask, or attention function), or matches with no offset,
    is exported padded."""
    import torch

    if layout not in LAYOUTS:
        raise ValueError(f"unknown packed layout {layout!r} (one of {', '.join(LAYOUTS)})")
    enc = tokenizer(["a b c d", "e", "f g"], padding=True, return_tensors="pt")
    mask = enc["attention_mask"].bool()
    lengths = mask.sum(1).tolist()
    alone = model(**{k: enc[k] for k in names if k in enc}).logits
    want = torch.cat([alone[i][mask[i]] for i in range(len(lengths))])
    types = [k for k in names if k == "token_type_ids"]
    blocks = layout == "blocks"
    packed_names = (["input_ids", "position_ids", *types, "block_index", "block_bias", "token_slot"] if blocks
                    else ["input_ids", "segment_ids", "position_ids", *types])
    rows = [enc["input_ids"][i][mask[i]].tolist() for i in range(len(lengths))]
    type_rows = [enc["token_type_ids"][i][mask[i]].tolist() for i in range(len(lengths))] if "token_type_ids" in enc else None
    pad = getattr(model.config, "pad_token_id", None)
    # blocks: first with the last layer computed for the read tokens only (some of each text's), then for all
    tries = [(packed_names + ["read_index", "read_block", "read_slot"], [list(range(1, n, 2)) for n in lengths])
             ] if blocks and _read_layer(model) is not None else []
    for names_, read in tries + [(packed_names, None)]:
        expect = want if read is None else torch.cat([alone[i][mask[i]][read[i]] for i in range(len(lengths))])
        for offset in dict.fromkeys((0, 1 + (pad or 0))):
            feed = _block_feed(rows, offset, type_rows, read) if blocks else _packed_feed(rows, offset, type_rows)
            args = tuple(torch.from_numpy(feed[k]) for k in names_)
            try:
                got = _Logits(model, names_)(*args)[0]
            except (TypeError, ValueError, RuntimeError, IndexError, KeyError):  # no position_ids / 4-D mask / interface
                break
            if got.shape == expect.shape and torch.allclose(got, expect, atol=1e-4):
                return offset, names_, args
    return None


def _packed_feed(rows: Sequence[Sequence[int]], offset: int, type_rows: Sequence[Sequence[int]] | None = None):
    """The packed layout's inputs for ``rows`` (token id lists) one after another in one row of
    shape (1, total): ``segment_ids`` 1, 2, ... per row, ``position_ids`` from ``offset`` in each
    row, ``token_type_ids`` as given (else 0). What ``_Logits`` reads; the one place it is built."""
    lengths = [len(r) for r in rows]
    total = sum(lengths)
    return {"input_ids": np.fromiter((t for r in rows for t in r), np.int64, total)[None],
            "segment_ids": np.repeat(np.arange(1, len(rows) + 1, dtype=np.int64), lengths)[None],
            "position_ids": np.concatenate([np.arange(n, dtype=np.int64) for n in lengths])[None] + offset,
            "token_type_ids": (np.zeros((1, total), np.int64) if type_rows is None else
                               np.fromiter((t for r in type_rows for t in r), np.int64, total)[None])}


def _block_feed(rows: Sequence[Sequence[int]], offset: int, type_rows: Sequence[Sequence[int]] | None = None,
                read: Sequence[Sequence[int]] | None = None):
    """The blocks layout's inputs for ``rows`` one after another in one row: ``_packed_feed``'s
    ``input_ids``, ``position_ids`` and ``token_type_ids``, and the blocks ``_block_attention``
    reads: ``block_index`` (text i's tokens in row i, padded with token 0), ``block_bias`` (0 on a
    token, the lowest float on padding), ``token_slot`` (each token's place in the flattened blocks).
    And the tokens whose logits are wanted (``_read_layer``): ``read`` (positions in each of
    ``rows``, ascending; None: every token) as ``read_index`` (their places in the row),
    ``read_block`` (row i: text i's, as places in ``read_index``, padded with 0) and ``read_slot``."""
    feed = _packed_feed(rows, offset, type_rows)
    del feed["segment_ids"]
    lengths = np.array([len(r) for r in rows], np.int64)
    starts = np.cumsum(lengths) - lengths
    feed["block_index"], inside, feed["token_slot"] = _gathers(lengths)
    feed["block_bias"] = np.where(inside, np.float32(0), np.finfo(np.float32).min).astype(np.float32)
    if read is None:
        feed["read_index"] = np.arange(int(lengths.sum()), dtype=np.int64)
        feed["read_block"], feed["read_slot"] = feed["block_index"], feed["token_slot"]
    else:
        feed["read_index"] = np.concatenate([np.asarray(p, np.int64) + s for p, s in zip(read, starts)])
        feed["read_block"], _, feed["read_slot"] = _gathers(np.array([len(p) for p in read], np.int64))
    return feed


def _gathers(lengths):
    """For pieces of ``lengths`` one after another: (index [pieces, longest]: piece i's places,
    padded with 0; inside: where a place is not padding; slot: each place's index in the flattened
    [pieces, longest])."""
    longest, starts = int(lengths.max()), np.cumsum(lengths) - lengths
    columns = np.arange(longest, dtype=np.int64)
    inside = columns[None] < lengths[:, None]
    return (np.where(inside, starts[:, None] + columns[None], 0), inside,
            (np.arange(len(lengths), dtype=np.int64)[:, None] * longest + columns[None])[inside])


def feed_forward_outputs(onnx_file: Path, config) -> list[str]:
    """The MatMul nodes of ``onnx_file`` that project a feed-forward block's output back to the
    hidden size: weight [in, hidden] with in > hidden (BERT-likes' ``output.dense``, DistilBERT's
    ``ffn.lin2``). Told apart by shape, not by name, so any encoder's export is read alike; the
    classifier ([hidden, labels]) and the attention projections ([hidden, hidden]) are not."""
    import onnx

    hidden = getattr(config, "hidden_size", None)
    graph = onnx.load(str(onnx_file), load_external_data=False).graph
    shapes = {t.name: tuple(t.dims) for t in graph.initializer}
    return [node.name for node in graph.node if node.op_type == "MatMul" and any(
        len(shapes.get(i, ())) == 2 and shapes[i][1] == hidden and shapes[i][0] > hidden for i in node.input)]


def quantize_rows(fp32: Path, out: Path, keep_fp32: Collection[str] = (), asymmetric: Collection[str] = (),
                  weight_bits: int = 7) -> int:
    """Write ``fp32`` (an ONNX file) to ``out`` with every MatMul by a weight (a 2-D initializer)
    but the nodes named in ``keep_fp32`` computed in int8: the weight rounded once, one scale per
    output channel, to ``weight_bits`` bits (7: ONNX Runtime's advice for x86 CPUs without VNNI,
    whose u8 x s8 kernel adds pairs of products in 16 bits, which 8-bit weights can saturate); the
    activations rounded at run time with one scale per row (token) by ``QuantizeLinear`` on a 2-D
    view (per axis 0), feeding ONNX Runtime's ``MatMulIntegerToFloat`` (the integer product, its
    conversion to float and the weight's scales in one kernel; then one Mul by the row scales):
    zero point 128, symmetric, or, for the nodes in ``asymmetric``, a zero point per row, so that
    inputs far from symmetric (a GELU's output: -0.17 up, the feed-forward output projections'
    input) use all 256 steps, not 128. The number of MatMuls quantized.

    Not ONNX Runtime's ``quantize_dynamic``: it gives a whole batch tensor one activation scale,
    and in BERT-likes the [CLS]/[SEP] tokens carry activations 5-10x larger than the words'
    (feed-forward inputs of the main job's model: up to 58 against 6), so every word was rounded
    on their scale, and a text's tags depended on the texts batched with it. On the 6-layer
    main-job model (test / dev F1 against fp32, read as evaluate reads them; dev as the Trainer
    scores it, what ``auto`` compares; single-thread texts/s in batches of 16, side by side):

    - per token, the feed-forward outputs asymmetric (``export``'s first choice): -0.00 / -0.02 / -0.19, 215;
    - per token, the feed-forward outputs fp32 (``export``'s fallback): -0.04 / +0.00 / -0.09, 185;
    - per token, all symmetric: -0.16 / -0.12 / -0.32 (over ``auto``'s 0.3), 212;
    - per batch (``quantize_dynamic``), the feed-forward outputs fp32: -0.24 / -0.19 / -0.25; all: -0.19 / -0.49 / -0.62; fp32: 139."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(fp32))
    graph = model.graph
    weights = {t.name: t for t in graph.initializer if len(t.dims) == 2 and t.data_type == TensorProto.FLOAT}
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 17)
    qmax = 2 ** (weight_bits - 1) - 1
    constants = {"rowq_one": (1, np.float32), "rowq_inv127": (1 / 127, np.float32), "rowq_inv255": (1 / 255, np.float32), "rowq_eps": (1e-12, np.float32),
                 "rowq_0": (0, np.float32), "rowq_128": (128, np.float32), "rowq_zero_point": (128, np.uint8),
                 "rowq_last_axis": ([-1], np.int64), "rowq_flat": ([-1], np.int64)}

    def reduce(op: str, x: str, y: str):  # over the last axis, kept: [..., 1]
        return (helper.make_node(op, [x], [y], axes=[-1], keepdims=1) if opset < 18 else
                helper.make_node(op, [x, "rowq_last_axis"], [y], keepdims=1))

    nodes, done = [], 0
    for k, node in enumerate(graph.node):
        if node.op_type != "MatMul" or node.input[1] not in weights or node.input[0] in weights or node.name in keep_fp32:
            nodes.append(node)
            continue
        x, w, y = node.input[0], weights[node.input[1]], node.output[0]
        p = f"rowq{k}"
        array = numpy_helper.to_array(w)
        scale = np.maximum(np.abs(array).max(0), 1e-12) / qmax  # per output channel
        w_q = np.clip(np.round(array / scale), -qmax, qmax).astype(np.int8)
        constants[f"rowq_rows_of_{array.shape[0]}"] = ([-1, array.shape[0]], np.int64)
        graph.initializer.extend([numpy_helper.from_array(w_q, f"{p}_w"),
                                  numpy_helper.from_array(scale.astype(np.float32), f"{p}_w_scale")])
        if node.name in asymmetric:
            # the correction in the weight's scales: MatMulIntegerToFloat's output is already in them
            graph.initializer.append(numpy_helper.from_array((w_q.astype(np.float32).sum(0) * scale).astype(np.float32),
                                                             f"{p}_colsum_w"))
            nodes += _asymmetric_row_scale(p, x, reduce)
        else:
            nodes += _symmetric_row_scale(p, x, reduce)
        nodes += _row_quantized_product(p, x, y, node.name, array.shape[0], node.name in asymmetric)
        done += 1
    graph.initializer.extend(numpy_helper.from_array(np.array(v, dtype), name) for name, (v, dtype) in constants.items())
    if done and not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    del graph.node[:]
    graph.node.extend(nodes)
    used = {i for n in graph.node for i in n.input}
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    onnx.checker.check_model(model)
    onnx.save(model, str(out))
    return done


def _asymmetric_row_scale(p: str, x: str, reduce) -> list:
    """Nodes giving each row's scale ``{p}_s`` and zero point ``{p}_zero_point`` (uint8), and the
    zero point's correction ``{p}_correction``: s = (max(hi, 0) - min(lo, 0)) / 255 per row, zero
    point z = -round(lo / s): x ~ s (x_q - z), and y = s w_scale (x_q @ w_q - z colsum(w_q)), the
    correction a product of a row and a column."""
    from onnx import (  # deferred: heavy (see the note under the imports)
        TensorProto,
        helper,
    )

    return [reduce("ReduceMax", x, f"{p}_hi0"), reduce("ReduceMin", x, f"{p}_lo0"),
            helper.make_node("Max", [f"{p}_hi0", "rowq_0"], [f"{p}_hi"]),
            helper.make_node("Min", [f"{p}_lo0", "rowq_0"], [f"{p}_lo"]),
            helper.make_node("Sub", [f"{p}_hi", f"{p}_lo"], [f"{p}_range"]),
            helper.make_node("Max", [f"{p}_range", "rowq_eps"], [f"{p}_range1"]),
            helper.make_node("Mul", [f"{p}_range1", "rowq_inv255"], [f"{p}_s"]),
            helper.make_node("Div", [f"{p}_lo", f"{p}_s"], [f"{p}_lo_s"]),
            helper.make_node("Round", [f"{p}_lo_s"], [f"{p}_minus_z"]),
            helper.make_node("Neg", [f"{p}_minus_z"], [f"{p}_z"]),
            helper.make_node("Reshape", [f"{p}_z", "rowq_flat"], [f"{p}_z1"]),
            helper.make_node("Cast", [f"{p}_z1"], [f"{p}_zero_point"], to=TensorProto.UINT8),
            helper.make_node("Mul", [f"{p}_minus_z", f"{p}_colsum_w"], [f"{p}_correction"])]


def _symmetric_row_scale(p: str, x: str, reduce) -> list:
    """Nodes giving each row's scale ``{p}_s`` = max|row| / 127 and zero point 128 (uint8)."""
    from onnx import (  # deferred: heavy (see the note under the imports)
        TensorProto,
        helper,
    )

    return [helper.make_node("Abs", [x], [f"{p}_abs"]), reduce("ReduceMax", f"{p}_abs", f"{p}_max"),
            helper.make_node("Max", [f"{p}_max", "rowq_eps"], [f"{p}_max1"]),
            helper.make_node("Mul", [f"{p}_max1", "rowq_inv127"], [f"{p}_s"]),
            helper.make_node("Mul", [f"{p}_max1", "rowq_0"], [f"{p}_0"]),
            helper.make_node("Add", [f"{p}_0", "rowq_128"], [f"{p}_z"]),
            helper.make_node("Reshape", [f"{p}_z", "rowq_flat"], [f"{p}_z1"]),
            helper.make_node("Cast", [f"{p}_z1"], [f"{p}_zero_point"], to=TensorProto.UINT8)]


def _row_quantized_product(p: str, x: str, y: str, name: str, inputs: int, asymmetric: bool) -> list:
    """Nodes computing ``y`` from ``x`` rounded row by row and the int8 weight ``{p}_w``."""
    from onnx import helper  # deferred: heavy (see the note under the imports)

    nodes = [  # x_q = saturate(round(x / s) + z) row by row, in one QuantizeLinear over [rows, in]
        helper.make_node("Shape", [x], [f"{p}_shape"]),
        helper.make_node("Reshape", [x, f"rowq_rows_of_{inputs}"], [f"{p}_x2"]),
        helper.make_node("Reshape", [f"{p}_s", "rowq_flat"], [f"{p}_s1"]),
        helper.make_node("QuantizeLinear", [f"{p}_x2", f"{p}_s1", f"{p}_zero_point"], [f"{p}_xq2"], axis=0),
        helper.make_node("Reshape", [f"{p}_xq2", f"{p}_shape"], [f"{p}_xq"])]
    # (x_q - 128) @ w_q x w_scale (symmetric) or x_q @ w_q x w_scale (asymmetric, then the correction),
    # in one kernel: 2-3% faster than MatMulInteger, a Cast and a Mul (blocks export, ONNX Runtime 1.31)
    nodes.append(helper.make_node("MatMulIntegerToFloat", [f"{p}_xq", f"{p}_w", "rowq_one", f"{p}_w_scale"] +
                                  ([] if asymmetric else ["rowq_zero_point"]), [f"{p}_yw"], domain="com.microsoft"))
    product = f"{p}_yw"
    if asymmetric:
        nodes.append(helper.make_node("Add", [product, f"{p}_correction"], [f"{p}_yc"]))
        product = f"{p}_yc"
    nodes.append(helper.make_node("Mul", [product, f"{p}_s"], [y], name=name))
    return nodes


class OnnxModel:
    """An ONNX Runtime session called like a transformers model: ``model(**batch).logits``
    (torch tensors in and out), with the model's ``config``. ``threads`` (default: torch's):
    a packed layout's rows run that many at a time, each on one thread (``packed_logits``);
    a padded export's batch on that many threads."""

    def __init__(self, model_dir: Path, info: dict[str, Any], threads: int | None = None, config=None):
        import onnxruntime as ort
        from transformers import AutoConfig

        path = model_dir / info.get("runtime_file", FILES[info["runtime"]])
        if not path.is_file():
            raise NerflowError(f"{model_dir}: its nerflow.json says runtime {info['runtime']} but {path.name} is missing")
        self.path = path
        self.config = config if config is not None else AutoConfig.from_pretrained(str(model_dir))
        options = ort.SessionOptions()
        import torch

        # packed: a row holds several texts (export, _Logits); a padded batch is still taken (below)
        self.layout = info.get("runtime_layout")
        self.packed = self.layout in LAYOUTS
        self.threads = threads or torch.get_num_threads()  # as torch is set (the service: cores / workers)
        # packed rows run side by side, one thread each (ONNX Runtime's run releases the GIL): evaluate's path
        # on 2 cores +13% to +23% (5 of 6 interleaved rounds) against one run at a time on 2 threads
        options.intra_op_num_threads = 1 if self.packed else self.threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self._pool = None
        self.reads = "read_index" in self.inputs  # the last layer for the read tokens only (_read_layer)
        self.position_offset = int(info.get("position_offset", 0))

    def __call__(self, **batch):
        import torch

        if self.packed:  # a right-padded batch: its texts packed, their logits put back in place
            lengths = batch["attention_mask"].sum(1).tolist()
            ids = batch["input_ids"].tolist()
            types = batch["token_type_ids"].tolist() if "token_type_ids" in self.inputs else None
            flat = self.packed_logits([r[:n] for r, n in zip(ids, lengths)],
                                      None if types is None else [r[:n] for r, n in zip(types, lengths)])
            logits = torch.zeros(*batch["input_ids"].shape, flat.shape[-1])
            logits[batch["attention_mask"].bool()] = torch.from_numpy(flat)
            return SimpleNamespace(logits=logits)
        feed = {k: batch[k].cpu().numpy() for k in self.inputs}
        return SimpleNamespace(logits=torch.from_numpy(self.session.run(["logits"], feed)[0]))

    def packed_logits(self, rows: Sequence[Sequence[int]], type_rows: Sequence[Sequence[int]] | None = None,
                      budget: int | None = None, read: Sequence[Sequence[int]] | None = None):
        """The logits of every token of ``rows`` (lists of token ids, unpadded), rows one after
        another in one array: rows are packed into sequences of up to ``budget`` tokens (a longer
        row alone), one run each, ``threads`` runs at a time. No padding is computed, and the matrix products get more than
        one short text's tokens at a time. The blocks layout packs the rows sorted by length (each
        text's attention block then about as long as the others'), ``PACK_TOKENS_MANY`` tokens a
        sequence when more than ``PACK_MANY`` rows come at once, else ``PACK_TOKENS``; the earlier
        layout packs them as they come, ``PACK_TOKENS``. ``read``: the positions of each row whose
        logits are wanted (ascending); an export that takes them (``read_index``) computes its
        last layer for those tokens only and leaves the others' logits 0."""
        blocks = self.layout == "blocks"
        if budget is None:
            budget = PACK_TOKENS_MANY if blocks and len(rows) > PACK_MANY else PACK_TOKENS
        order = sorted(range(len(rows)), key=lambda i: len(rows[i])) if blocks else list(range(len(rows)))
        lengths = np.array([len(r) for r in rows], np.int64)
        starts = np.cumsum(lengths) - lengths
        out = np.zeros((int(lengths.sum()), self.config.num_labels), np.float32)
        # a row with nothing to read still gets one token (so that a run never has none)
        reads = None if read is None or not self.reads else [np.asarray(p if len(p) else [0], np.int64) for p in read]

        def run(group):
            part = [order[j] for j in group]
            types = None if type_rows is None else [type_rows[i] for i in part]
            feed = (_block_feed([rows[i] for i in part], self.position_offset, types,
                                None if reads is None else [reads[i] for i in part]) if blocks else
                    _packed_feed([rows[i] for i in part], self.position_offset, types))
            logits = self.session.run(["logits"], {name: feed[name] for name in self.inputs})[0][0]
            at = 0
            for i in part:
                if reads is None:
                    out[starts[i]:starts[i] + lengths[i]] = logits[at:at + lengths[i]]
                    at += lengths[i]
                else:
                    out[starts[i] + reads[i]] = logits[at:at + len(reads[i])]
                    at += len(reads[i])

        # consecutive rows (in ``order``) up to the budget, a longer one alone: pack_documents with one document
        groups = pack_documents([(0, 0)] * len(order), [len(rows[i]) for i in order], budget)
        if self.threads > 1 and len(groups) > 1:
            if self._pool is None:

                self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="nerflow-onnx")
            list(self._pool.map(run, groups))
        else:
            for group in groups:
                run(group)
        return out

    def to(self, _device):
        return self

    def eval(self):
        return self


def load(model_dir: str | Path, info: dict[str, Any], model_class, device: str, threads: int | None = None):
    """The model of ``model_dir`` in the runtime its nerflow.json records (torch without one,
    and always on a GPU, where ONNX Runtime's CPU provider would be the slower)."""
    runtime = info.get("runtime", "torch")
    if runtime not in RUNTIMES:
        raise NerflowError(f"{model_dir}: unknown runtime {runtime!r} in nerflow.json (one of {', '.join(RUNTIMES)})")
    if runtime == "torch" or device != "cpu":
        return model_class.from_pretrained(str(model_dir)).to(device).eval()
    return OnnxModel(Path(model_dir), info, threads)
