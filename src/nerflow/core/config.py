"""The typed configuration: one pydantic model per params.yaml section.

Every key has its type, range, default and description here and nowhere else: params.yaml
spells the same defaults out (a test keeps the two equal), the library functions take these
sections (a plain dict is validated into one), and `nerflow params [--schema]` prints the
effective configuration or its JSON Schema. Unknown keys are refused with the closest known
key; wrong types and ranges are refused naming the key path (and the params file's line).

A key marked ``outcome=False`` (``json_schema_extra``) does not change a step's result (a
progress bar, the KFP resource request): DVC stages do not depend on it, so editing it re-runs
nothing (see nerflow.orchestration.wiring).
"""

from __future__ import annotations

import codecs
import difflib
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_serializer,
    field_validator,
    model_serializer,
    model_validator,
)

from nerflow import NerflowError

Severity = Literal["error", "warning", "off"]
TOKEN = "token-classification"  # a tag per token (NER): nerflow.tasks.token
TEXT = "text-classification"  # a label per text (sentiment, topic): nerflow.tasks.text
Task = Literal[TOKEN, TEXT]  # type: ignore[valid-type]  (constants: one spelling of each name)
TASKS = (TOKEN, TEXT)
NOT_OUTCOME = {"outcome": False}  # json_schema_extra of a key that does not change the result

# multilingual-e5-small (cased, MIT), built offline from two pinned PyPI packages (nerflow.core.assets);
# with the Hub, any encoder id (intfloat/multilingual-e5-small, xlm-roberta-base, ...)
DEFAULT_MODEL = "asset:multilingual-e5-small"
CONLL_EN = "pkg:neuroner/data/conll2003/en"


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True, frozen=True)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


# ----------------------------------------------------------------------------- data


class ReaderOptions(Section):
    """How one corpus file is read (shared by `data` and `evaluate.test_sets`)."""

    format: Literal["auto", "conll", "klue", "jsonl", "parquet", "hf", "tsv", "csv"] = Field(
        "auto", description="auto (by suffix / content) | conll | klue | jsonl | parquet | hf | tsv | csv "
        "(tsv/csv: text classification; auto reads .txt/.tsv as TSV, .csv as CSV there)")
    token_column: int = Field(0, description="CoNLL: which column holds the token (0-based; -1 = last)")
    tag_column: int = Field(-1, description="CoNLL: which column holds the tag (0-based; -1 = last)")
    comment_prefix: str | None = Field(
        None, min_length=1,
        description="CoNLL: lines starting with this are comments and skipped (GermEval: '#'); null: none")
    encoding: str = Field(
        "utf-8", description="text encoding of CoNLL/KLUE/JSONL files: utf-8 | latin-1 | cp1252 | ... "
        "(a UTF-16 file with a byte-order mark is detected)")
    scheme: Literal["iob2", "iob1", "bioes", "bilou"] = Field(
        "iob2", description="the source's tagging scheme, converted to IOB2: iob2 | iob1 | bioes | bilou")
    label_names: list[str] | None = Field(
        None, description="names of integer class ids in JSONL/Parquet (HF datasets carry their own); text "
        "classification: the label set, and the names of ids 0, 1, ... in any format (null: the labels the data has)")
    text_column: str | int | None = Field(None, description=(
        "text classification: the text's column (a name, or a 0-based index in a file without a header); "
        "null: the first of text, document, sentence, review, content"))
    label_column: str | int | None = Field(None, description=(
        "text classification: the label's column (name or 0-based index); null: the first of label, labels, "
        "class, sentiment, target"))
    header: bool | None = Field(None, description=(
        "TSV/CSV: the first row names the columns (null: yes if it holds a known column name, or the named ones)"))

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        try:
            return codecs.lookup(value).name
        except LookupError:
            raise ValueError(f"unknown text encoding {value!r} (e.g. utf-8, latin-1, cp1252)") from None

    @model_validator(mode="after")
    def _columns_differ(self):
        if self.token_column == self.tag_column:
            raise ValueError(f"token_column and tag_column are both {self.tag_column}")
        return self


class SplitRatios(Section):
    train: float = Field(0.8, ge=0, description="share of sentences for train")
    validation: float = Field(0.1, ge=0, description="share for validation")
    test: float = Field(0.1, ge=0, description="share for test")

    @model_validator(mode="after")
    def _positive(self):
        if self.train + self.validation + self.test <= 0:
            raise ValueError("the shares add up to 0")
        return self


class Source(ReaderOptions):
    """One corpus source: a file or folder (``path``) or a Hugging Face Hub dataset (``hub``).
    The reader options it leaves out are the data section's."""

    path: str | None = Field(None, min_length=1, description="a file, an HF dataset folder, or pkg:<package>/<path>")
    hub: str | None = Field(None, min_length=1, description="a Hub dataset id (owner/name[@revision]), read with "
                                                            "datasets.load_dataset")
    name: str | None = Field(None, min_length=1, description="the Hub dataset's configuration (wikiann: the language)")
    split: str | None = Field(None, min_length=1, description=(
        "the split to read from a Hub dataset or DatasetDict folder (default: the split it fills)"))
    source: str | None = Field(None, min_length=1, pattern=r"^[\w.-]+$", description=(
        "the name its sentences carry in the dataset's `source` column and evaluate's per-source table "
        "(e.g. the language; default: the Hub configuration, else none)"))

    @model_validator(mode="after")
    def _one_origin(self):
        if bool(self.path) == bool(self.hub):
            raise ValueError("a source names either path or hub")
        if self.name and not self.hub:
            raise ValueError("name (a Hub configuration) goes with hub")
        return self

    @model_serializer(mode="wrap")
    def _as_written(self, handler) -> dict[str, Any]:
        """Only the keys the source sets: read back, it still takes the others from the data section."""
        return {k: v for k, v in handler(self).items() if k in self.model_fields_set}

    def label(self) -> str:
        """The ``source`` column's value for its sentences ("" when unnamed)."""
        return self.source or (self.name if self.hub else None) or ""

    def options(self, defaults: ReaderOptions) -> ReaderOptions:
        """The reader options for this source: its own where it sets them, else ``defaults``."""
        own = {k: getattr(self, k) for k in self.model_fields_set if k in ReaderOptions.model_fields}
        return ReaderOptions.model_validate({**{k: getattr(defaults, k) for k in ReaderOptions.model_fields}, **own})


def _as_source(item: Any) -> Any:
    return {"path": item} if isinstance(item, str) else item


def _plain(source: Source) -> str | dict[str, Any]:
    """A source as params.yaml spells it: a path alone as a string."""
    return source.path if source.model_fields_set == {"path"} else source.model_dump(mode="json")


SOURCES_IN = str | Source | list[str | Source] | None  # how params.yaml may spell a split's sources


def source_list(spec: list[Source] | Source | None) -> list[Source]:
    return spec if isinstance(spec, list) else [spec] if spec else []


class DataParams(ReaderOptions):
    """Step `data`: which corpus, and how to read it into the canonical dataset."""

    train: list[Source] | None = Field(f"{CONLL_EN}/train.txt", description=(
        "the train split: a file, an HF dataset folder, pkg:<package>/<path> inside an installed package, "
        "{hub: <dataset id>, name: <config>}, or a list of these (several corpora, e.g. languages, at once: "
        "each {path|hub, source: <name>, format, scheme, columns ...})"))
    validation: list[Source] | None = Field(f"{CONLL_EN}/valid.txt", description="the validation (dev) split (as train)")
    test: list[Source] | None = Field(f"{CONLL_EN}/test.txt", description="the test split (as train)")
    path: Source | None = Field(None, description=(
        "one source holding every split (an HF DatasetDict folder, a Hub dataset) or one file split by "
        "split_ratios with split_seed; when set it wins over train/validation/test"))
    split_ratios: SplitRatios = Field(default_factory=SplitRatios, description="shares for data.path split by ratio")
    split_seed: int = Field(42, description="seed of the ratio split")
    validation_share: float | None = Field(None, gt=0, lt=1, description=(
        "with validation null: this share of the train source, drawn with split_seed, is the validation split "
        "(corpora with train and test files only, as NSMC)"))
    task: Task = Field(TOKEN, description=(
        "what the corpus is labelled for: token-classification (a tag per token, NER) | text-classification "
        "(a label per text); the dataset records it and every later step follows it"))
    level: Literal["auto", "word", "char"] = Field(
        "auto", description="word | char (tokens are characters, as in KLUE-NER); auto: char for KLUE files")
    max_sentences: int | None = Field(None, ge=1, description="keep only the first N sentences of each split (null = all)")

    @field_validator("train", "validation", "test", mode="before", json_schema_input_type=SOURCES_IN)
    @classmethod
    def _split_sources(cls, value: Any) -> Any:
        if value is None or value == []:
            return None
        return [_as_source(v) for v in value] if isinstance(value, list) else [_as_source(value)]

    @field_validator("path", mode="before", json_schema_input_type=str | Source | None)
    @classmethod
    def _path_source(cls, value: Any) -> Any:
        return _as_source(value)

    @field_serializer("train", "validation", "test")
    def _dump_split(self, value: list[Source] | None) -> Any:
        if not value:
            return None
        return _plain(value[0]) if len(value) == 1 else [_plain(v) for v in value]

    @field_serializer("path")
    def _dump_path(self, value: Source | None) -> Any:
        return None if value is None else _plain(value)

    @model_validator(mode="after")
    def _sources(self):
        if not self.path:
            missing = [s for s in ("train", "validation", "test") if not source_list(getattr(self, s))
                       and not (s == "validation" and self.validation_share)]
            if missing:
                raise ValueError(f"no source for {', '.join(missing)}: name a file for each split, or set data.path")
        if self.validation_share and (self.path or source_list(self.validation)):
            raise ValueError("validation_share carves validation out of train: leave data.validation (and data.path) unset")
        return self


# ------------------------------------------------------------------------- validate


class Check(Section):
    severity: Severity = Field("error", description="error (stops the run) | warning (reported) | off")

    @field_validator("severity", mode="before")
    @classmethod
    def _yaml_off(cls, value: Any) -> Any:
        return "off" if value is False else value  # YAML 1.1 reads a bare `off` as false


class WarningCheck(Check):
    severity: Severity = Field("warning", description="error (stops the run) | warning (reported) | off")


class SentenceLength(Check):
    max_tokens: int = Field(1000, ge=1, description="longest sentence allowed, in tokens")


class FlaggedShare(WarningCheck):
    max_fraction: float = Field(0.1, ge=0, le=1, description="share of flagged rows above which the check fails")


class SubtokenOverflow(FlaggedShare):
    max_fraction: float = Field(0.01, ge=0, le=1, description="share of sentences over max_length above which the check fails")


class FlaggedShareWithError(FlaggedShare):
    error_fraction: float = Field(0.5, ge=0, le=1, description=(
        "share of flagged rows above which the run stops, whatever the severity (unless the check is off)"))

    @model_validator(mode="after")
    def _ordered(self):
        if self.error_fraction < self.max_fraction:
            raise ValueError(f"error_fraction {self.error_fraction} is below max_fraction {self.max_fraction}")
        return self


class Duplicates(FlaggedShareWithError):
    max_fraction: float = Field(0.15, ge=0, le=1, description="share of duplicate sentences above which the check fails")


class Leakage(FlaggedShareWithError):
    max_fraction: float = Field(0.10, ge=0, le=1, description="share of dev/test sentences in train above which the check fails")


class ControlCharacters(FlaggedShareWithError):
    max_fraction: float = Field(0.0, ge=0, le=1, description=(
        "share of tokens holding such a character above which the check fails (0: any token is reported)"))
    error_fraction: float = Field(0.001, ge=0, le=1, description=(
        "share of tokens holding such a character above which the run stops, whatever the severity (a corpus "
        "of mojibake; WNUT-17's dev file has 4 zero-width spaces in 15,733 tokens: 0.03%)"))


class MinEntities(WarningCheck):
    min_count: int = Field(10, ge=0, description="fewest train entities of every type")


class TypeDrift(WarningCheck):
    max_distance: float = Field(0.25, ge=0, le=1, description="largest total variation distance of type shares")


class RareLabels(Check):
    min_count: int = Field(3, ge=1, description="fewest train examples a label may have (fewer: a typo, "
                                               "as a stray 3 in a 0/1 column)")


class ClassBalance(WarningCheck):
    max_ratio: float = Field(10.0, ge=1, description="largest over smallest class count allowed in a split")


class ClassDrift(WarningCheck):
    max_distance: float = Field(0.1, ge=0, le=1, description="largest total variation distance of class shares")


class LengthOutliers(WarningCheck):
    iqr_factor: float = Field(3.0, gt=0, description="a sentence longer than Q3 + iqr_factor * IQR is an outlier")
    max_fraction: float = Field(0.01, ge=0, le=1, description="share of outliers above which the check fails")


class Checks(Section):
    lengths_match: Check = Field(default_factory=Check, description="as many tags as tokens")
    sentence_length: SentenceLength = Field(default_factory=SentenceLength, description="1 to max_tokens tokens")
    empty_token: Check = Field(default_factory=Check, description="no empty token")
    control_characters: ControlCharacters = Field(default_factory=ControlCharacters, description=(
        "no whitespace, control (C0/C1), format or other non-printing character inside a token"))
    tag_format: Check = Field(default_factory=Check, description="every tag is O, B-<type> or I-<type>")
    iob2: Check = Field(default_factory=Check, description="valid IOB2: an I-X follows B-X or I-X")
    labels_in_train: Check = Field(default_factory=Check, description="every dev/test label occurs in train")
    duplicates: Duplicates = Field(default_factory=Duplicates,
                                   description="duplicate sentences within a split (CoNLL-2003 train: 9.6%)")
    leakage: Leakage = Field(default_factory=Leakage, description="dev/test sentences also in train (CoNLL-2003 dev: 5.9%)")
    min_entities_per_type: MinEntities = Field(default_factory=MinEntities, description="enough train entities per type")
    type_drift: TypeDrift = Field(default_factory=TypeDrift, description="entity type shares: dev/test vs train")
    length_outliers: LengthOutliers = Field(default_factory=LengthOutliers, description="unusually long sentences")
    subtoken_overflow: SubtokenOverflow = Field(
        default_factory=SubtokenOverflow, description=(
            "sentences over max_length sub-tokens (windowed by preprocess, never cut); texts to classify over it "
            "(cut to head and tail as preprocess.truncation says)"))
    # text classification (token classification skips these; text classification skips the token checks)
    empty_text: Check = Field(default_factory=Check, description="text classification: no empty or null text")
    label_set: Check = Field(default_factory=Check, description="text classification: every label is in "
                                                                  "data.label_names (when set)")
    rare_labels: RareLabels = Field(default_factory=RareLabels, description=(
        "text classification: every label has at least min_count train examples (a typo otherwise)"))
    class_balance: ClassBalance = Field(default_factory=ClassBalance, description=(
        "text classification: largest / smallest class count per split"))
    class_drift: ClassDrift = Field(default_factory=ClassDrift, description=(
        "text classification: class shares of dev/test vs train"))


class ValidateParams(Section):
    """Step `validate`: the Great Expectations suite and its thresholds."""

    fail_on_error: bool = Field(True, description="false: report failed error checks but let the run go on")
    tokenizer: str | None = Field(DEFAULT_MODEL, description="counts sub-tokens against max_length (null: skip)")
    max_length: int = Field(128, ge=8, description="sub-tokens per window (as preprocess.max_length)")
    drift_reference: str | None = Field(
        None, description="results.json of an earlier validation: type drift is also measured against it")
    checks: Checks = Field(default_factory=Checks, description="one entry per check: severity and thresholds")


# ----------------------------------------------------------------------- preprocess


class PreprocessParams(Section):
    """Step `preprocess`: sub-word tokenization and label alignment."""

    model: str = Field(DEFAULT_MODEL, description="a local HF model folder or pkg: path (its tokenizer is used)")
    max_length: int = Field(128, ge=8, le=8192, description="sub-tokens per window, specials included")
    stride: int = Field(32, ge=0, description="sub-tokens shared by consecutive windows of a long sentence")
    label_all_subtokens: bool = Field(False, description="label every sub-token (else the first of each word)")
    context: Literal["document", "sentence"] = Field("document", description=(
        "document: consecutive sentences of one document (CoNLL -DOCSTART-) share a window up to max_length, "
        "each the others' context (fewer, fuller windows); evaluate and nerflow predict read test the same "
        "way. sentence: a window per sentence. Corpora without documents are read by sentence either way"))
    trim_vocabulary: bool = Field(True, description=(
        "keep only the sub-words the corpus uses (plus specials and its characters): the embedding matrix "
        "shrinks to them (multilingual encoders: 250k rows to a few 10k); new text still tags, a character "
        "the corpus never had becomes <unk>"))

    truncation: Literal["head_tail", "head"] = Field("head_tail", description=(
        "text classification: a text over max_length keeps its first head_share of the budget and its end "
        "(head_tail) or only its start (head); preprocess reports how many texts were cut"))
    head_share: float = Field(0.25, ge=0, le=1, description="head_tail: the share of max_length kept from the start")

    @model_validator(mode="after")
    def _stride_fits(self):
        if self.stride >= self.max_length // 2:
            raise ValueError(f"stride {self.stride} must be below half of max_length {self.max_length}")
        return self


# ---------------------------------------------------------------------------- train


class Resources(Section):
    cpu: str = Field("2", description="CPU request of the KFP train task")
    memory: str = Field("8G", description="memory request of the KFP train task")
    gpus: int = Field(0, ge=0, description="GPUs for the KFP train task")
    accelerator: str = Field("nvidia.com/gpu", description="accelerator type of those GPUs")
    processes: int = Field(0, ge=0, description="training processes in the KFP train task, launched by torchrun "
                                                "when more than one (0: one per GPU, or 1 without GPUs)")

    def nproc(self) -> int:
        """How many processes the train task runs (torchrun's --nproc_per_node)."""
        return self.processes or max(self.gpus, 1)


class TrainParams(Section):
    """Step `train`: fine-tuning with the Trainer."""

    model: str = Field(DEFAULT_MODEL, description="the encoder to fine-tune (same as preprocess.model)")
    seed: int = Field(42, description="seed of weights init, shuffling and dropout")
    epochs: float = Field(1, gt=0, description="passes over the train split")
    max_steps: int = Field(-1, ge=-1, description="> 0 overrides epochs")
    batch_size: int = Field(8, ge=1, description="windows per batch per device (with document context a window holds several sentences)")
    learning_rate: float = Field(1.0e-4, gt=0, description="encoder learning rate")
    head_learning_rate: float | None = Field(3.0e-3, gt=0, description="the new classifier head (null: learning_rate)")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay (not on biases and norms)")
    warmup_steps: int = Field(100, ge=0, description="linear warm-up steps of the learning rate")
    lr_scheduler: Literal["linear", "cosine", "cosine_with_restarts", "polynomial", "constant",
                          "constant_with_warmup", "inverse_sqrt"] = Field("linear", description="learning-rate schedule")
    gradient_accumulation_steps: int = Field(1, ge=1, description="batches per optimizer step")
    group_by_length: bool = Field(True, description="length-grouped batches: far less padding")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field("auto", description=(
        "auto: bf16 on CPUs with AMX/AVX512-BF16 and on CUDA with bf16, fp16 on older CUDA, else fp32"))
    optimizer: Literal["foreach", "fused"] = Field("foreach", description="AdamW implementation")
    layers: int | None = Field(6, ge=1, description=(
        "keep at most the encoder's bottom N transformer layers (fewer FLOPs: training and serving cost about "
        "N/L of the whole encoder's; an encoder with N or fewer keeps all; null: every layer). 6: the default "
        "encoder's bottom half; on CoNLL-2003 test F1 0.8850 against 0.8907 with all 12 (per-batch int8, one seed; "
        "0.8874 with the all-int8 export, fp32's F1), "
        "trained 1.8x as fast (bench/benchmark.py --variant layers=null; bench/RESULTS.md); set null for an "
        "encoder whose depth you need"))
    freeze_embeddings: bool = Field(False, description="keep the (large) embedding matrix fixed")
    freeze_layers: int = Field(0, ge=0, description=(
        "keep the embeddings and the encoder's bottom N layers fixed: no backward pass through them (fewer "
        "FLOPs to train; the served model keeps every layer)"))
    attention_dropout: float | None = Field(0.0, ge=0, lt=1, description=(
        "dropout on the attention probabilities while training (null: the encoder's own, 0.1 for BERT-likes). "
        "0 lets PyTorch's fused attention kernel run in training: on CPU it trained 1.2-1.3x faster per "
        "sentence, test F1 within one seed's noise (CoNLL-2003: -0.36 points with 12 layers, +0.30 with 6); "
        "the other dropouts stay as the encoder has them"))
    torch_compile: bool = Field(False, description="torch.compile the model (pays off on long GPU runs)")
    decoding: Literal["viterbi", "argmax"] = Field("viterbi", description=(
        "how the trained model's tags are read (evaluate, predict, the service; recorded with the model): "
        "viterbi: the most probable IOB2-valid sequence (no I-X after O or another type); argmax: each word's "
        "most probable tag"))
    runtime: Literal["auto", "onnx", "onnx-int8", "torch"] = Field("auto", description=(
        "the inference runtime the trained model is exported for: evaluate scores it, the registry records it "
        "and the service runs it (onnx: ONNX Runtime, fp32, the same F1 as torch; onnx-int8: every MatMul in "
        "int8, weights per channel and activations per token (the feed-forward outputs' GELU inputs with a zero "
        "point per token), about 1.5x fp32's speed on CPUs, test F1 as fp32's on the main job's model; auto: "
        "scored on the dev split against fp32, int8 kept when it loses at most int8_max_drop, first every MatMul "
        "int8, then the feed-forward outputs in fp32 (1.3x fp32's speed), else fp32; torch: transformers as "
        "trained). GPUs serve torch"))
    int8_max_drop: float = Field(0.003, ge=0, le=1, description=(
        "runtime auto: the most dev F1 (0-1) int8 may lose against the fp32 export and still be chosen"))
    dataloader_workers: int = Field(0, ge=0, description="> 0 on CUDA machines; pinned memory is used on CUDA")
    threads: int | None = Field(None, ge=1, description="CPU threads for torch (null: torch's default)")
    eval_each_epoch: bool = Field(True, description="dev F1 after every epoch")
    keep_best: bool = Field(True, description="end with the checkpoint of the best dev F1")
    early_stopping_patience: int = Field(0, ge=0, description="evaluations without a better dev F1 before stopping (0: off)")
    save_steps: int = Field(0, ge=0, description="also checkpoint every N steps (0: at epochs only)")
    resume: bool = Field(True, description="a killed run resumes from its last checkpoint when rerun with the same params")
    logging_steps: int = Field(50, ge=1, description="training loss logged (and plotted) every N steps",
                               json_schema_extra=NOT_OUTCOME)
    progress: bool = Field(True, description=(
        "show training progress: a bar on a terminal, else a plain line every NERFLOW_PROGRESS_SECONDS (30 s)"), json_schema_extra=NOT_OUTCOME)
    resources: Resources = Field(default_factory=Resources, description="KFP train task requests",
                                 json_schema_extra=NOT_OUTCOME)

    @model_validator(mode="after")
    def _patience_needs_evaluation(self):
        if self.early_stopping_patience and not self.eval_each_epoch:
            raise ValueError("early_stopping_patience needs eval_each_epoch: true")
        return self


# ------------------------------------------------------------------------- evaluate


class TestSet(ReaderOptions):
    __test__ = False  # not a pytest class
    name: str = Field(min_length=1, description="name of the test set in the metrics table")
    path: str = Field(min_length=1, description="a file or HF dataset folder")


class EvaluateParams(Section):
    """Step `evaluate`: seqeval scores and error analysis."""

    batch_size: int = Field(64, ge=1, description="sentences per inference batch")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field("auto", description="inference precision (as train)")
    scheme: Literal["default", "strict"] = Field(
        "default", description="default (conlleval-compatible) | strict (IOB2); both are always in metrics.json")
    top_loss_sentences: int = Field(50, ge=0, description="error analysis: how many highest-loss sentences the report shows")
    test_sets: list[TestSet] = Field(default_factory=list, description="more named test sets scored into one table")

    @field_validator("test_sets")
    @classmethod
    def _unique_names(cls, value: list[TestSet]) -> list[TestSet]:
        names = [t.name for t in value]
        dup = {n for n in names if names.count(n) > 1 or n == "test"}
        if dup:
            raise ValueError(f"test set name(s) used twice or reserved: {', '.join(sorted(dup))}")
        return value


# ----------------------------------------------------------------- registry, gate, package


class RegistryParams(Section):
    """The model registry (the BentoML store) shared by register, gate and package."""

    model_name: str = Field("nerflow-ner", pattern=r"^[a-z0-9][a-z0-9._-]*$",
                            description="name in the BentoML model store; every trained model is kept as a candidate")
    bentoml_home: str = Field(".bentoml", description="BentoML model and Bento store (used when $BENTOML_HOME is unset)")


class Bootstrap(Section):
    samples: int = Field(1000, ge=100, description="paired bootstrap resamples over test sentences")
    seed: int = Field(13, description="seed of the resampling")
    confidence: float = Field(0.95, ge=0.5, lt=1,
                              description="share of resamples in which the challenger must be ahead by > min_delta")


class GateParams(Section):
    """Step `gate`: champion/challenger; promote only a model that is better, not just good."""

    metric: Literal["f1", "accuracy", "macro_f1"] = Field("f1", description=(
        "what the gate compares: f1 (token classification: micro entity F1; text classification: metrics.json's f1, "
        "the positive (second) class's F1 for two classes, macro F1 for more) | macro_f1 | accuracy (text classification)"))
    min_f1: float = Field(0.80, ge=0, le=1.01, description="the gate metric's value the challenger must reach "
                                                           "(test F1, micro, entity level, by default)")
    default_type_min_f1: float = Field(0.0, ge=0, le=1, description="F1 floor for every type (class) not in type_min_f1")
    type_min_f1: dict[str, float] = Field(default_factory=dict, description="per-type (text classification: per-class) "
                                                                            "F1 floors, e.g. {PER: 0.85}")
    max_type_regression: float = Field(0.02, ge=0, le=1,
                                       description="no type's F1 may drop more than this below the champion's")
    min_delta: float = Field(0.0, ge=0, description="the challenger's F1 must exceed the champion's by more than this")
    scheme: Literal["default", "strict"] = Field("default", description="seqeval mode for the comparison")
    bootstrap: Bootstrap = Field(default_factory=Bootstrap, description="paired bootstrap over test sentences")

    @field_validator("type_min_f1")
    @classmethod
    def _floors(cls, value: dict[str, float]) -> dict[str, float]:
        bad = {k: v for k, v in value.items() if not 0 <= v <= 1}
        if bad:
            raise ValueError(f"floors must be between 0 and 1: {bad}")
        return value


class Deploy(Section):
    """The Kubernetes manifests written for the production model (nerflow.release.deploy)."""

    image_registry: str = Field("", description="where the serving images are pushed, e.g. ghcr.io/team ('': "
                                                "the local image name); the image is <registry>/<model tag>")
    namespace: str = Field("default", min_length=1, description="Kubernetes namespace of the Deployment")
    min_replicas: int = Field(2, ge=1, description="replicas at least (HorizontalPodAutoscaler)")
    max_replicas: int = Field(6, ge=1, description="replicas at most")
    target_cpu_percent: int = Field(70, ge=1, le=100, description="average CPU use the autoscaler aims at")
    cpu: str = Field("2", description="CPU request and limit of a replica")
    memory: str = Field("4Gi", description="memory request and limit of a replica")
    termination_grace_seconds: int = Field(150, ge=10, description="time a stopping replica has to answer what "
                                                                    "it has (above the 120 s request timeout)")
    token_secret: str | None = Field(None, description="a Secret whose key `token` is the API's bearer token, "
                                                      "mounted as NERFLOW_API_TOKEN_FILE (null: no auth)")

    @model_validator(mode="after")
    def _replicas_ordered(self):
        if self.max_replicas < self.min_replicas:
            raise ValueError(f"max_replicas ({self.max_replicas}) is below min_replicas ({self.min_replicas})")
        return self


class PackageParams(Section):
    """Step `package`: the promoted model's Bento and its Kubernetes manifests."""

    build_bento: bool = Field(True, description="build a Bento from serving/ for each promoted model")
    bento_base_image: str | None = Field(None, description="base image of the Bento's container (null: BentoML's "
                                                           "python:3.11-slim; without a registry: nerflow-bento-base:bookworm)")
    deploy: Deploy = Field(default_factory=Deploy, description=Deploy.__doc__)


class Params(Section):
    """params.yaml: one section per step."""

    data: DataParams = Field(default_factory=DataParams, description=DataParams.__doc__)
    validate_: ValidateParams = Field(default_factory=ValidateParams, alias="validate", description=ValidateParams.__doc__)
    preprocess: PreprocessParams = Field(default_factory=PreprocessParams, description=PreprocessParams.__doc__)
    train: TrainParams = Field(default_factory=TrainParams, description=TrainParams.__doc__)
    evaluate: EvaluateParams = Field(default_factory=EvaluateParams, description=EvaluateParams.__doc__)
    registry: RegistryParams = Field(default_factory=RegistryParams, description=RegistryParams.__doc__)
    gate: GateParams = Field(default_factory=GateParams, description=GateParams.__doc__)
    package: PackageParams = Field(default_factory=PackageParams, description=PackageParams.__doc__)

    model_config = ConfigDict(extra="forbid", validate_default=True, frozen=True, populate_by_name=True)

    def section(self, name: str) -> Section:
        return getattr(self, "validate_" if name == "validate" else name)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)

    @model_validator(mode="after")
    def _one_model(self):
        if self.preprocess.model != self.train.model:
            raise ValueError(f"preprocess.model ({self.preprocess.model}) and train.model ({self.train.model}) "
                             "differ: the features must come from the tokenizer of the model trained")
        return self


SECTIONS: dict[str, type[Section]] = {
    "data": DataParams, "validate": ValidateParams, "preprocess": PreprocessParams, "train": TrainParams,
    "evaluate": EvaluateParams, "registry": RegistryParams, "gate": GateParams, "package": PackageParams,
}

S = TypeVar("S", bound=Section)


# --------------------------------------------------------------------- errors, loading


def _model_at(model: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The model class that holds the key at ``loc`` (for suggestions)."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        field = current.model_fields.get(part) or next(
            (f for f in current.model_fields.values() if f.alias == part), None)
        if field is None:
            return None
        ann = field.annotation
        args = getattr(ann, "__args__", ())
        inner = next((a for a in (ann, *args) if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if inner is None:
            inner = next((b for a in args for b in getattr(a, "__args__", ())
                          if isinstance(b, type) and issubclass(b, BaseModel)), None)
        current = inner
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _keys_of(model: type[BaseModel]) -> list[str]:
    return [f.alias or name for name, f in model.model_fields.items()]


def _path(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (("." if out else "") + str(part).rstrip("_"))
    return out


def describe_errors(exc: ValidationError, root: type[BaseModel], prefix: str = "",
                    lines: dict[str, int] | None = None, file: str | None = None) -> str:
    """One line per problem: ``file:line: key.path: problem`` with a suggestion for unknown keys."""
    out = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        path = ".".join(p for p in (prefix, _path(loc)) if p)
        if err["type"] == "extra_forbidden":
            parent = _model_at(root, loc[:-1])
            known = _keys_of(parent) if parent else []
            close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6)
            parent_path = path.rsplit(".", 1)[0] if "." in path else ""
            hint = f"; did you mean {parent_path + '.' if parent_path else ''}{close[0]}?" if close else (
                f"; known keys: {', '.join(known)}" if known else "")
            msg = f"{path}: unknown key{hint}"
        elif err["type"] == "missing":
            msg = f"{path}: required key missing"
        else:
            text = err["msg"].removeprefix("Value error, ")
            given = err.get("input")
            shown = "" if isinstance(given, (dict, list)) or given is None and err["type"] != "none_not_allowed" else f" (given {given!r})"
            msg = f"{path}: {text}{shown}"
        where, line = "", None
        if file:
            line = (lines or {}).get(path) or _nearest_line(lines or {}, path)
            where = f"{file}:{line}: " if line else f"{file}: "
        out.append((line if file and line else 0, where + msg))
    return "\n".join(text for _, text in sorted(out, key=lambda item: item[0]))


def _nearest_line(lines: dict[str, int], path: str) -> int | None:
    while "." in path:
        path = path.rsplit(".", 1)[0]
        if path in lines:
            return lines[path]
    return lines.get(path)


def _key_lines(text: str) -> dict[str, int]:
    """{dotted key path: 1-based line} for every mapping key in a YAML document."""
    out: dict[str, int] = {}

    def walk(node, prefix: str) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                path = f"{prefix}.{key.value}" if prefix else str(key.value)
                out.setdefault(path, key.start_mark.line + 1)
                walk(value, path)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                out.setdefault(f"{prefix}[{i}]", item.start_mark.line + 1)
                walk(item, f"{prefix}[{i}]")

    try:
        walk(yaml.compose(text), "")
    except yaml.YAMLError:
        pass
    return out


def parse_params(raw: Any, file: str | None = None, text: str | None = None) -> Params:
    if not isinstance(raw, dict):
        raise NerflowError(f"{file or 'params'}: expected a mapping with one section per step")
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        raise NerflowError("invalid params:\n" + describe_errors(
            exc, Params, lines=_key_lines(text) if text else None, file=file)) from None


def load_params(path: str | Path = "params.yaml") -> Params:
    """params.yaml, validated: every section with every key (a missing key takes its default)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise NerflowError(f"{path}: params file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise NerflowError(f"{path}: cannot read params: {exc}") from None
    return params_from_text(text, str(path))


def params_from_text(text: str, file: str) -> Params:
    """A params file's text, validated; ``file`` names it in every error."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise NerflowError(f"{file}: not valid YAML: {exc}") from None
    return parse_params(raw if raw is not None else {}, file, text)


def section(cls: type[S], params: S | dict[str, Any] | None, name: str | None = None) -> S:
    """A typed section from a typed one (as is), a dict (validated) or None (the defaults)."""
    if isinstance(params, cls):
        return params
    if isinstance(params, BaseModel):
        params = params.model_dump()
    name = name or next((k for k, v in SECTIONS.items() if v is cls), cls.__name__)
    try:
        return cls.model_validate(params or {})
    except ValidationError as exc:
        raise NerflowError("invalid params:\n" + describe_errors(exc, cls, prefix=name)) from None


def outcome_keys(name: str) -> list[str]:
    """The dotted keys of a section that change its step's result (for DVC's params deps):
    every top-level key but those marked outcome=False."""
    cls = SECTIONS[name]
    keys = []
    for key, field in cls.model_fields.items():
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        if extra.get("outcome", True):
            keys.append(f"{name}.{field.alias or key}")
    return keys


def json_schema() -> dict[str, Any]:
    return Params.model_json_schema(by_alias=True)
