"""Step `train`: fine-tune a Hugging Face encoder for its task (token or text classification).

Trainer with dynamic padding (DataCollatorForTokenClassification), length-grouped batches,
bf16/fp16 autocast where the hardware has it, a separate learning rate for the new head,
dev F1 after each epoch. Saves model + tokenizer (with id2label/label2id), ``nerflow.json``
(labels, window settings, data version) and ``train_log.json`` (loss and dev F1 history).
Multi-GPU: run the same command under ``torchrun`` / ``accelerate launch``; Trainer picks
up the distributed environment.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import yaml

from nerflow import NerflowError
from nerflow.core.config import TrainParams, outcome_keys, section
from nerflow.core.dataset import FEATURES_INFO as FEATURES_INFO
from nerflow.core.dataset import VOCABULARY
from nerflow.core.device import resolve_precision
from nerflow.core.files import atomic_dir, read_json, write_json
from nerflow.core.hub import model_path as local_model
from nerflow.core.inference import MODEL_INFO
from nerflow.core.progress import Lines, on_terminal, quiet_library_bars
from nerflow.core.runtime import export as runtime_export
from nerflow.core.vocab import trim_embeddings
from nerflow.tasks.registry import task_of

# Heavy libraries (torch, dvclive, transformers, datasets) are imported inside the functions that use them, on purpose:
# the CLI starts without them and a step loads only what it runs.


def _optimizer(model, lr: float, head_lr: float, weight_decay: float, implementation: str = "foreach",
               new: set[str] | frozenset[str] = frozenset()):
    """AdamW with the new head at its own learning rate and no decay on biases and norms. The
    head is the classifier and every other parameter the checkpoint did not have (``new``, as
    from_pretrained's loading info lists them: a sequence classifier's pooler when the encoder
    was saved without one, as multilingual-e5-small is), so no randomly initialised layer
    trains at the encoder's small rate. ``implementation``: foreach (multi-tensor) or fused
    (one kernel per step: CUDA, recent CPUs)."""
    import torch

    head = {n for n, _ in model.named_parameters() if n.startswith(("classifier.", "score.")) or n in new}
    no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight")
    groups: dict[tuple[bool, bool], list] = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            groups.setdefault((name in head, name.endswith(no_decay)), []).append(param)
    return torch.optim.AdamW(
        [
            {"params": ps, "lr": head_lr if is_head else lr, "weight_decay": 0.0 if nd else weight_decay}
            for (is_head, nd), ps in groups.items()
        ],
        lr=lr,
        **({"fused": True} if implementation == "fused" else {"foreach": True}),
    )


FEATURE_KEYS = ("stride", "label_all_subtokens", "context", "truncation", "head_share")  # how the features were cut, per task


def _examples(split_stats: dict[str, Any]) -> int:
    return split_stats.get("sentences", split_stats.get("texts", 0))


RUN_KEY = "nerflow-run.json"  # what a checkpoint in the work folder was trained with


RUN_INDEPENDENT = {"resume", "save_steps", "dataloader_workers", "threads", "torch_compile", "optimizer", "precision"}


def _run_key(params: TrainParams, info: dict[str, Any]) -> dict[str, Any]:
    """What a resumable checkpoint must have been trained with: every key that changes the
    result except those that only change how fast or how often it is saved."""
    keys = [k.split(".", 1)[1] for k in outcome_keys("train") if k.split(".", 1)[1] not in RUN_INDEPENDENT]
    return {"params": params.model_dump(mode="json", include=set(keys)), "data": info["content_hash"],
            "features": [info["max_length"], *(info.get(k) for k in FEATURE_KEYS)]}


def _checkpoint_to_resume(work_dir: Path, params: TrainParams, info: dict[str, Any]) -> Path | None:
    """The last checkpoint a killed run of the same training left behind; a work folder from
    other params or data is cleared instead."""
    if not work_dir.exists():
        return None
    try:
        same = json.loads((work_dir / RUN_KEY).read_text()) == json.loads(json.dumps(_run_key(params, info)))
    except (OSError, ValueError):
        same = False
    # a run killed while writing a checkpoint leaves it incomplete: the Trainer writes
    # trainer_state.json last, so only a checkpoint with a readable one is resumable
    checkpoints = sorted((c for c in work_dir.glob("checkpoint-*") if _complete(c)), key=lambda p: _step_of(p) or 0)
    if same and checkpoints:
        for partial in work_dir.glob("checkpoint-*"):
            if partial not in checkpoints:
                shutil.rmtree(partial, ignore_errors=True)
        return checkpoints[-1]
    shutil.rmtree(work_dir, ignore_errors=True)
    return None


def _complete(checkpoint: Path) -> bool:
    try:
        json.loads((checkpoint / "trainer_state.json").read_text())
        return True
    except (OSError, ValueError):
        return False


def _step_of(checkpoint) -> int | None:
    if not checkpoint:
        return None
    try:
        return int(str(checkpoint).rsplit("-", 1)[1])
    except (IndexError, ValueError):
        return None


def write_curves(history: list[dict[str, Any]], curves_dir: str | Path) -> None:
    """The Trainer's log history as dvclive plots (x: optimizer step): ``train/loss`` and
    ``train/learning_rate`` every logging step, ``dev/f1`` after each evaluation; the last
    values in ``metrics.json``. `dvc plots show` draws them (dvc.yaml names the files)."""
    from dvclive import Live

    with atomic_dir(curves_dir) as tmp:
        with Live(str(tmp), save_dvc_exp=False, dvcyaml=None, report=None) as live:
            for entry in history:
                for key, name in (("loss", "train/loss"), ("learning_rate", "train/learning_rate"),
                                  ("eval_f1", "dev/f1"), ("eval_loss", "dev/loss")):
                    if key in entry:
                        live.step = int(entry["step"])
                        live.log_metric(name, float(entry[key]))


def train(params: TrainParams | dict[str, Any], features_dir: str | Path, model_out: str | Path,
          curves_dir: str | Path | None = None) -> dict[str, Any]:
    """Fine-tune ``params.model`` on the features; write the model to ``model_out`` and, when
    ``curves_dir`` is given, the training curves (loss per logging step, dev F1 per epoch)
    there as dvclive plots."""
    import torch
    import transformers
    from datasets import disable_progress_bars

    params = section(TrainParams, params)
    disable_progress_bars()
    quiet_library_bars()
    transformers.logging.set_verbosity_error()
    info, features, tokenizer, model_path, kept = _read_features(params, Path(features_dir))
    task = task_of(info)
    transformers.set_seed(params.seed)
    if params.threads:
        torch.set_num_threads(params.threads)
    model, loading = _new_model(task, params, model_path, info["labels"], kept)
    device, precision = resolve_precision(params.precision)
    eval_each_epoch = params.eval_each_epoch and "validation" in features
    model_out = Path(model_out)
    work_dir = model_out.parent / f".{model_out.name}.trainer"
    resume_from = _checkpoint_to_resume(work_dir, params, info) if params.resume else None
    args = _arguments(params, work_dir, device, precision, eval_each_epoch)
    trainer = _trainer(task, params, model, loading, args, info, features, tokenizer, eval_each_epoch)
    work_dir.mkdir(parents=True, exist_ok=True)
    write_json(work_dir / RUN_KEY, _run_key(params, info))
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    seconds = time.perf_counter() - started
    summary = _summary(trainer, result, seconds, device, precision, info, len(features["train"]), resume_from)
    if trainer.is_world_process_zero():
        _save(trainer, task, params, info, features, tokenizer, summary, model_out)
        if curves_dir is not None:
            write_curves(trainer.state.log_history, curves_dir)
        shutil.rmtree(work_dir, ignore_errors=True)
    return summary


def _read_features(params: TrainParams, features_dir: Path):
    """(preprocess.json, the features, their tokenizer, the model's folder, the kept vocabulary
    ids or None), after checking that the model's vocabulary is the features' one."""
    from datasets import load_from_disk
    from transformers import AutoTokenizer

    if not (features_dir / FEATURES_INFO).exists():
        raise NerflowError(f"{features_dir}: no preprocessed features (run the preprocess step first)")
    info = json.loads((features_dir / FEATURES_INFO).read_text())
    features = load_from_disk(str(features_dir))
    tokenizer = AutoTokenizer.from_pretrained(str(features_dir / "tokenizer"))
    model_path = local_model(params.model, "train.model")
    model_vocab = AutoTokenizer.from_pretrained(str(model_path)).get_vocab()
    kept = json.loads((features_dir / VOCABULARY).read_text())["kept_ids"] if (features_dir / VOCABULARY).exists() else None
    if kept is not None:  # a trimmed vocabulary: the model's pieces at the kept ids, renumbered
        by_id = {i: piece for piece, i in model_vocab.items()}
        model_vocab = {by_id.get(old): new for new, old in enumerate(kept)}
    if model_vocab != tokenizer.get_vocab():
        raise NerflowError(
            f"train.model {params.model} has another vocabulary than the tokenizer the features "
            f"were made with ({info['tokenizer']}): set preprocess.model to the same model"
        )
    return info, features, tokenizer, model_path, kept


def _model_class(task):
    import transformers

    return getattr(transformers, task.auto_model)


def _new_model(task, params: TrainParams, model_path: Path, labels: list[str], kept: list[int] | None):
    """The encoder with a fresh head for ``labels`` (and from_pretrained's loading info), its
    vocabulary trimmed and its bottom frozen as params say."""
    model, loading = _model_class(task).from_pretrained(
        str(model_path),
        **_layers(model_path, params.layers),
        **_attention_dropout(model_path, params.attention_dropout),
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
        output_loading_info=True,
    )
    if kept is not None:
        trim_embeddings(model, kept)
    if params.freeze_embeddings:
        for param in model.get_input_embeddings().parameters():
            param.requires_grad = False
    if params.freeze_layers:
        _freeze_bottom(model, params.freeze_layers)
    return model, loading


def _save_settings(params: TrainParams, keep_best: bool) -> dict[str, Any]:
    """The Trainer's checkpoint settings: each epoch (keep-best / early stopping), every
    ``save_steps`` (resumable), both, or none."""
    save_steps = params.save_steps
    if keep_best or params.early_stopping_patience:
        save = {"save_strategy": "epoch", "load_best_model_at_end": True, "metric_for_best_model": "f1",
                "greater_is_better": True, "save_total_limit": 2}
    elif save_steps > 0:
        save = {"save_strategy": "steps", "save_steps": save_steps, "save_total_limit": 2}
    else:
        save = {"save_strategy": "no"}
    if save_steps > 0 and save["save_strategy"] == "epoch":
        # checkpoints every N steps as well as at each epoch: steps strategy with evaluation on the same steps
        save.update(save_strategy="steps", save_steps=save_steps)
    return save


def _arguments(params: TrainParams, work_dir: Path, device: str, precision: str, eval_each_epoch: bool):
    from transformers import TrainingArguments

    keep_best = eval_each_epoch and params.keep_best
    save = _save_settings(params, keep_best or bool(params.early_stopping_patience))
    by_steps = save.get("save_strategy") == "steps" and keep_best
    return TrainingArguments(
        output_dir=str(work_dir),
        seed=params.seed,
        num_train_epochs=params.epochs,
        max_steps=params.max_steps if params.max_steps > 0 else -1,
        per_device_train_batch_size=params.batch_size,
        per_device_eval_batch_size=params.batch_size * 2,
        learning_rate=params.learning_rate,
        weight_decay=params.weight_decay,
        warmup_steps=params.warmup_steps,
        lr_scheduler_type=params.lr_scheduler,
        train_sampling_strategy="group_by_length" if params.group_by_length else "random",
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=device == "cpu",
        eval_strategy=("steps" if by_steps else "epoch") if eval_each_epoch else "no",
        eval_steps=params.save_steps if by_steps else None,
        **save,
        gradient_accumulation_steps=params.gradient_accumulation_steps,
        torch_compile=params.torch_compile,
        logging_strategy="steps",
        logging_steps=params.logging_steps,
        dataloader_num_workers=params.dataloader_workers,
        dataloader_pin_memory=device == "cuda",
        ddp_find_unused_parameters=False,  # under torchrun: every parameter gets a gradient
        report_to="none",
        disable_tqdm=not (params.progress and on_terminal()),  # elsewhere: plain lines (_ProgressLines)
    )


def _trainer(task, params: TrainParams, model, loading, args, info, features, tokenizer, eval_each_epoch: bool):
    from transformers import EarlyStoppingCallback
    from transformers.trainer_callback import PrinterCallback

    patience = params.early_stopping_patience
    optimizer = _optimizer(model, params.learning_rate, params.head_learning_rate or params.learning_rate,
                           params.weight_decay, params.optimizer, set(loading.get("missing_keys") or ()))
    trainer = _sequential_eval_trainer()(
        model=model,
        args=args,
        train_dataset=features["train"],
        eval_dataset=features["validation"] if eval_each_epoch else None,
        data_collator=task.collator(tokenizer),
        processing_class=tokenizer,
        compute_metrics=task.dev_metrics(info, features) if eval_each_epoch else None,
        preprocess_logits_for_metrics=lambda logits, _labels: logits.argmax(-1),
        optimizers=(optimizer, None),
        callbacks=[EarlyStoppingCallback(early_stopping_patience=patience)] if patience and eval_each_epoch else None,
    )
    if args.disable_tqdm:  # no bar: no log dict printed per logging step either, but plain progress lines
        trainer.remove_callback(PrinterCallback)
        if params.progress:
            trainer.add_callback(_progress_lines())
    return trainer


def _progress_lines():
    """A Trainer callback writing training progress as nerflow.core.progress lines (steps,
    rate, time left, the latest loss and dev F1): the bar's information for a log file."""
    from transformers import TrainerCallback

    class ProgressLines(TrainerCallback):
        lines: Lines | None = None

        def __init__(self):
            self.figures: dict[str, float] = {}  # the latest loss and dev F1, as the Trainer logs them

        def on_train_begin(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                self.lines = Lines(state.max_steps, "train", "steps")
                self.lines.n = state.global_step  # resumed: counted from the checkpoint's step

        def on_log(self, args, state, control, logs=None, **kwargs):
            for key, name in (("loss", "loss"), ("eval_f1", "dev F1")):
                if key in (logs or {}):
                    self.figures[name] = float(logs[key])

        def on_step_end(self, args, state, control, **kwargs):
            if self.lines is not None:
                self.lines.set_postfix(epoch=round(state.epoch or 0.0, 2), **self.figures)
                self.lines.update(state.global_step - self.lines.n)

        def on_train_end(self, args, state, control, **kwargs):
            if self.lines is not None:
                self.lines.set_postfix(epoch=round(state.epoch or 0.0, 2), **self.figures)
                self.lines.close()

    return ProgressLines()


def _summary(trainer, result, seconds: float, device: str, precision: str, info: dict[str, Any], windows: int,
             resume_from: Path | None) -> dict[str, Any]:
    """What train_log.json and nerflow.json record of the run."""
    history = trainer.state.log_history
    eval_seconds = sum(h.get("eval_runtime", 0.0) for h in history)
    return {
        "device": device,
        "precision": precision,
        "train_seconds": round(seconds, 1),
        "dev_eval_seconds": round(eval_seconds, 1),
        "train_windows": windows,
        # sentences seen per second of training proper (per-epoch dev evaluation excluded)
        "train_sentences_per_second": round(
            _examples(info["splits"]["train"]) * float(result.metrics.get("epoch", 1)) / max(seconds - eval_seconds, 1e-9), 2
        ),
        "steps": trainer.state.global_step,
        "epochs": float(result.metrics.get("epoch", 0)),
        "final_train_loss": float(result.training_loss),
        "dev_f1": [{"epoch": h["epoch"], "f1": h["eval_f1"]} for h in history if "eval_f1" in h],
        "best_dev_f1": trainer.state.best_metric,
        "best_checkpoint_step": _step_of(trainer.state.best_model_checkpoint),
        "resumed_from_step": _step_of(resume_from),
    }


def _save(trainer, task, params: TrainParams, info: dict[str, Any], features, tokenizer, summary: dict[str, Any],
          model_out: Path) -> None:
    """The model folder, atomically: weights and tokenizer, the runtime export (nerflow.core.runtime),
    nerflow.json and train_log.json."""
    model_info = {
        "task": task.name,
        "labels": info["labels"],
        "max_length": info["max_length"],
        **{k: info[k] for k in FEATURE_KEYS if k in info},
        "level": info.get("level", "word"),
        "decoding": params.decoding,
        "content_hash": info["content_hash"],
        "base_model": params.model,
        "train": summary,
    }
    with atomic_dir(model_out) as tmp:
        trainer.save_model(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        # the saved model, for the runtime it is evaluated and served with (nerflow.core.runtime)
        saved = _model_class(task).from_pretrained(str(tmp)).eval()
        scorer = _dev_scorer(task, info, features, tokenizer, params.batch_size * 2) if params.runtime == "auto" else None
        # with keep_best the saved model is the best checkpoint: its dev F1 is the Trainer's best metric
        known = trainer.state.best_metric if params.keep_best and params.eval_each_epoch else None
        model_info.update(runtime_export(saved, tokenizer, tmp, params.runtime, scorer, params.int8_max_drop, known))
        del saved
        write_json(tmp / MODEL_INFO, model_info)
        write_json(tmp / "train_log.json", {"summary": summary, "log_history": trainer.state.log_history})


def _sequential_eval_trainer():
    from torch.utils.data import SequentialSampler
    from transformers import Trainer

    class SequentialEvalTrainer(Trainer):
        """Dev predictions in the dataset's order, also with group_by_length (transformers 5
        groups the eval batches by length as well): the dev F1 reads each window's predictions
        at that window's word starts, and keep-best and early stopping follow it."""

        def _get_eval_sampler(self, eval_dataset):
            if eval_dataset is None:
                return None
            # several processes: None, as transformers does without grouping (accelerate splits in order)
            return SequentialSampler(eval_dataset) if self.args.world_size <= 1 else None

    return SequentialEvalTrainer


def _dev_scorer(task, info: dict[str, Any], features, tokenizer, batch_size: int):
    """A function giving the dev score (``f1``, as the Trainer's per-epoch evaluation computes
    it) of a model called like a transformers model, e.g. an ONNX export; None without a
    validation split."""
    if "validation" not in features:
        return None

    import torch

    split = features["validation"]
    rows = split.select_columns([c for c in ("input_ids", "attention_mask", "token_type_ids", "labels")
                                 if c in split.column_names]).to_list()
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]["input_ids"]))
    collate, compute = task.collator(tokenizer), task.dev_metrics(info, features)

    def score(model) -> float:
        preds, golds = [None] * len(rows), [None] * len(rows)
        with torch.inference_mode():
            for at in range(0, len(order), batch_size):
                idx = order[at : at + batch_size]
                batch = collate([rows[i] for i in idx])
                gold = batch.pop("labels").numpy()
                pred = model(**batch).logits.argmax(-1).numpy()
                for k, i in enumerate(idx):
                    preds[i], golds[i] = pred[k], gold[k]
        if np.ndim(preds[0]) == 0:  # a label per text
            return float(compute(SimpleNamespace(predictions=np.array(preds), label_ids=np.array(golds)))["f1"])
        width = max(len(g) for g in golds)
        p, g = np.zeros((len(rows), width), dtype=np.int64), np.full((len(rows), width), -100, dtype=np.int64)
        for i, (a, b) in enumerate(zip(preds, golds)):
            p[i, : len(a)], g[i, : len(b)] = a, b
        return float(compute(SimpleNamespace(predictions=p, label_ids=g))["f1"])

    return score


def _freeze_bottom(model, layers: int) -> None:
    """Fix the embeddings and the encoder's bottom ``layers`` layers (requires_grad off): autograd
    then runs no backward pass through them."""
    import torch

    base = model.base_model
    total = getattr(model.config, "num_hidden_layers", None)
    stacks = [m for m in base.modules() if isinstance(m, torch.nn.ModuleList) and len(m) == total]
    embeddings = getattr(base, "embeddings", None)
    if not stacks or embeddings is None:
        raise NerflowError(f"train.freeze_layers: {layers}, but {type(base).__name__} has no embeddings and "
                           f"layer list nerflow can find: set train.freeze_layers to 0")
    if layers >= total:
        raise NerflowError(f"train.freeze_layers: {layers}, but the encoder has {total} layers (at least one must train)")
    for module in (embeddings, *stacks[0][:layers]):
        for param in module.parameters():
            param.requires_grad = False


# what encoders call the dropout on their attention probabilities (BERT, RoBERTa, XLM-R, ELECTRA,
# DeBERTa; DistilBERT and most newer ones)
ATTENTION_DROPOUT_KEYS = ("attention_probs_dropout_prob", "attention_dropout")


def _attention_dropout(model_path: Path, value: float | None) -> dict[str, float]:
    """from_pretrained's config override that sets the attention-probability dropout to ``value``
    (None: the encoder's own). At 0 PyTorch's scaled_dot_product_attention runs its fused kernel in
    training too; with dropout it falls back to the unfused one (on CPU about a fifth of a step)."""
    if value is None:
        return {}
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(model_path))
    for key in ATTENTION_DROPOUT_KEYS:
        if hasattr(config, key):
            return {key: value}
    raise NerflowError(
        f"train.attention_dropout: {value}, but the encoder {model_path} ({config.model_type}) names its attention "
        f"dropout none of {', '.join(ATTENTION_DROPOUT_KEYS)}: set train.attention_dropout to null")


def _layers(model_path: Path, layers: int | None) -> dict[str, int]:
    """from_pretrained's config override that keeps the encoder's bottom ``layers`` layers (the
    weights of the others are not loaded); {} for every layer (``layers`` null, or at least as many
    as the encoder has)."""
    if layers is None:
        return {}
    from transformers import AutoConfig

    total = getattr(AutoConfig.from_pretrained(str(model_path)), "num_hidden_layers", None)
    if total is None:
        raise NerflowError(f"train.layers: {layers}, but the encoder {model_path} does not say how many layers it has")
    if layers >= total:
        if layers > total:
            print(f"nerflow train: train.layers {layers}, but the encoder {model_path} has {total} layers: every "
                  "layer is kept", file=sys.stderr)
        return {}
    return {"num_hidden_layers": layers}


def train_processes(params: TrainParams | dict[str, Any], features_dir: str | Path, model_out: str | Path,
                    curves_dir: str | Path | None = None, nproc: int = 1) -> dict[str, Any]:
    """:func:`train` in ``nproc`` processes: one (this one) as is, several under torchrun
    (``torch.distributed.run --standalone``: one node, DDP over NCCL on GPUs, gloo on CPUs).
    Rank 0 writes the model and curves; the summary is read back from what it wrote."""
    if nproc <= 1:
        return train(params, features_dir, model_out, curves_dir)
    params = section(TrainParams, params)
    with tempfile.TemporaryDirectory(prefix="nerflow-torchrun-") as tmp:
        pfile = Path(tmp) / "params.yaml"
        # the features' tokenizer is the model's (params require preprocess.model == train.model)
        pfile.write_text(yaml.safe_dump({"train": params.to_dict(), "preprocess": {"model": params.model}}))
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
               "-m", "nerflow.cli", "--params", str(pfile), "train", "--features", str(features_dir), "--out", str(model_out)]
        if curves_dir is not None:
            cmd += ["--curves", str(curves_dir)]
        result = subprocess.run(cmd)
    if result.returncode != 0:
        raise NerflowError(f"torchrun with {nproc} processes failed (exit {result.returncode}): see its output above")
    return read_json(Path(model_out) / MODEL_INFO)["train"]
