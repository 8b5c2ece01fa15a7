"""MkDocs hooks (mkdocs.yml ``hooks:``): the reference pages are generated from the code at build time.

A page under docs/ holds a marker, an HTML comment on a line of its own, that the build replaces:

- ``<!-- generated: params -->`` (reference/params.md): every key of ``nerflow.core.config.Params``,
  walked from the pydantic model: its type, range, default and Field description;
- ``<!-- generated: openapi -->`` (reference/api.md): the service's own OpenAPI schema
  (``serving/service.py``'s ``ModelService.openapi_spec``), each endpoint with its request and
  response schemas as tables;
- ``<!-- generated: cli -->`` (cli.md): the help of every ``nerflow`` subcommand, from the argparse
  parser of ``nerflow.cli.commands``; ``<!-- generated: pipeline -->``: ``pipeline.py``'s.

So the pages cannot drift from the code, and no generated copy is committed. The functions take
what they document as arguments where a test needs to vary it (``params_reference(root)``).
"""

from __future__ import annotations

import contextlib
import html
import inspect
import json
import os
import re
import subprocess
import sys
import tempfile
import types
import typing
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MARKER = re.compile(r"^<!-- generated: (\w+) -->$", re.MULTILINE)
HELP_COLUMNS = "100"  # argparse wraps help to $COLUMNS: fixed, so the pages do not depend on the terminal


def on_page_markdown(markdown: str, page, config, files) -> str:
    def generated(match: re.Match) -> str:
        name = match.group(1)
        if name not in GENERATORS:
            raise ValueError(f"{page.file.src_path}: unknown generated section {name!r} (known: {', '.join(GENERATORS)})")
        return GENERATORS[name]()

    return MARKER.sub(generated, markdown)


# ----------------------------------------------------------------------------- text helpers


def _escape(text: str) -> str:
    """Text for a Markdown table cell: code spans kept as written; elsewhere HTML's <, > and &,
    emphasis stars and the cell separator escaped."""
    parts = text.replace("\n", " ").split("`")
    for i in range(0, len(parts), 2):  # outside code spans
        parts[i] = html.escape(parts[i], quote=False).replace("*", r"\*").replace("|", r"\|")
    return "`".join(parts)


def _code(value: str) -> str:
    value = value.replace("|", r"\|")
    return f"`` {value} ``" if "`" in value else f"`{value}`"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


# ------------------------------------------------------------------------ params reference


def _is_model(tp: Any) -> bool:
    from pydantic import BaseModel

    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _args(tp: Any) -> tuple:
    return typing.get_args(tp)


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType)


def _models_in(tp: Any) -> list[type]:
    """The pydantic models an annotation names, at any depth (list items, union members)."""
    if _is_model(tp):
        return [tp]
    return [m for a in _args(tp) for m in _models_in(a)]


def _list_item_models(root: type, seen: set | None = None) -> list[type]:
    """Models that are items of a list somewhere under ``root`` (a corpus source, a test set):
    each gets a table of its own, which every field holding one links to."""
    seen = set() if seen is None else seen
    found: list[type] = []

    def in_lists(tp: Any, listed: bool) -> None:
        if _is_model(tp):
            if listed and tp not in found:
                found.append(tp)
            return
        for a in _args(tp):
            in_lists(a, listed or typing.get_origin(tp) is list)

    for field in root.model_fields.values():
        in_lists(field.annotation, False)
        for model in _models_in(field.annotation):
            if model not in seen:
                seen.add(model)
                found += [m for m in _list_item_models(model, seen) if m not in found]
    return found


def _shape_name(model: type) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", " ", model.__name__).lower()  # TestSet -> "test set"


def _shape_anchor(model: type) -> str:
    return "shape-" + _shape_name(model).replace(" ", "-")


def _type_name(tp: Any, shapes: list[type]) -> str:
    if tp is type(None):
        return "null"
    if tp is typing.Any:
        return "any"
    if _is_model(tp):
        return f"[{_shape_name(tp)}](#{_shape_anchor(tp)})" if tp in shapes else "mapping (below)"
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return "one of " + ", ".join(_code(str(a)) for a in _args(tp))
    if _is_union(tp):
        return " or ".join(_type_name(a, shapes) for a in _args(tp))
    if origin is list:
        return "list of " + _type_name(_args(tp)[0], shapes)
    if origin is dict:
        key, value = _args(tp)
        return f"mapping of {_type_name(key, shapes)} to {_type_name(value, shapes)}"
    return getattr(tp, "__name__", str(tp))


def _constraints(field) -> str:
    words = []
    for m in field.metadata:
        for attr, sign in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
            if getattr(m, attr, None) is not None:
                words.append(f"{sign} {getattr(m, attr)}")
        if getattr(m, "min_length", None) is not None:
            words.append(f"at least {m.min_length} character(s)")
        if getattr(m, "pattern", None):
            words.append(f"matches {_code(m.pattern)}")
    return ", ".join(words)


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value if value and value.strip() == value else json.dumps(value)
    return json.dumps(value, ensure_ascii=False)


def _default(field) -> str:
    from pydantic_core import PydanticUndefined

    if field.default is not PydanticUndefined:
        value = field.default
    elif field.default_factory is not None:
        value = field.default_factory()
    else:
        return "required"
    if _is_model(type(value)):
        return ""  # its keys follow, each with its default
    return _code(_scalar(value))


def _rows(model: type, prefix: str, shapes: list[type]) -> list[list[str]]:
    rows = []
    for name, field in model.model_fields.items():
        key = field.alias or name
        path = f"{prefix}.{key}" if prefix else key
        direct = [m for m in _models_in(field.annotation) if m not in shapes]
        kind = _type_name(field.annotation, shapes)
        limits = _constraints(field)
        description = _escape(field.description or "")
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        if extra.get("outcome", True) is False:
            description += " *(Changing it re-runs no DVC stage.)*"
        rows.append([_code(path), kind + (f", {limits}" if limits else ""), _default(field), description])
        for sub in direct:
            rows += _rows(sub, path, shapes)
    return rows


HEADER = ["key", "type", "default", "description"]


def params_reference(root: type | None = None) -> str:
    """Markdown: a section per params.yaml section (``root``'s fields: nerflow.core.config.Params
    by default), a row per key at any depth (dotted), and a table per list-item model."""
    if root is None:
        from nerflow.core.config import Params as root
    shapes = _list_item_models(root)
    out = []
    for name, field in root.model_fields.items():
        key = field.alias or name
        (section,) = _models_in(field.annotation)
        doc = inspect.cleandoc(section.__dict__.get("__doc__") or field.description or "")
        out += [f"## {key}", "", _escape(doc), "", _table(HEADER, _rows(section, key, shapes)), ""]
    for shape in shapes:
        users = [f"{_code(p)}" for p in _paths_to(root, shape)]
        doc = inspect.cleandoc(shape.__dict__.get("__doc__") or "")
        out += [f"## A {_shape_name(shape)} {{#{_shape_anchor(shape)}}}", "",
                f"The keys of each item of {', '.join(users)}. " + _escape(doc), "",
                _table(HEADER, _rows(shape, "", shapes)), ""]
    return "\n".join(out)


def _paths_to(root: type, target: type, prefix: str = "") -> list[str]:
    found = []
    for name, field in root.model_fields.items():
        path = f"{prefix}.{field.alias or name}" if prefix else field.alias or name
        models = _models_in(field.annotation)
        if target in models:
            found.append(path)
        for m in models:
            if m is not target:
                found += _paths_to(m, target, path)
    return found


# ----------------------------------------------------------------------------- CLI reference


@contextlib.contextmanager
def _columns():
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = HELP_COLUMNS
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = old


def _subcommands(parser) -> list[tuple[str, str, Any]]:
    import argparse

    out = []
    for action in parser._actions:  # argparse keeps the subparsers only here
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            out += [(name, helps.get(name) or "", sub) for name, sub in action.choices.items()]
    return out


def cli_reference(parser=None) -> str:
    """Markdown: ``nerflow --help`` and, for every subcommand (at any depth), its help."""
    if parser is None:
        from nerflow.cli.commands import _parser

        with _columns():
            parser = _parser()
    out = []

    def walk(p, words: list[str], summary: str) -> None:
        title = " ".join(words)
        out.extend([f"### `{title}`", "", _escape(summary) if summary else "", "",
                    "```text", p.format_help().rstrip(), "```", ""])
        for name, help_text, sub in _subcommands(p):
            walk(sub, [*words, name], help_text)

    with _columns():
        walk(parser, ["nerflow"], parser.description or "")
    return "\n".join(out)


PIPELINE_HELP = """
import contextlib, io, json, sys
sys.path.insert(0, sys.argv[1])
sys.argv[0] = "pipeline.py"  # argparse's prog
import pipeline
out = {}
for command in ([], ["compile"], ["run"], ["submit"], ["schedule"]):
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        try:
            pipeline.main([*command, "--help"])
        except SystemExit:
            pass
    out[" ".join(command)] = text.getvalue()
print(json.dumps(out))
"""


def pipeline_reference() -> str:
    """Markdown: the help of ``pipeline.py`` and each of its commands (in a child process:
    pipeline.py imports kfp and the components)."""
    env = {**os.environ, "COLUMNS": HELP_COLUMNS}
    done = subprocess.run([sys.executable, "-c", PIPELINE_HELP, str(ROOT)], check=False, cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    if done.returncode:
        raise RuntimeError(f"pipeline.py --help failed:\n{done.stderr}")
    out = []
    for command, text in json.loads(done.stdout).items():
        out += [f"### `python pipeline.py{' ' + command if command else ''}`", "", "```text", text.rstrip(), "```", ""]
    return "\n".join(out)


# ----------------------------------------------------------------------------- API reference

# The service's OpenAPI schema, as BentoML serves it at /docs.json, without a server or a model.
# Importing serving/service.py resolves a model tag (NERFLOW_MODEL_TAG, else the registry's
# production model, which a fresh clone does not have) and installs its patches of BentoML and
# uvicorn, so it is imported in a child process with NERFLOW_MODEL_TAG set to a placeholder:
# bentoml.models.BentoModel(tag) only names the model (it is looked up when a worker starts), and
# the schema comes from the service class's API methods and their pydantic types. BENTOML_HOME
# is a fresh temporary folder, so the build reads and writes nothing of a real store.
OPENAPI = """
import json, sys
sys.path.insert(0, sys.argv[1])
from serving.service import ModelService
print(json.dumps(ModelService.openapi_spec.asdict()))
"""


def openapi_spec() -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="nerflow-docs-") as home:
        env = {**os.environ, "NERFLOW_MODEL_TAG": "nerflow-ner:docs", "BENTOML_HOME": home,
               "BENTOML_DO_NOT_TRACK": "True"}
        done = subprocess.run([sys.executable, "-c", OPENAPI, str(ROOT)], check=False, cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=300)
    if done.returncode:
        raise RuntimeError(f"the service's OpenAPI schema could not be read:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _ref_name(ref: str) -> str:
    return ref.rsplit("/", 1)[-1]


def _schema_anchor(name: str) -> str:
    return "schema-" + name.lower().replace("_", "-")


def _schema_type(s: dict[str, Any]) -> str:
    if "$ref" in s:
        name = _ref_name(s["$ref"])
        return f"[{name}](#{_schema_anchor(name)})"
    if "anyOf" in s:
        return " or ".join(_schema_type(x) for x in s["anyOf"])
    if "enum" in s:
        return "one of " + ", ".join(_code(str(v)) for v in s["enum"])
    kind = s.get("type", "any")
    if kind == "array":
        return f"array{_range(s, 'Items', 'items')} of " + _schema_type(s.get("items", {}))
    if kind == "object" and isinstance(s.get("additionalProperties"), dict):
        return "object of " + _schema_type(s["additionalProperties"])
    return kind + _range(s, "Length", "characters")


def _range(s: dict[str, Any], suffix: str, unit: str) -> str:
    low, high = s.get("min" + suffix), s.get("max" + suffix)
    if low is None and high is None:
        return ""
    if high is None:
        return f" (at least {low} {unit})"
    return f" ({low} to {high} {unit})" if low else f" (at most {high} {unit})"


def _properties(s: dict[str, Any]) -> str:
    props = s.get("properties") or {}
    if not props:
        return "An empty JSON object, `{}`."
    required = set(s.get("required") or [])
    rows = [[_code(name), _schema_type(p), "yes" if name in required else "no",
             _escape(p.get("description", "")) + (f" (default {_code(_scalar(p['default']))})" if "default" in p else "")]
            for name, p in props.items()]
    return _table(["field", "type", "required", "description"], rows)


def _refs(node: Any) -> set[str]:
    if isinstance(node, dict):
        found = {_ref_name(node["$ref"])} if "$ref" in node else set()
        return found.union(*(_refs(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(_refs(v) for v in node))
    return set()


def api_reference(spec: dict[str, Any] | None = None) -> str:
    """Markdown: each endpoint of the service's OpenAPI schema (``spec``: the service's by default)
    with its request body, answer and errors, then every schema they refer to."""
    spec = spec or openapi_spec()
    schemas = spec.get("components", {}).get("schemas", {})
    out, infra, used = [], [], set()
    for path, item in spec["paths"].items():
        for method, op in item.items():
            if "Infrastructure" in op.get("tags", []):
                infra.append([f"`{method.upper()} {path}`", op.get("description", "")])
                continue
            used |= _refs(op.get("responses", {}))
            out += [f"### `{method.upper()} {path}`", "", inspect.cleandoc(op.get("description", "")), ""]
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            if body is not None:
                if "$ref" in body:
                    body = schemas[_ref_name(body["$ref"])]
                out += ["**Request body** (`application/json`):", "", _properties(body), ""]
            for code, response in op.get("responses", {}).items():
                schema = response.get("content", {}).get("application/json", {}).get("schema")
                if code.startswith("2"):
                    out += [f"**Answer {code}** (`application/json`): "
                            + ("an object:" if schema and schema.get("type") == "object" and "properties" in schema
                               else _schema_type(schema or {}) + "."), ""]
                    if schema and schema.get("type") == "object" and "properties" in schema:
                        out += [_properties(schema), ""]
            errors = [f"{code} {response.get('description', '')}"
                      + (f" ([{_ref_name(r)}](#{_schema_anchor(_ref_name(r))}))" if (r := response.get("content", {})
                         .get("application/json", {}).get("schema", {}).get("$ref")) else "")
                      for code, response in op.get("responses", {}).items() if not code.startswith("2")]
            if errors:
                out += ["**Errors**: " + "; ".join(errors) + ".", ""]
    pending = sorted(used)
    seen: set[str] = set()
    schema_out = []
    while pending:
        name = pending.pop(0)
        if name in seen or name not in schemas:
            continue
        seen.add(name)
        s = schemas[name]
        schema_out += [f"### {name} {{#{_schema_anchor(name)}}}", "", _escape(s.get("description", "")), "", _properties(s), ""]
        pending += sorted(_refs(s) - seen)
    info = spec.get("info", {})
    head = [f"The schema of `{info.get('title', 'the service')}` (OpenAPI {spec.get('openapi', '')}).", ""]
    return "\n".join(head + ["## Endpoints", ""] + out + ["## Schemas", ""] + schema_out
                     + ["## Health and metrics", "", _table(["endpoint", "what"], infra), ""])


GENERATORS = {"params": params_reference, "openapi": api_reference, "cli": cli_reference,
              "pipeline": pipeline_reference}
