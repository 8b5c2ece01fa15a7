"""BentoML service: raw texts in, entities out (type, text, character start/end, score).

Serve from the repo root:  NERFLOW_MODEL_TAG=nerflow-ner:<version> bentoml serve serving.service:NERService
or a built Bento:          bentoml serve nerflow_ner:<version>
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import bentoml
from pydantic import BaseModel

try:
    import nerflow  # noqa: F401  (installed in development)
except ImportError:  # inside a Bento: the library travels as src/nerflow
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from nerflow.predict import WordTagger, tag_texts  # noqa: E402

MODEL_TAG = os.environ.get("NERFLOW_MODEL_TAG", "nerflow-ner:latest")


class Entity(BaseModel):
    type: str
    text: str
    start: int
    end: int
    score: float
    start_word: int
    end_word: int


@bentoml.service(traffic={"timeout": 60})
class NERService:
    model_ref = bentoml.models.BentoModel(MODEL_TAG)

    def __init__(self) -> None:
        self.tagger = WordTagger(self.model_ref.path)

    @bentoml.api(batchable=True, max_batch_size=64, max_latency_ms=5000)
    def extract(self, texts: list[str]) -> list[list[Entity]]:
        """Entities found in each text; character offsets index into that text."""
        return [[Entity(**e) for e in ents] for ents in tag_texts(self.tagger, texts)]
