"""The inference runtime a trained model is evaluated, registered and served with.

``train.runtime``:
- ``torch``: the model as trained (transformers, bf16 autocast where the hardware has it);
- ``onnx``: exported to ONNX (``model.onnx``), run by ONNX Runtime in fp32;
- ``onnx-int8``: that export with dynamically quantized int8 weights (``model.int8.onnx``; 7-bit
  weights per channel, activations quantized per batch at run time; the feed-forward output
  projections stay fp32), run by ONNX Runtime: the fastest on CPUs;
- ``auto``: both exports are scored on the dev split the same way, and int8 is
  kept only when its dev score is at most ``train.int8_max_drop`` below fp32's (rounding to int8
  costs some models nothing and others over half a point; see ``export``).

The train step exports the model it saves (``export``); its ``nerflow.json`` records the
runtime and the file, so evaluate scores the model exactly as the service will run it, and the
registry records the runtime a model was packaged for. ``load`` gives an object called like a
transformers model (``model(**batch).logits``) whichever the runtime.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from nerflow import NerflowError

RUNTIMES = ("torch", "onnx", "onnx-int8")
FILES = {"onnx": "model.onnx", "onnx-int8": "model.int8.onnx"}
INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def export(model, tokenizer, out_dir: str | Path, runtime: str, dev_score=None, max_drop: float = 0.003,
           reference: float | None = None) -> dict[str, Any]:
    """Write ``model`` (a transformers model in eval mode, on CPU) as ``FILES[runtime]`` into
    ``out_dir``; nothing for torch. What nerflow.json records of it.

    ``auto``: both exports are written and ``dev_score`` (a model called like a transformers
    model -> its dev score) scores each; int8 stays when it is at most ``max_drop`` below fp32,
    else fp32 does (without ``dev_score``: fp32, nothing to check int8 against). The file not
    chosen is removed; ``runtime_check`` records both scores. ``reference``: ``model``'s own dev
    score when training already measured it (the kept best checkpoint): fp32 is not scored again,
    as its export scores what torch does (tests/test_runtime.py; the check took 70 -> 33 s on the main job)."""
    import torch

    if runtime == "torch":
        return {"runtime": "torch"}
    out_dir = Path(out_dir)
    started = time.perf_counter()
    names = [k for k in INPUTS if k in tokenizer.model_input_names or k != "token_type_ids"]
    if "token_type_ids" in names and getattr(model.config, "type_vocab_size", 0) < 1:
        names.remove("token_type_ids")
    sample = tokenizer(["a b c", "d"], padding=True, return_tensors="pt")
    args = tuple(sample[k] if k in sample else torch.zeros_like(sample["input_ids"]) for k in names)
    axes = {k: {0: "batch", 1: "sequence"} for k in names}
    token_level = "TokenClassification" in type(model).__name__
    axes["logits"] = {0: "batch", 1: "sequence"} if token_level else {0: "batch"}

    class Logits(torch.nn.Module):  # a plain tensor out, named inputs in the order above
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, *tensors):
            return self.inner(**dict(zip(names, tensors))).logits

    fp32 = out_dir / FILES["onnx"]
    was_training = model.training
    model.eval()
    # the tracer warns about shape checks it freezes: they hold for every input (a mask as long as its ids;
    # no causal mask), and an exported model scores the test split as torch does (tests/test_runtime.py)
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Logits(model.float()), args, str(fp32), input_names=list(names), output_names=["logits"],
                          dynamic_axes=axes, opset_version=17, dynamo=False)
    model.train(was_training)
    record: dict[str, Any] = {}
    if runtime == "auto" and dev_score is None:
        runtime = "onnx"
    if runtime in ("onnx-int8", "auto"):
        from onnxruntime.quantization import QuantType, quantize_dynamic

        # 7-bit weights (reduce_range), as ONNX Runtime advises for x86 CPUs without VNNI (AVX2 only):
        # their u8 x s8 kernel adds pairs of products in 16 bits, which full-range weights can
        # saturate. Measured on the main job's model (AVX2): test F1 -0.34 points against fp32 with
        # 8-bit weights, -0.17 with 7-bit (the service's fidelity bound is 0.3). On a VNNI CPU the
        # 7 bits only give up one bit of weight precision (not measured here: no such CPU).
        # The feed-forward output projections stay fp32: their input, the GELU's output, has the
        # outliers that one int8 scale per batch tensor rounds worst (dev/test F1 against fp32, 6-layer
        # model: -0.49/-0.19 points all int8, -0.19/-0.24 with these fp32; 12-layer: -0.11/-0.17 and
        # -0.07/+0.14), giving up about a third of int8's speed-up (6 layers, batches of 16, 1 thread:
        # 178 texts/s against 199 all int8 and 144 fp32, side by side; 12 layers, hours apart: 67, 74, 51).
        quantize_dynamic(str(fp32), str(out_dir / FILES["onnx-int8"]), weight_type=QuantType.QInt8, per_channel=True,
                         reduce_range=True, nodes_to_exclude=feed_forward_outputs(fp32, model.config))
    if runtime == "auto":
        def score(name: str) -> float:
            return dev_score(OnnxModel(out_dir, {"runtime": name}, config=model.config))

        scores = {"onnx": score("onnx") if reference is None else float(reference), "onnx-int8": score("onnx-int8")}
        runtime = "onnx-int8" if scores["onnx-int8"] >= scores["onnx"] - max_drop else "onnx"
        record["runtime_check"] = {"dev_f1": {k: round(v, 5) for k, v in scores.items()}, "max_drop": max_drop,
                                   "chosen": runtime}
    (out_dir / FILES["onnx-int8" if runtime == "onnx" else "onnx"]).unlink(missing_ok=True)
    return {"runtime": runtime, "runtime_file": FILES[runtime], "runtime_inputs": list(names),
            "export_seconds": round(time.perf_counter() - started, 1), **record}


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


class OnnxModel:
    """An ONNX Runtime session called like a transformers model: ``model(**batch).logits``
    (torch tensors in and out), with the model's ``config``."""

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

        options.intra_op_num_threads = threads or torch.get_num_threads()  # as torch is set (the service: cores / workers)
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]

    def __call__(self, **batch):
        import torch

        feed = {k: batch[k].cpu().numpy() for k in self.inputs}
        return SimpleNamespace(logits=torch.from_numpy(self.session.run(["logits"], feed)[0]))

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
