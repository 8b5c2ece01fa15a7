"""Write outputs to a temporary sibling and rename into place: a failed step leaves the
previous output untouched and never a half-written one.

The temporary's name holds the writer's pid (``.NAME.tmp-PID-XXXX``): a process killed while
writing leaves its temporary behind, and the next write of the same target removes it, and
only the leftovers of processes that no longer run (a concurrent writer's are kept)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from nerflow import NerflowError


@contextlib.contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """Yield a fresh temporary directory; on success it replaces ``target``."""
    target = _prepare(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-{os.getpid()}-", dir=target.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it private; outputs are ordinary folders
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if target.exists():
        old = target.parent / f".{target.name}.old-{os.getpid()}"
        os.rename(target, old)
    os.rename(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink()


@contextlib.contextmanager
def atomic_file(target: str | Path, mode: str = "w") -> Iterator[Any]:
    """Open a temporary sibling of ``target`` for writing; on success rename it over ``target``."""
    target = _prepare(target)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.tmp-{os.getpid()}-", dir=target.parent)
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as fh:
            yield fh
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; outputs are ordinary files
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _prepare(target: str | Path) -> Path:
    """Make the target's folder; remove what killed writers of the target left: temporaries
    (``.NAME.tmp-PID-...``) and set-aside previous outputs (``.NAME.old-PID``)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    leftover = re.compile(rf"\.{re.escape(target.name)}\.(?:tmp-(\d+)-.*|old-(\d+))")
    for path in target.parent.iterdir():
        match = leftover.fullmatch(path.name)
        if match and not _running(int(match.group(1) or match.group(2))):
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() and not path.is_symlink() else path.unlink(missing_ok=True)
    return target


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:  # it does, as another user's
        pass
    return True


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(target: str | Path, obj: Any) -> None:
    with atomic_file(target) as fh:
        json.dump(obj, fh, indent=2, sort_keys=False, default=_json_default)
        fh.write("\n")


def _json_default(obj: Any) -> Any:
    # numpy scalars (seqeval and torch give these) -> plain Python numbers
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def read_json(path: str | Path) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def read_records(path: str | Path, keys: tuple[str, ...], what: str = "predictions record") -> list[dict[str, Any]]:
    """The JSON Lines records of ``path``, each checked to hold ``keys``."""
    out = []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            try:
                row = json.loads(line)
                missing = next((k for k in keys if k not in row), None)
            except (json.JSONDecodeError, TypeError) as exc:
                raise NerflowError(f"{path}:{n}: not a {what} ({exc})") from None
            if missing is not None:
                raise NerflowError(f"{path}:{n}: not a {what} (no {missing!r})")
            out.append(row)
    return out
