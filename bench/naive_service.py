"""The load test's baseline: a plain transformers pipeline behind one non-batched endpoint,
each request run on its own as it arrives (what a first service usually looks like).

    NERFLOW_MODEL_DIR=<HF model folder> bentoml serve bench.naive_service:NaiveNER --port 3001
"""

from __future__ import annotations

import os

import bentoml


@bentoml.service(traffic={"timeout": 120}, workers=1)
class NaiveNER:
    def __init__(self) -> None:
        from transformers import pipeline

        self.pipe = pipeline("token-classification", model=os.environ["NERFLOW_MODEL_DIR"], aggregation_strategy="simple",
                             device="cpu")

    @bentoml.api
    def extract(self, texts: list[str]) -> list[list[dict]]:
        return [[{"type": e["entity_group"], "text": e["word"], "start": int(e["start"]), "end": int(e["end"]),
                  "score": float(e["score"])} for e in self.pipe(text)] for text in texts]
