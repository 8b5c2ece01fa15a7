"""BentoML service for the production model, of either task: the model's nerflow.json says
which (``task``: token-classification, the default, or text-classification).

    POST /extract      {"texts": ["..."]}                -> NER: entities per text: type, text, start, end, score
    POST /tag_tokens   {"sentences": [["tok", ...]]}     -> NER: a tag and score per token, and the entities
    POST /classify     {"texts": ["..."]}                -> text classification: label, score, every class's
                                                            probability and whether the text was cut, per text
    POST /model_info   {}                                -> task, tag, metrics, labels, data version, limits
    GET  /ui/          a page: type a text, see its entities highlighted by type, or its label and
                       every class's probability (no CDN, works offline)
    GET  /healthz /livez /readyz /metrics               BentoML's health, readiness and Prometheus metrics

An endpoint of the other task answers 400 and names the right one. The prediction endpoints
are adaptively batched across requests. For NER, long texts are cut into overlapping windows
and every word is tagged, never truncated; a classified text longer than the model's
max_length is cut as in training (head and tail) and its answer says ``truncated``. Requests
over the limits (texts or sentences per request, characters per text, tokens per sentence)
get a 400 that names the limit; a body over NERFLOW_MAX_REQUEST_BYTES a 413 before it is read. With
NERFLOW_API_TOKEN (or NERFLOW_API_TOKEN_FILE) every endpoint but health, readiness, metrics and
the page's files needs ``Authorization: Bearer <token>``. /metrics carries
``nerflow_model_info{model_tag=...}``. SIGTERM drains: requests in flight are answered, open
connections are closed after their next answer (NERFLOW_DRAIN_SECONDS), then the worker stops.
The batching polls its queue every NERFLOW_BATCH_POLL_MS (nerflow.release.patches.install_batch_poll).

Which model: ``NERFLOW_MODEL_TAG`` if set (a built Bento sets it), else the registry's
production model (``nerflow registry show``). From the repo root:

    bentoml serve serving.service:ModelService --port 3000
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import bentoml
from bentoml.exceptions import InvalidArgument
from bentoml.validators import ContentType
from pydantic import BaseModel, Field

try:
    import nerflow  # noqa: F401  (installed in development)
except ImportError:  # inside a Bento: the library travels as src/nerflow
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from nerflow.core.inference import read_model_info  # noqa: E402
from nerflow.core.runtime import OnnxModel  # noqa: E402
from nerflow.release.guard import RequestGuard, api_token, max_request_bytes  # noqa: E402
from nerflow.release.patches import (  # noqa: E402
    batch_poll_ms,
    install_balance,
    install_batch_poll,
    install_client_error_filter,
    install_drain,
    publish_served_model,
)
from nerflow.tasks.base import TEXT, TOKEN  # noqa: E402
from nerflow.tasks.text.classify import TextClassifier  # noqa: E402
from nerflow.tasks.token.predict import WordTagger, entities_from_tags, tag_texts  # noqa: E402

MAX_ITEMS = int(os.environ.get("NERFLOW_MAX_ITEMS", "32"))  # texts or sentences in one request
MAX_TEXT_CHARS = int(os.environ.get("NERFLOW_MAX_TEXT_CHARS", "20000"))  # characters in one text
MAX_TOKENS = int(os.environ.get("NERFLOW_MAX_TOKENS", "4000"))  # tokens in one pre-tokenized sentence
MAX_TOKEN_CHARS = int(os.environ.get("NERFLOW_MAX_TOKEN_CHARS", "200"))  # characters in one token
STATIC = Path(__file__).resolve().parent / "static"


def _workers() -> int:
    """One worker process per core (up to 4), each with its own model and one torch thread: on
    2 cores this served 182 one-text requests/s at 16 clients against 120 for one worker with
    two threads (HTTP handling and inference no longer fight over one process's cores and GIL).
    On a GPU, one worker. NERFLOW_WORKERS overrides."""
    if os.environ.get("NERFLOW_WORKERS"):
        return max(1, int(os.environ["NERFLOW_WORKERS"]))
    if os.environ.get("CUDA_VISIBLE_DEVICES", "") not in ("", "-1") or Path("/dev/nvidia0").exists():
        return 1
    return max(1, min(os.cpu_count() or 1, 4))


WORKERS = _workers()


def resolve_model_tag() -> str:
    """NERFLOW_MODEL_TAG; else, served from a Bento, the model it was built with (bentoml serve
    does not apply a Bento's envs outside its container); else the registry's production model."""
    tag = os.environ.get("NERFLOW_MODEL_TAG")
    if tag:
        return tag
    manifest = Path.cwd().parent / "bento.yaml"  # bentoml serve <bento> imports the service from <bento>/src
    if Path.cwd().name == "src" and manifest.is_file():
        import yaml

        models = yaml.safe_load(manifest.read_text(encoding="utf-8")).get("models") or []
        if models:
            return str(models[0]["tag"])
    from nerflow.release.registry import Registry

    registry = Registry(os.environ.get("NERFLOW_MODEL_NAME") or _registry_name())
    tag = registry.production()
    if tag is None:
        raise RuntimeError(f"no production model in the registry at {registry.state_path}: run the pipeline "
                           "(make run) or `nerflow registry promote <tag>`, or set NERFLOW_MODEL_TAG")
    return tag


def _registry_name() -> str:
    """The registry the project's params.yaml names (registry.model_name: nerflow-ner, or a text
    classifier's), read from the current folder; nerflow-ner without one."""
    params = Path.cwd() / "params.yaml"
    if params.is_file():
        from nerflow.core.config import load_params

        return load_params(params).registry.model_name
    return "nerflow-ner"


MODEL_TAG = resolve_model_tag()

Text = Annotated[str, Field(max_length=MAX_TEXT_CHARS)]
Token = Annotated[str, Field(min_length=1, max_length=MAX_TOKEN_CHARS)]
Sentence = Annotated[list[Token], Field(min_length=1, max_length=MAX_TOKENS)]


class Entity(BaseModel):
    type: str
    text: str
    start: int = Field(description="offset of the first character in Unicode code points, as Python's text[start:end] "
                                   "counts (not UTF-16 units as JavaScript strings count: an emoji is 1); /tag_tokens: "
                                   "index of the first token")
    end: int = Field(description="offset after the last character in Unicode code points; /tag_tokens: index after "
                                 "the last token")
    score: float = Field(description="mean probability of the entity's tags")


class TaggedSentence(BaseModel):
    tags: list[str]
    scores: list[float]
    entities: list[Entity]


class Classification(BaseModel):
    label: str
    score: float = Field(description="probability of the label")
    scores: dict[str, float] = Field(description="probability of every class")
    truncated: bool = Field(description="the text was over the model's max_length sub-tokens and was cut "
                                        "(its head and tail kept, as in training)")


class ModelInfo(BaseModel):
    task: str = Field(description="token-classification (/extract, /tag_tokens) or text-classification (/classify)")
    tag: str
    labels: list[str]
    level: str
    base_model: str
    data_version: str
    git_revision: str
    metrics: dict
    created: str
    limits: dict
    workers: int
    batch_poll_ms: float = Field(description="ms between two looks of the adaptive batching at its queue "
                                             "(NERFLOW_BATCH_POLL_MS), as this worker's BentoML runs it")
    runtime: str = Field("torch", description="the inference runtime: onnx-int8, onnx or torch (nerflow.core.runtime)")
    truncation: dict = Field(default_factory=dict, description="text classification: max_length (sub-tokens), "
                                                              "how longer texts are cut, head_share")


JSON = ContentType("application/json")


def _static_app():
    from starlette.applications import Starlette
    from starlette.routing import Mount
    from starlette.staticfiles import StaticFiles

    return Starlette(routes=[Mount("/", app=StaticFiles(directory=str(STATIC), html=True))])


@bentoml.asgi_app(_static_app(), path="/ui")
@bentoml.service(traffic={"timeout": 120, "max_concurrency": 256}, workers=WORKERS)
class ModelService:
    model_ref = bentoml.models.BentoModel(MODEL_TAG)

    def __init__(self) -> None:
        import torch

        torch.set_num_threads(int(os.environ.get("NERFLOW_TORCH_THREADS") or max(1, (os.cpu_count() or 1) // WORKERS)))
        # the predictor of the model's task (its nerflow.json says which), not the task's whole package:
        # a worker loads what serving needs and nothing of training, validation or evaluation
        self.task = read_model_info(self.model_ref.path).get("task", TOKEN)
        self.model = (TextClassifier if self.task == TEXT else WordTagger)(self.model_ref.path)
        stored = getattr(self.model_ref, "stored", self.model_ref)  # resolved to the stored Model in a worker
        publish_served_model(str(stored.tag))
        meta = stored.info.metadata
        metrics = dict(meta.get("metrics") or {})
        text = self.task == TEXT
        keep = ("accuracy", "macro_f1", "f1", "precision", "recall", "per_class", "split") if text else \
            ("f1", "precision", "recall", "per_type", "scheme", "split")
        self.info = ModelInfo(
            task=self.task, tag=str(stored.tag), labels=self.model.labels,
            level="text" if text else self.model.info.get("level", "word"),
            base_model=str(meta.get("base_model", self.model.info.get("base_model", ""))),
            data_version=str(meta.get("data_hash", self.model.info.get("content_hash", ""))),
            git_revision=str(meta.get("git_revision", "")),
            metrics={k: metrics[k] for k in keep if k in metrics},
            created=str(stored.info.creation_time),
            limits={"items_per_request": MAX_ITEMS, "characters_per_text": MAX_TEXT_CHARS,
                    "tokens_per_sentence": MAX_TOKENS, "characters_per_token": MAX_TOKEN_CHARS},
            workers=WORKERS,
            batch_poll_ms=batch_poll_ms(),
            runtime="torch" if not isinstance(self.model.model, OnnxModel) else self.model.info["runtime"],
            truncation={"max_length": self.model.max_length, "mode": self.model.truncation,
                        "head_share": self.model.head_share} if text else {},
        )
        self._warm_up()

    def _warm_up(self) -> None:
        """One prediction before this worker reports ready, so that its first requests do not pay
        the lazy imports (entity grouping imports seqeval, which imports scikit-learn, scipy and
        pandas: 9 s on 2 busy cores, seen as a new worker's first requests waiting 8.8 s) and the
        runtime's first-run allocations."""
        import logging
        import time

        started = time.perf_counter()
        if self.task == TEXT:
            self.model.predict(["Warm-up text."])
        else:
            tag_texts(self.model, ["Warm-up: Ada Lovelace met Charles Babbage in London."])
        logging.getLogger("bentoml").info("ModelService worker warmed up in %.1f s", time.perf_counter() - started)

    def _require(self, task: str) -> None:
        if self.task == task:
            return
        if task == TEXT:
            raise InvalidArgument(f"the served model {self.info.tag} is a {TOKEN} (NER) model: use /extract or "
                                  "/tag_tokens; /classify serves text-classification models")
        raise InvalidArgument(f"the served model {self.info.tag} is a {TEXT} model: use /classify; /extract and "
                              "/tag_tokens serve token-classification (NER) models")

    # Every answer is JSON. Said with ContentType, BentoML does not build the output's JSON schema
    # again for every response to find its media type (5% of a worker's time under load).
    # Adaptive batching: requests are merged into batches of up to 64 texts. The latency
    # bound is generous: a tight one makes BentoML shed load with 503s (seen at 100 ms with
    # 16 clients); the batch is cut as soon as the model is free anyway.
    @bentoml.api(batchable=True, max_batch_size=64, max_latency_ms=60_000)
    def extract(self, texts: Annotated[list[Text], Field(min_length=1, max_length=MAX_ITEMS)]) -> Annotated[list[list[Entity]], JSON]:
        """NER: entities in each text: type, surface text, start/end (Unicode code points into that text), score."""
        self._require(TOKEN)
        return [[Entity(**{k: e[k] for k in Entity.model_fields}) for e in ents] for ents in tag_texts(self.model, texts)]

    @bentoml.api(batchable=True, max_batch_size=64, max_latency_ms=60_000)
    def tag_tokens(self, sentences: Annotated[list[Sentence], Field(min_length=1, max_length=MAX_ITEMS)]) -> Annotated[list[TaggedSentence], JSON]:
        """NER, pre-tokenized input: a tag (IOB2) and its probability for every token, and the
        entities with token indices (start inclusive, end exclusive)."""
        self._require(TOKEN)
        try:
            tags, probs = self.model.predict(sentences)
        except ValueError as exc:  # words sent to a character-level model
            raise InvalidArgument(str(exc)) from None
        out = []
        for words, t, p in zip(sentences, tags, probs):
            ents = [Entity(type=e["type"], text=e["text"], start=e["start_word"], end=e["end_word"], score=e["score"])
                    for e in entities_from_tags(words, t, p)]
            out.append(TaggedSentence(tags=t, scores=[round(float(x), 4) for x in p], entities=ents))
        return out

    @bentoml.api(batchable=True, max_batch_size=64, max_latency_ms=60_000)
    def classify(self, texts: Annotated[list[Text], Field(min_length=1, max_length=MAX_ITEMS)]) -> Annotated[list[Classification], JSON]:
        """Text classification: per text, the label, its probability, every class's probability, and
        whether the text was over the model's max_length (then cut as in training: head and tail)."""
        self._require(TEXT)
        return [Classification.model_construct(**r) for r in self.model.predict(texts)]

    @bentoml.api
    def model_info(self) -> ModelInfo:
        """The served model: task, tag, test metrics, labels, data version, git revision, limits."""
        return self.info


# in front of every endpoint: the request size limit (413) and, with NERFLOW_API_TOKEN(_FILE), bearer
# auth (401; /livez /readyz /healthz /metrics and the page's files stay open); client errors logged
# as one warning line (nerflow.release.guard)
ModelService.add_asgi_middleware(RequestGuard, token=api_token(), max_bytes=max_request_bytes())
install_client_error_filter()
install_batch_poll()  # before the first request: each worker's dispatcher polls its queue every NERFLOW_BATCH_POLL_MS
install_drain()  # SIGTERM: keep-alive connections are closed after their next answer, not dropped
install_balance(WORKERS)  # the workers' keep-alive connections stay evenly spread
