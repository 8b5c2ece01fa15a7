"""Files in and out: text files read in a declared encoding, with errors that name the line,
and outputs written atomically.

Write outputs to a temporary sibling and rename into place: a failed step leaves the
previous output untouched and never a half-written one.

The temporary's name holds the writer's pid (``.NAME.tmp-PID-XXXX``): a process killed while
writing leaves its temporary behind, and the next write of the same target removes it, and
only the leftovers of processes that no longer run (a concurrent writer's are kept)."""

from __future__ import annotations

import codecs
import contextlib
import errno
import io
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


# ----------------------------------------------------------------------------- reading text files


def open_binary(path: Path):
    try:
        return open(path, "rb")
    except IsADirectoryError:
        raise NerflowError(f"{path}: is a directory, expected a file") from None
    except FileNotFoundError:
        raise NerflowError(f"{path}: no such file") from None
    except OSError as exc:
        problem = "symlink loop (a link that leads back to itself)" if exc.errno == errno.ELOOP else exc.strerror
        raise NerflowError(f"{path}: cannot read: {problem}") from None


BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF8, "utf-8-sig"),
        (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))
LINE_END = re.compile(r"\r\n|\r|\n")


def bom_encoding(head: bytes) -> str | None:
    return next((name for mark, name in BOMS if head.startswith(mark)), None)


def file_encoding(path: Path, head: bytes, encoding: str) -> str:
    """The codec to read with: the byte-order mark's, else ``encoding`` (UTF-8 with or without
    a BOM); a UTF-16 file without a BOM is refused rather than read as NUL-riddled text."""
    bom = bom_encoding(head)
    if bom:
        return bom
    even, odd = head[0::2], head[1::2]
    if not encoding.startswith(("utf-16", "utf-32")) and len(odd) >= 2:
        nul_even, nul_odd = even.count(0) / len(even), odd.count(0) / len(odd)
        if max(nul_even, nul_odd) > 0.3 and min(nul_even, nul_odd) < 0.05:
            order = "le" if nul_odd > nul_even else "be"
            raise NerflowError(f"{path}:1: looks like UTF-16 without a byte-order mark (a NUL byte every other byte): "
                               f"set data.encoding: utf-16-{order}, or convert the file to UTF-8")
    return "utf-8-sig" if encoding == "utf-8" else encoding


def decode_error(path: Path, encoding: str) -> NerflowError:
    """The first NUL byte or undecodable byte of the file, by line (the slow path, on error only)."""
    raw = path.read_bytes()
    try:
        raw.decode(encoding)
        bad = len(raw)
    except UnicodeDecodeError as exc:
        bad = exc.start
    nul = -1 if encoding.startswith(("utf-16", "utf-32")) else raw.find(b"\x00", 0, bad)
    at = nul if nul >= 0 else bad
    before = LINE_END.split(raw[:at].decode(encoding, errors="replace"))
    where = f"{path}:{len(before)}"
    if nul >= 0:
        return NerflowError(f"{where}: NUL byte (binary file?)")
    name = "UTF-8" if encoding.startswith("utf-8") else f"valid {encoding}"
    return NerflowError(f"{where}: not {name} (byte 0x{raw[bad]:02x}, column {len(before[-1]) + 1}): "
                        "set data.encoding to the file's encoding (e.g. latin-1, cp1252)")


def text_lines(path: str | Path, encoding: str = "utf-8") -> Iterator[tuple[int, str]]:
    """(1-based line number, line without its end) for each line of a text file. Lines end only
    at \\n, \\r\\n and \\r (not at U+2028, form feed, ... as ``str.splitlines`` would)."""
    path = Path(path)
    with open_binary(path) as fh:
        encoding = file_encoding(path, fh.read(4096), encoding)
        fh.seek(0)
        lineno = 0
        try:
            for lineno, line in enumerate(io.TextIOWrapper(fh, encoding=encoding, newline=""), start=1):
                line = line.rstrip("\r\n")
                if "\x00" in line:
                    raise NerflowError(f"{path}:{lineno}: NUL byte (binary file?)")
                yield lineno, line
        except UnicodeDecodeError:
            raise decode_error(path, encoding) from None
