"""The parts of the reports every task writes: the confusion matrix as a DVC plot
(``confusion.csv``, one row per scored unit) and as a picture (``confusion.png``), and the HTML
pages, rendered from jinja2 templates that share one stylesheet."""

from __future__ import annotations

import csv
import functools
from pathlib import Path
from typing import Any, Iterable, Sequence

import jinja2
import numpy as np

# Heavy libraries (matplotlib) are imported inside the functions that use them, on purpose:
# the CLI starts without them and a step loads only what it runs.

TEMPLATES = Path(__file__).parent / "templates"  # page.html.j2 and style.css, which every page shares


@functools.lru_cache
def _environment(folder: Path | None) -> jinja2.Environment:
    """The jinja2 environment that looks templates up in ``folder`` and then in the core folder
    (so a task's template can extend ``page.html.j2``). Every value is HTML-escaped unless
    marked safe; an undefined name is an error, not an empty string. A block tag's own line
    leaves no newline behind (trim_blocks, lstrip_blocks), and the template's last newline is
    kept (a page ends with one, a fragment ends with ``-#}`` to drop it)."""
    folders = [folder, TEMPLATES] if folder is not None and folder != TEMPLATES else [TEMPLATES]
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader([str(f) for f in folders]),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def render(template: str, folder: Path | None = None, **context: Any) -> str:
    """``template`` from ``folder`` (a package's ``templates/``; the core folder when None or
    when not found there) rendered with ``context``."""
    return _environment(None if folder is None else Path(folder)).get_template(template).render(**context)


def write_confusion(folder: Path, pairs: Iterable[tuple[str, str]], matrix: list[list[int]], labels: Sequence[str]) -> None:
    """``confusion.csv`` (a row per (actual, predicted) pair: DVC's confusion template counts rows)
    and ``confusion.png`` (the matrix, row-normalised) in ``folder``."""
    with open(folder / "confusion.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["actual", "predicted"])
        writer.writerows(pairs)
    confusion_png(matrix, labels, folder / "confusion.png")


def confusion_png(matrix: list[list[int]], labels: Sequence[str], path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = np.asarray(matrix, dtype=float)
    rows = m.sum(1, keepdims=True)
    norm = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
    size = max(5.0, 0.6 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size * 0.85))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=90)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    ax.set_title("Token confusion (row-normalised; numbers are counts)")
    if len(labels) <= 30:
        for i in range(len(labels)):
            for j in range(len(labels)):
                if m[i, j]:
                    ax.text(j, i, f"{int(m[i, j])}", ha="center", va="center", fontsize=7,
                            color="white" if norm[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
