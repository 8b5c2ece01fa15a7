"""Models and datasets named by their Hugging Face Hub id.

``preprocess.model``/``train.model`` and ``validate.tokenizer`` take a local folder, a
``pkg:`` path, or a Hub model id (``xlm-roberta-base``, ``org/name``, optionally
``@revision``); a data source takes ``{hub: <dataset id>, name: <config>}``. Online they
download as usual (huggingface_hub's cache, ``$HF_HOME``); with ``HF_HUB_OFFLINE=1`` they
resolve from that cache, and one that is not there fails with one line saying what to do.
Nothing here sets offline mode: that is the user's (or the tests') choice.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from nerflow import NerflowError
from nerflow.core.assets import asset_path
from nerflow.core.paths import resolve_path

# Heavy libraries (datasets) are imported inside the functions that use them, on purpose:
# the CLI starts without them and a step loads only what it runs.

# owner/name or a bare legacy name, as the Hub spells them; "@revision" optional
HUB_ID = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*(?:/[A-Za-z0-9][\w.-]*)?)(?:@(?P<revision>[\w./-]+))?$")
# what a model folder needs (the weights as safetensors where the repo has them)
MODEL_FILES = ["*.json", "*.safetensors", "*.txt", "*.model", "tokenizer*", "vocab*", "merges*", "*spiece*"]


def split_id(spec: str) -> tuple[str, str | None] | None:
    """(repo id, revision) when ``spec`` reads as a Hub id, else None."""
    match = HUB_ID.match(spec)
    if not match or spec.startswith(".") or "//" in spec or spec.endswith((".txt", ".conll", ".jsonl", ".parquet")):
        return None
    return match["repo"], match["revision"]


def offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _missing(kind: str, repo: str, key: str, exc: Exception) -> NerflowError:
    from huggingface_hub import constants
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if offline() or isinstance(exc, LocalEntryNotFoundError):
        flag = "--repo-type dataset " if kind == "dataset" else ""
        return NerflowError(
            f"{key}: {kind} {repo!r} is not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and the Hub is not "
            f"reachable (HF_HUB_OFFLINE={'1' if offline() else 'unset'}): download it once online "
            f"(`hf download {flag}{repo}`), or name a local folder")
    if isinstance(exc, RevisionNotFoundError):
        return NerflowError(f"{key}: {kind} {repo!r} has no such revision on the Hugging Face Hub")
    if isinstance(exc, GatedRepoError):
        return NerflowError(f"{key}: {kind} {repo!r} is gated: accept its terms on the Hub and log in (`hf auth login`)")
    if isinstance(exc, RepositoryNotFoundError):
        return NerflowError(f"{key}: no local path {repo!r}, and no {kind} of that id on the Hugging Face Hub")
    return NerflowError(f"{key}: cannot fetch {kind} {repo!r} from the Hugging Face Hub: {exc}")


def model_path(spec: str | Path, key: str = "model") -> Path:
    """A local folder for a model spec: a ``pkg:`` path or an existing path as it is, a Hub id
    from the Hub (or, offline, the cache)."""
    spec = str(spec)
    if spec.startswith("asset:"):  # an embedded encoder built from PyPI packages (nerflow.core.assets)

        return asset_path(spec)
    parent = Path(spec).parent
    # models/typo (its folder exists): a local path, not an "owner/name" id
    local = spec.startswith("pkg:") or Path(spec).exists() or (parent != Path(".") and parent.exists())
    parsed = None if local else split_id(spec)
    if parsed is None:
        return resolve_path(spec)
    repo, revision = parsed
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.errors import (
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
    )

    try:
        ignore = None
        if not offline():  # one format of weights: safetensors where the repo has them
            files = [s.rfilename for s in HfApi().model_info(repo, revision=revision).siblings or []]
            ignore = ["*.bin", "*.h5", "*.msgpack", "*.onnx", "*.ot"] if any(f.endswith(".safetensors") for f in files) else None
        patterns = MODEL_FILES + ([] if ignore else ["pytorch_model*.bin"])
        return Path(snapshot_download(repo, revision=revision, allow_patterns=patterns, ignore_patterns=ignore))
    except (HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled, OSError) as exc:
        raise _missing("model", repo, key, exc) from None


def load_dataset(hub: str, name: str | None, key: str = "data"):
    """A Hub dataset (a ``DatasetDict`` of its splits) by id[@revision] and config name. Online
    through ``datasets.load_dataset``; offline from datasets' own cache of an earlier load, else
    from the dataset's files in the Hub cache."""
    import datasets

    parsed = split_id(hub)
    if parsed is None:
        raise NerflowError(f"{key}: {hub!r} is not a Hugging Face Hub dataset id (owner/name[@revision])")
    repo, revision = parsed
    try:
        return datasets.load_dataset(repo, name, revision=revision)
    except ValueError as exc:  # an unknown config name, ...
        raise NerflowError(f"{key}: {repo}: {exc}") from None
    except Exception as exc:  # noqa: BLE001  - offline without datasets' cache: try the Hub cache
        first: Exception = exc
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
    )

    try:
        folder = snapshot_download(repo, repo_type="dataset", revision=revision, local_files_only=True)
    except (HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled, OSError):
        raise _missing("dataset", repo, key, first) from None
    try:
        return datasets.load_dataset(folder, name)
    except ValueError as exc:
        raise NerflowError(f"{key}: {repo}: {exc}") from None


def describe(source: Any) -> str:
    """How a Hub source is named in manifests and errors: ``hub:<id>[/<config>]``."""
    return f"hub:{source.hub}" + (f"/{source.name}" if source.name else "")
