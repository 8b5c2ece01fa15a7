"""Batching that keeps padding low, for every runtime and task: windows sorted by length cut into
batches (``plan_batches``), and consecutive sentences of one document packed into one window
(``pack_documents``)."""

from __future__ import annotations

from typing import Sequence


def plan_batches(lengths: Sequence[int], max_rows: int, overhead_tokens: int) -> list[tuple[int, int]]:
    """Cut windows sorted by length into batches (start, end) of at most ``max_rows``,
    minimising the padded tokens computed plus ``overhead_tokens`` for every batch (a forward
    pass costs about that much on its own). One long window no longer pads a whole batch."""
    n = len(lengths)
    best = [0.0] + [float("inf")] * n
    cut = [0] * (n + 1)
    for end in range(1, n + 1):
        width = lengths[end - 1]  # sorted: the last row is the widest
        for start in range(max(0, end - max_rows), end):
            cost = best[start] + overhead_tokens + (end - start) * width
            if cost < best[end]:
                best[end], cut[end] = cost, start
    bounds, end = [], n
    while end > 0:
        bounds.append((cut[end], end))
        end = cut[end]
    return bounds[::-1]


def pack_documents(documents: Sequence[tuple], counts: Sequence[int], budget: int) -> list[list[int]]:
    """Consecutive sentences of one document in windows of at most ``budget`` sub-tokens: the
    groups of sentence indices, in order. ``documents`` holds a key per sentence (source,
    document); a key whose document is -1 (no document) keeps its sentence alone, and so does a
    sentence over the budget (encode_words windows it). Sentences keep their order, so
    concatenating the groups gives every sentence once."""
    groups: list[list[int]] = []
    size, key = 0, None
    for i, (doc, n) in enumerate(zip(documents, counts)):
        alone = doc[-1] < 0
        if groups and not alone and doc == key and size + n <= budget:
            groups[-1].append(i)
            size += n
        else:
            groups.append([i])
            size, key = n, (None if alone else doc)
    return groups
