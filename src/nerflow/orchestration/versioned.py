"""Inputs at a git revision, read through DVC: what makes a KFP run reproducible from
(repository, revision) alone.

A KFP run names a git repository (a local path, ``file://``, or ``https://`` URL) and a
revision (a commit, branch or tag). Its params file and every corpus source that is a path
inside the repository are read at that revision with ``dvc.api.DVCFileSystem``: a file DVC
tracks comes from the DVC remote (the repository's default remote at that revision, or the one
given), a file git tracks from git. ``pkg:`` sources come from the installed package (pinned by
the image) and absolute paths from the machine that runs the step; both are read as they are
and their content is hashed, so the data version still names them. A Hub dataset is named by its
id, configuration and revision (pin ``@<commit>`` for a reproducible run).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import tempfile
import threading
from pathlib import Path
from typing import Any, Iterator

from nerflow import NerflowError
from nerflow.core.config import (
    SECTIONS,
    DataParams,
    Params,
    Source,
    params_from_text,
    section,
    source_list,
)
from nerflow.core.hub import describe
from nerflow.core.paths import resolve_path
from nerflow.steps.data import prepare_data

# Heavy libraries (dvc) are imported inside the functions that use them, on purpose:
# the CLI starts without them and a step loads only what it runs.

SOURCE_KEYS = ("path", "train", "validation", "test")


def repo_url(repo: str) -> str:
    """A local repository as a ``file://`` URL (DVC then clones it: the checkout is only read,
    never written); any URL as it is."""
    if "://" in repo or repo.startswith("git@"):
        return repo
    path = Path(repo).expanduser().resolve()
    if not (path / ".git").exists():
        raise NerflowError(f"{repo}: not a git repository (no .git)")
    return path.as_uri()


_open_count = 0
_open_lock = threading.Lock()


@contextlib.contextmanager
def _clones() -> Iterator[None]:
    """DVC clones the repository (and makes a cache folder for it) in the temporary folder and
    keeps both for the process's life; only its command line removes them (``clean_repos``).
    Removed here when the last open repository closes, so a scheduled retrain or a long-lived
    process leaves nothing behind."""
    global _open_count
    with _open_lock:
        _open_count += 1
    try:
        yield
    finally:
        with _open_lock:
            _open_count -= 1
            if _open_count == 0:
                from dvc.repo.open_repo import clean_repos

                clean_repos()


@contextlib.contextmanager
def opened(repo: str, revision: str, remote: str | None = None) -> Iterator[Any]:
    """The repository at ``revision`` as a DVC file system; ``remote``: a DVC remote URL that
    replaces the repository's default one (a local folder here, s3://... on a cluster)."""
    from dvc.api import DVCFileSystem
    from dvc.exceptions import (
        DvcException,  # an unknown revision, not a repository, ...
    )

    kwargs = {"remote_config": {"url": remote}} if remote else {}
    with _clones():
        try:
            fs = DVCFileSystem(repo_url(repo), rev=revision or "HEAD", **kwargs)
            fs.ls("/", detail=False)
        except (DvcException, OSError, ValueError) as exc:
            raise NerflowError(f"{repo}@{revision}: cannot open the repository at that revision: {exc}") from None
        try:
            yield fs
        finally:  # close git's pack files now, not in the interpreter's shutdown (which prints errors)
            for close in (fs.repo.scm.close, fs.repo.close, fs.close):
                with contextlib.suppress(Exception):
                    close()


def commit_of(fs) -> str:
    """The commit the file system reads (a branch or tag resolved)."""
    return fs.repo.get_rev()


def _read_params(fs, repo: str, params_file: str) -> tuple[Params, str]:
    commit = commit_of(fs)
    name = f"{repo}@{commit[:12]}:{params_file}"
    try:
        text = fs.read_text(params_file, encoding="utf-8")
    except FileNotFoundError:
        raise NerflowError(f"{name}: params file not found at that revision") from None
    return params_from_text(text, name), commit


def read_params(repo: str, revision: str, params_file: str = "params.yaml", remote: str | None = None) -> tuple[Params, str]:
    """The params file at ``revision``, validated; and the commit it was read at."""
    with opened(repo, revision, remote) as fs:
        return _read_params(fs, repo, params_file)


def source(repo: str, revision: str, params_file: str = "params.yaml", remote: str | None = None) -> dict[str, Any]:
    """The first step of a KFP run, from one look at the repository: the commit ``revision``
    names now, the data version there, and each params section as JSON text (train without its
    resources, which are compiled into the train task, not an input of it)."""
    with opened(repo, revision, remote) as fs:
        params, commit = _read_params(fs, repo, params_file)
        version = data_version(params.data, fs)
    sections = {name: params.section(name).to_dict() for name in SECTIONS}
    sections["train"].pop("resources")
    return {"commit": commit, "data_version": version, "sections": {k: json.dumps(v, sort_keys=True) for k, v in sections.items()}}


def _sources(p: DataParams) -> list[tuple[str, int, Source]]:
    """(key, position, source) of each corpus source the data section names: ``path`` when
    set, else each split's."""
    keys = ("path",) if p.path else SOURCE_KEYS[1:]
    return [(key, i, src) for key in keys for i, src in enumerate(source_list(getattr(p, key)))]


def _versioned(spec: str | None) -> bool:
    """A corpus source read through the repository (a relative path), not as it is."""
    return bool(spec) and not spec.startswith("pkg:") and not Path(spec).is_absolute()


def _version(src: Source, fs) -> tuple[str, str]:
    """(name, version) of one source."""
    if src.hub:

        return describe(src), "hub:" + src.hub
    return src.path, _hash_in_repo(fs, src.path) if _versioned(src.path) else _hash_local(src.path)


def _hash_local(spec: str) -> str:

    root = resolve_path(spec)
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")) if root.is_dir() else [root]:
        if path.is_file():
            digest.update(str(path.relative_to(root) if root.is_dir() else path.name).encode())
            with open(path, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
    return "sha256:" + digest.hexdigest()


def _hash_in_repo(fs, spec: str) -> str:
    """A source's version without reading it: DVC's md5 for a DVC-tracked file or folder,
    the sha256 of git's copy otherwise."""
    try:
        info = fs.info(spec)
    except FileNotFoundError:
        raise NerflowError(f"{spec}: no such file or folder in the repository at that revision") from None
    if info.get("md5"):
        return "md5:" + info["md5"]
    digest = hashlib.sha256()
    files = sorted(fs.find(spec)) if info["type"] == "directory" else [spec]
    for path in files:
        digest.update(path.encode())
        digest.update(fs.read_bytes(path))
    return "sha256:" + digest.hexdigest()


def dvc_tracked(params: DataParams | dict[str, Any], fs) -> list[str]:
    """The corpus sources the data section names that DVC tracks at the file system's revision:
    those a run reads from the DVC remote (git-tracked, ``pkg:``, absolute and Hub sources do not)."""
    def tracked(path: str) -> bool:
        # the source or a folder above it is a DVC output (a file inside a tracked folder is only
        # found through the folder's listing, which lives in the remote: ask its folders)
        for part in [path, *(str(parent) for parent in Path(path).parents if str(parent) != ".")]:
            try:
                if "dvc_info" in fs.info(part):
                    return True
            except Exception:  # noqa: BLE001  (not there, or its listing is not readable here)
                continue
        return False

    p = section(DataParams, params)
    return [src.path for _, _, src in _sources(p) if not src.hub and _versioned(src.path) and tracked(src.path)]


def data_version(params: DataParams | dict[str, Any], fs) -> dict[str, Any]:
    """The data params and a version of each source they name (read from DVC's records, not
    downloaded), and their hash: equal versions mean equal data."""
    p = section(DataParams, params)
    sources = dict(_version(src, fs) for _, _, src in _sources(p))
    body = {"params": p.to_dict(), "sources": sources}
    return {**body, "hash": hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()}


def prepare_data_at(params: DataParams | dict[str, Any], repo: str, revision: str, out_dir: str | Path,
                    remote: str | None = None, expected_version: str | None = None) -> dict[str, Any]:
    """Step `data` on the KFP path: the corpus sources inside the repository are read through
    DVC at ``revision`` into a scratch folder, then the canonical dataset is written as by
    :func:`nerflow.steps.data.prepare_data`, its manifest recording the repository, commit and each
    source's version. ``expected_version``: the data version the run planned with; if the
    revision (a branch) moved to different data since, the step stops instead of mixing."""
    p = section(DataParams, params)
    with opened(repo, revision, remote) as fs, tempfile.TemporaryDirectory(prefix="nerflow-corpus-") as scratch:
        commit = commit_of(fs)
        version = data_version(p, fs)
        if expected_version and version["hash"] != expected_version:
            raise NerflowError(f"{repo}@{revision}: the data changed since this run started (now at {commit[:12]}); "
                               "run the pipeline again")
        local = p.to_dict()
        names = {}
        for key, i, src in _sources(p):
            spec = src.path
            if not _versioned(spec):
                continue
            target = Path(scratch) / spec
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                if fs.isdir(spec):
                    fs.get(spec, str(target), recursive=True)
                else:
                    fs.get_file(spec, str(target))
            except Exception as exc:  # a remote without the file, missing credentials, ...
                raise NerflowError(f"{spec}: cannot read it at {commit[:12]} from the DVC remote: {exc}") from None
            local_src = {**src.model_dump(mode="json"), "path": str(target)}
            if key == "path":
                local[key] = local_src
            else:
                local[key] = [*local[key]] if isinstance(local[key], list) else [local[key]]
                local[key][i] = local_src
            names[str(target)] = f"{spec}@{commit[:12]}"
        origin = {"repo": repo, "revision": revision, "commit": commit, "data_version": version["hash"],
                  "sources": version["sources"]}
        manifest = prepare_data(local, out_dir, origin=origin, source_names=names)
    return manifest
