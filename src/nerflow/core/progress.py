"""Progress for a person and for a log: a tqdm bar when stderr is a terminal; otherwise (a log
file, CI, a KFP pod, ``make run > log``) a plain line every ``NERFLOW_PROGRESS_SECONDS`` (30 s)
and one at the end, with the same information: done of total, share, rate, elapsed, time left
and the latest figures (a loss, say). A bar's carriage-return updates would fill a log with
tens of kB of half-lines.

Training (a Trainer callback in nerflow.steps.train), ``nerflow predict`` and validation use it.
"""

from __future__ import annotations

import os
import sys
import time
from typing import IO, Any

from nerflow import NerflowError

# tqdm is imported inside `progress`, on purpose: the CLI starts without it.

PERIOD_ENV = "NERFLOW_PROGRESS_SECONDS"
DEFAULT_PERIOD = 30.0


def on_terminal(stream: IO | None = None) -> bool:
    """Whether ``stream`` (stderr) is a terminal a bar can redraw."""
    stream = stream if stream is not None else sys.stderr
    return bool(getattr(stream, "isatty", lambda: False)())


def quiet_library_bars(enabled: bool = True, stream: IO | None = None) -> None:
    """Switch off the Hugging Face libraries' own bars ("Loading weights", downloads) off a terminal,
    or everywhere when progress is not ``enabled``: through the environment for libraries not
    imported yet, directly for those that are."""
    if enabled and on_terminal(stream):
        return
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "transformers.utils.logging" in sys.modules:
        sys.modules["transformers.utils.logging"].disable_progress_bar()
    if "huggingface_hub.utils" in sys.modules:
        sys.modules["huggingface_hub.utils"].disable_progress_bars()


def period() -> float:
    """Seconds between two progress lines (``NERFLOW_PROGRESS_SECONDS``; 0: a line per update)."""
    raw = os.environ.get(PERIOD_ENV)
    if raw is None:
        return DEFAULT_PERIOD
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise NerflowError(f"{PERIOD_ENV}={raw!r}: expected seconds between progress lines (a number >= 0)")
    return value


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


class Lines:
    """A progress report as plain lines: tqdm's ``update``, ``set_postfix``, ``close`` and
    context manager, so a loop does not care which of the two it holds."""

    def __init__(self, total: int | None, desc: str, unit: str, stream: IO | None = None, every: float | None = None):
        self.total, self.desc, self.unit = total, desc, unit
        self.stream = stream if stream is not None else sys.stderr
        self.every = period() if every is None else every
        self.n = 0
        self.postfix: dict[str, Any] = {}
        self.started = self.last = time.monotonic()
        self.closed = False

    def __enter__(self) -> "Lines":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def set_postfix(self, **figures: Any) -> None:
        self.postfix = figures

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            self.emit(now)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.emit(time.monotonic(), done=True)

    def line(self, now: float, done: bool = False) -> str:
        elapsed = now - self.started
        rate = self.n / elapsed if elapsed > 0 else 0.0
        parts = [f"{self.desc}: {self.n}" + (f"/{self.total}" if self.total else "") + f" {self.unit}"]
        if self.total:
            parts[0] += f" ({self.n / self.total:.0%})"
        parts.append(f"{rate:.2f} {self.unit}/s")
        parts.append(f"{_clock(elapsed)} elapsed")
        if self.total and not done and rate > 0:
            parts.append(f"{_clock((self.total - self.n) / rate)} left")
        parts += [f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in self.postfix.items()]
        return ", ".join(parts) + (" (done)" if done else "")

    def emit(self, now: float, done: bool = False) -> None:
        print(self.line(now, done), file=self.stream, flush=True)


def progress(total: int | None, desc: str, unit: str, enabled: bool = True, stream: IO | None = None):
    """A tqdm bar on a terminal, :class:`Lines` elsewhere, a silent bar when not ``enabled``."""
    from tqdm import tqdm

    stream = stream if stream is not None else sys.stderr
    if enabled and not on_terminal(stream):
        return Lines(total, desc, unit, stream)
    return tqdm(total=total, desc=desc, unit=unit, file=stream, disable=not enabled)
