"""Step `train`: fine-tune a Hugging Face encoder for token classification.

Trainer with dynamic padding (DataCollatorForTokenClassification), length-grouped batches,
bf16/fp16 autocast where the hardware has it, a separate learning rate for the new head,
dev F1 after each epoch. Saves model + tokenizer (with id2label/label2id), ``nerflow.json``
(labels, window settings, data version) and ``train_log.json`` (loss and dev F1 history).
Multi-GPU: run the same command under ``torchrun`` / ``accelerate launch``; Trainer picks
up the distributed environment.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from nerflow import NerflowError
from nerflow.atomic import atomic_dir, write_json
from nerflow.device import resolve_precision
from nerflow.params import resolve_path
from nerflow.predict import MODEL_INFO
from nerflow.preprocess import INFO as PREPROCESS_INFO


def _optimizer(model, lr: float, head_lr: float, weight_decay: float):
    import torch

    head = {n for n, _ in model.named_parameters() if n.startswith(("classifier.", "score."))}
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
        foreach=True,
    )


def _dev_f1(labels: list[str]):
    import numpy as np

    from nerflow.metrics import score

    def compute(eval_pred) -> dict[str, float]:
        preds, gold = eval_pred.predictions, eval_pred.label_ids
        if preds.ndim == 3:
            preds = preds.argmax(-1)
        g_seqs, p_seqs = [], []
        for p_row, g_row in zip(preds, gold):
            keep = g_row != -100
            g_seqs.append([labels[i] for i in g_row[keep]])
            p_seqs.append([labels[i] for i in np.asarray(p_row)[keep]])
        s = score(g_seqs, p_seqs)
        return {"f1": s["f1"], "precision": s["precision"], "recall": s["recall"]}

    return compute


def train(params: dict[str, Any], features_dir: str | Path, model_out: str | Path) -> dict[str, Any]:
    import torch
    import transformers
    from datasets import disable_progress_bars, load_from_disk
    from transformers import (
        AutoModelForTokenClassification,
        AutoTokenizer,
        DataCollatorForTokenClassification,
        Trainer,
        TrainingArguments,
    )

    disable_progress_bars()
    transformers.logging.set_verbosity_error()
    features_dir = Path(features_dir)
    if not (features_dir / PREPROCESS_INFO).exists():
        raise NerflowError(f"{features_dir}: no preprocessed features (run the preprocess step first)")
    info = json.loads((features_dir / PREPROCESS_INFO).read_text())
    labels = info["labels"]
    features = load_from_disk(str(features_dir))
    tokenizer = AutoTokenizer.from_pretrained(str(features_dir / "tokenizer"))
    model_path = resolve_path(params["model"])
    model_vocab = AutoTokenizer.from_pretrained(str(model_path)).get_vocab()
    if model_vocab != tokenizer.get_vocab():
        raise NerflowError(
            f"train.model {params['model']} has another vocabulary than the tokenizer the features "
            f"were made with ({info['tokenizer']}): set preprocess.model to the same model"
        )
    seed = int(params.get("seed", 42))
    transformers.set_seed(seed)
    if params.get("threads"):
        torch.set_num_threads(int(params["threads"]))
    model = AutoModelForTokenClassification.from_pretrained(
        str(model_path),
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    device, precision = resolve_precision(params.get("precision", "auto"))
    eval_each_epoch = bool(params.get("eval_each_epoch", True)) and "validation" in features
    model_out = Path(model_out)
    work_dir = model_out.parent / f".{model_out.name}.trainer"
    args = TrainingArguments(
        output_dir=str(work_dir),
        seed=seed,
        num_train_epochs=float(params.get("epochs", 1)),
        max_steps=int(params.get("max_steps", -1) or -1),
        per_device_train_batch_size=int(params.get("batch_size", 32)),
        per_device_eval_batch_size=int(params.get("batch_size", 32)) * 2,
        learning_rate=float(params.get("learning_rate", 5e-5)),
        weight_decay=float(params.get("weight_decay", 0.0)),
        warmup_steps=int(params.get("warmup_steps", 0)),
        lr_scheduler_type=params.get("lr_scheduler", "linear"),
        train_sampling_strategy="group_by_length" if params.get("group_by_length", True) else "random",
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=device == "cpu",
        eval_strategy="epoch" if eval_each_epoch else "no",
        save_strategy="no",
        logging_strategy="steps",
        logging_steps=int(params.get("logging_steps", 50)),
        dataloader_num_workers=int(params.get("dataloader_workers", 0)),
        dataloader_pin_memory=device == "cuda",
        report_to="none",
        disable_tqdm=not bool(params.get("progress", True)),
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=features["train"],
        eval_dataset=features["validation"] if eval_each_epoch else None,
        data_collator=DataCollatorForTokenClassification(tokenizer, pad_to_multiple_of=8),
        processing_class=tokenizer,
        compute_metrics=_dev_f1(labels) if eval_each_epoch else None,
        preprocess_logits_for_metrics=lambda logits, _labels: logits.argmax(-1),
        optimizers=(
            _optimizer(
                model,
                float(params.get("learning_rate", 5e-5)),
                float(params.get("head_learning_rate", params.get("learning_rate", 5e-5))),
                float(params.get("weight_decay", 0.0)),
            ),
            None,
        ),
    )
    started = time.perf_counter()
    result = trainer.train()
    seconds = time.perf_counter() - started
    history = trainer.state.log_history
    dev = [{"epoch": h["epoch"], "f1": h["eval_f1"]} for h in history if "eval_f1" in h]
    eval_seconds = sum(h.get("eval_runtime", 0.0) for h in history)
    summary = {
        "device": device,
        "precision": precision,
        "train_seconds": round(seconds, 1),
        "dev_eval_seconds": round(eval_seconds, 1),
        "train_windows": len(features["train"]),
        # sentences seen per second of training proper (per-epoch dev evaluation excluded)
        "train_sentences_per_second": round(
            info["splits"]["train"]["sentences"] * float(result.metrics.get("epoch", 1)) / max(seconds - eval_seconds, 1e-9), 2
        ),
        "steps": trainer.state.global_step,
        "epochs": float(result.metrics.get("epoch", 0)),
        "final_train_loss": float(result.training_loss),
        "dev_f1": dev,
    }
    model_info = {
        "labels": labels,
        "max_length": info["max_length"],
        "stride": info["stride"],
        "label_all_subtokens": info["label_all_subtokens"],
        "content_hash": info["content_hash"],
        "base_model": str(params["model"]),
        "train": summary,
    }
    if trainer.is_world_process_zero():
        with atomic_dir(model_out) as tmp:
            trainer.save_model(str(tmp))
            tokenizer.save_pretrained(str(tmp))
            write_json(tmp / MODEL_INFO, model_info)
            write_json(tmp / "train_log.json", {"summary": summary, "log_history": history})
        import shutil

        shutil.rmtree(work_dir, ignore_errors=True)
    return summary
