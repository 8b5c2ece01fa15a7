"""Reading params.yaml and resolving the paths it names."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import yaml

from nerflow import NerflowError

STEPS = ("data", "validate", "preprocess", "train", "evaluate", "registry", "gate", "package")


def load_params(path: str | Path = "params.yaml") -> dict[str, Any]:
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as fh:
            params = yaml.safe_load(fh) or {}
    except FileNotFoundError:
        raise NerflowError(f"{path}: params file not found") from None
    except yaml.YAMLError as exc:
        raise NerflowError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(params, dict):
        raise NerflowError(f"{path}: expected a mapping with one section per step")
    missing = [s for s in STEPS if not isinstance(params.get(s), dict)]
    if missing:
        raise NerflowError(f"{path}: missing section(s): {', '.join(missing)}")
    return params


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
    if not path.exists():
        raise NerflowError(f"{spec}: no such file or directory ({path})")
    return path


def project_root() -> Path:
    """The project folder (holding serving/ and params.yaml): the source checkout this package
    was installed from in development or in the container image, else the current directory."""
    here = Path(__file__).resolve().parents[2]
    return here if (here / "serving" / "bentofile.yaml").exists() else Path.cwd()


def bentoml_home(package_params: dict[str, Any]) -> str:
    """$BENTOML_HOME if set, else ``package.bentoml_home`` relative to the project root."""
    import os

    if os.environ.get("BENTOML_HOME"):
        return os.environ["BENTOML_HOME"]
    home = Path(package_params.get("bentoml_home", ".bentoml"))
    return str(home if home.is_absolute() else project_root() / home)
