"""The documentation: the parameters reference is generated from the typed configuration (every
key of nerflow.core.config.Params is on the page, and a key the model loses leaves it), the CLI
reference from the parser, and every page under docs/ is in mkdocs.yml's nav. `make docs` (run
by `make test`) builds the whole site strictly; these tests need no build."""

from __future__ import annotations

import importlib.util
import re
import typing
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel, Field, create_model

from nerflow.core.config import Params, Section, TrainParams

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


@pytest.fixture(scope="module")
def hooks():
    spec = importlib.util.spec_from_file_location("nerflow_docs_hooks", DOCS / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _models(tp) -> list[type[BaseModel]]:
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [tp]
    return [m for arg in typing.get_args(tp) for m in _models(arg)]


def keys_of(model: type[BaseModel], seen: set | None = None) -> set[str]:
    """Every key name of ``model`` and of the models its fields hold, at any depth."""
    seen = set() if seen is None else seen
    keys = set()
    for name, field in model.model_fields.items():
        keys.add(field.alias or name)
        for sub in _models(field.annotation):
            if sub not in seen:
                seen.add(sub)
                keys |= keys_of(sub, seen)
    return keys


def named_keys(page: str) -> set[str]:
    """The keys the page names in code spans, by their last dotted part (`train.epochs` -> epochs)."""
    return {code.rsplit(".", 1)[-1] for code in re.findall(r"`([\w.\[\]-]+)`", page)}


def test_the_params_reference_names_every_key_of_the_model(hooks):
    page = hooks.params_reference()
    sections = set(re.findall(r"^## (\w+)$", page, re.MULTILINE))
    missing = keys_of(Params) - named_keys(page) - sections
    assert not missing, f"keys of Params missing from the generated reference: {sorted(missing)}"
    for section, field in Params.model_fields.items():  # every section, and each of its keys as a dotted path
        name = field.alias or section
        assert f"## {name}\n" in page
        (model,) = _models(field.annotation)
        for key, sub in model.model_fields.items():
            assert f"`{name}.{sub.alias or key}`" in page
    assert "`validate.checks.duplicates.error_fraction`" in page  # nested sections too
    assert "`train.resources.gpus`" in page


def test_a_key_removed_from_the_model_leaves_the_params_reference(hooks):
    """The page is generated from the model, not copied: a model without train.epochs gives a page
    without it, and with every other key."""
    kept = {name: (field.annotation, field) for name, field in TrainParams.model_fields.items() if name != "epochs"}
    train = create_model("TrainParams", __base__=Section, __doc__=TrainParams.__doc__, **kept)
    fields = {name: (field.annotation, field) for name, field in Params.model_fields.items() if name != "train"}
    root = create_model("Params", __base__=Section, **fields,
                        train=(train, Field(default_factory=train, description=TrainParams.__doc__)))
    page = hooks.params_reference(root)
    assert "`train.epochs`" not in page
    assert "`train.seed`" in page and "`train.max_steps`" in page and "`data.task`" in page
    assert "`train.epochs`" in hooks.params_reference()


def test_the_params_reference_shows_defaults_and_ranges(hooks):
    rows = {row.split(" | ")[0].strip("| `"): row for row in hooks.params_reference().splitlines() if row.startswith("| `")}
    assert "`0.8`" in rows["gate.min_f1"] and "≤ 1.01" in rows["gate.min_f1"]
    assert "`asset:multilingual-e5-small`" in rows["train.model"]
    assert "re-runs no DVC stage" in rows["train.progress"]


def test_the_cli_reference_has_every_subcommand(hooks):
    from nerflow.cli.commands import _parser

    page = hooks.cli_reference()
    for name, _, sub in hooks._subcommands(_parser()):
        assert f"### `nerflow {name}`" in page
        for inner, _, _ in hooks._subcommands(sub):
            assert f"### `nerflow {name} {inner}`" in page


class _IgnoreTags(yaml.SafeLoader):
    """mkdocs.yml names Python objects (!!python/name:...): read them as plain text."""


_IgnoreTags.add_multi_constructor("tag:yaml.org,2002:python/", lambda loader, suffix, node: suffix)


def _nav_pages(nav) -> list[str]:
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, list):
        return [p for item in nav for p in _nav_pages(item)]
    if isinstance(nav, dict):
        return [p for value in nav.values() for p in _nav_pages(value)]
    return []


def test_every_page_under_docs_is_in_the_nav():
    config = yaml.load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"), Loader=_IgnoreTags)
    nav = _nav_pages(config["nav"])
    pages = sorted(str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md"))
    assert sorted(set(nav)) == pages, "docs/ pages and mkdocs.yml's nav differ"
    assert len(nav) == len(set(nav)), "a page is in the nav twice"
