"""Paths the params name, and the process-wide settings every entry point applies.

The params themselves (types, defaults, validation) are in nerflow.core.config.
"""

from __future__ import annotations

import errno
import importlib.util
import os
from pathlib import Path
from typing import Any

from nerflow import NerflowError
from nerflow.core.config import Params, RegistryParams, load_params, section
from nerflow.core.progress import quiet_library_bars

__all__ = ["load_params", "resolve_path", "project_root", "bentoml_home", "configure"]


def resolve_path(spec: str | Path, base: str | Path | None = None) -> Path:
    """Turn a params path into a real path.

    ``pkg:<package>/<relative path>`` names a file or folder inside an installed Python
    package (how the embedded model and corpus are referenced); anything else is a path,
    relative to ``base`` (default: the current directory).
    """
    spec = str(spec)
    if spec.startswith("pkg:"):
        package, _, rel = spec[4:].partition("/")
        found = importlib.util.find_spec(package)
        if found is None or not found.submodule_search_locations:
            raise NerflowError(
                f"{spec}: package {package!r} is not installed (see README: make install)"
            )
        path = Path(list(found.submodule_search_locations)[0]) / rel
    else:
        path = Path(spec)
        if base is not None and not path.is_absolute():
            path = Path(base) / path
    try:
        path.stat()
    except FileNotFoundError:
        if path.is_symlink():
            raise NerflowError(f"{spec}: a symbolic link to a missing file ({path} -> {os.readlink(path)})") from None
        raise NerflowError(f"{spec}: no such file or directory ({path})") from None
    except OSError as exc:  # ELOOP: a symlink loop; EACCES; ...
        what = "a symbolic link loop" if exc.errno == errno.ELOOP else exc.strerror
        raise NerflowError(f"{spec}: {what} ({path})") from None
    return path


def project_root() -> Path:
    """The project folder (holding serving/ and params.yaml): the source checkout this package
    was installed from in development or in the container image, else the current directory."""
    here = Path(__file__).resolve().parents[2]
    return here if (here / "serving" / "bentofile.yaml").exists() else Path.cwd()


def bentoml_home(registry: RegistryParams | dict[str, Any] | None) -> str:
    """$BENTOML_HOME if set, else ``registry.bentoml_home`` relative to the project root."""
    if os.environ.get("BENTOML_HOME"):
        return os.environ["BENTOML_HOME"]
    home = Path(section(RegistryParams, registry).bentoml_home)
    return str(home if home.is_absolute() else project_root() / home)


def configure(registry: RegistryParams | dict[str, Any] | Params | None = None) -> None:
    """The one place process-wide settings are made, by every entry point (CLI, KFP
    components, pipeline runner) before a step runs: the registry's BentoML store, quiet
    libraries. Hub access is left as the caller set it (HF_HUB_OFFLINE): the embedded default
    reads local folders only, and a Hub id downloads, or offline resolves from the cache."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    quiet_library_bars()  # a log gets nerflow's progress lines, not the libraries' bars
    if registry is not None:
        os.environ["BENTOML_HOME"] = bentoml_home(registry.registry if isinstance(registry, Params) else registry)
