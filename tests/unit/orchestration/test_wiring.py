"""One typed configuration and wiring derived from the code: params.yaml, the library defaults,
the JSON Schema, the CLI and dvc.yaml agree with each other."""

import json
import os
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, run_cli, write_params


def _keys(tree, prefix=""):
    out = set()
    for key, value in tree.items():
        path = f"{prefix}.{key}" if prefix else key
        out.add(path)
        if isinstance(value, dict) and not path.endswith("type_min_f1"):
            out |= _keys(value, path)
    return out


def test_params_yaml_spells_out_every_key_with_its_default():
    from nerflow.core.config import Params

    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    defaults = Params().to_dict()
    assert _keys(raw) == _keys(defaults)  # no key left to a default, none unknown
    assert Params.model_validate(raw).to_dict() == defaults


def test_library_defaults_are_the_pipeline_params():
    """Calling a step from Python with no params trains and gates exactly as params.yaml does."""
    from nerflow.core.config import SECTIONS, load_params, section

    params = load_params(ROOT / "params.yaml")
    for name, cls in SECTIONS.items():
        assert section(cls, {}) == params.section(name), name
        assert section(cls, None) == section(cls, params.section(name).to_dict())
    assert params.train.epochs == 1 and params.train.batch_size == 8 and params.train.learning_rate == 1e-4 and params.train.warmup_steps == 100
    assert params.gate.max_type_regression == 0.02 and params.gate.bootstrap.seed == 13


def test_every_key_has_a_type_and_a_description_in_the_schema():
    r = run_cli(["params", "--schema"], ROOT / "params.yaml", check=True)
    schema = json.loads(r.stdout)
    defs = schema["$defs"]
    missing = []

    def walk(props, where):
        for key, prop in props.items():
            target = defs[prop["$ref"].rsplit("/", 1)[1]] if "$ref" in prop else prop
            if not (prop.get("description") or target.get("description")):
                missing.append(f"{where}.{key}")
            if "$ref" in prop:
                walk(target.get("properties", {}), f"{where}.{key}")

    walk(schema["properties"], "params")
    assert not missing
    import jsonschema

    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    jsonschema.validate(raw, schema)
    raw["data"]["tag_colum"] = 1
    with pytest.raises(jsonschema.ValidationError, match="tag_colum"):
        jsonschema.validate(raw, schema)


@pytest.mark.parametrize("edit, message", [
    (lambda p: p["data"].update(tag_colum=1), "data.tag_colum: unknown key; did you mean data.tag_column?"),
    (lambda p: p["validate"]["checks"].update(leakge={"severity": "error"}),
     "validate.checks.leakge: unknown key; did you mean validate.checks.leakage?"),
    (lambda p: p["data"].update(encoding="latin-9x"), "data.encoding: unknown text encoding 'latin-9x'"),
    (lambda p: p["train"].update(epochs=-1), "train.epochs: Input should be greater than 0 (given -1)"),
    (lambda p: p["train"].update(learning_rate="fast"), "train.learning_rate: Input should be a valid number"),
    (lambda p: p["gate"]["bootstrap"].update(confidence=2), "gate.bootstrap.confidence: Input should be less than 1"),
    (lambda p: p["gate"].update(min_delta=-0.1), "gate.min_delta: Input should be greater than or equal to 0"),
    (lambda p: p["validate"]["checks"]["leakage"].update(severity="warn"),
     "validate.checks.leakage.severity: Input should be 'error', 'warning' or 'off'"),
    (lambda p: p.update(trian={}), "trian: unknown key; did you mean train?"),
])
def test_bad_params_are_refused_naming_file_line_and_key(params, tmp_path, edit, message):
    edit(params)
    pfile = write_params(params, tmp_path / "params.yaml")
    r = run_cli(["data", "--out", str(tmp_path / "dataset")], pfile)
    assert r.returncode == 2
    assert message in r.stderr
    lines, line = pfile.read_text().splitlines(), 0
    for key in message.split(":")[0].split("."):  # the offending key's line: each part below the last
        line = next(i for i in range(line, len(lines)) if lines[i].strip().startswith(f"{key}:")) + 1
    assert f"{pfile}:{line}: " in r.stderr
    assert not (tmp_path / "dataset").exists()


def test_params_option_goes_before_or_after_the_subcommand(params, tmp_path):
    params["train"]["epochs"] = 7
    del params["train"]["weight_decay"]
    pfile = write_params(params, tmp_path / "p.yaml")
    before = run_cli(["params"], pfile, check=True).stdout
    after = run_cli(["params", "--params", str(pfile)], ROOT / "params.yaml", check=True).stdout
    assert before == after and "epochs: 7" in after
    assert yaml.safe_load(after)["train"]["weight_decay"] == 0.01  # a key left out takes its one default
    params["data"]["tag_colum"] = 1  # the reported case: `nerflow data --params F` said "unrecognized arguments"
    bad = write_params(params, tmp_path / "bad.yaml")
    r = run_cli(["data", "--out", str(tmp_path / "ds"), "--params", str(bad)], ROOT / "params.yaml")
    assert r.returncode == 2 and f"{bad}:" in r.stderr and "did you mean data.tag_column?" in r.stderr


def test_dvc_yaml_is_derived_from_the_code():
    from nerflow.orchestration import wiring

    assert wiring.main(["--check"]) == 0, "dvc.yaml is stale: run `python -m nerflow.orchestration.wiring`"
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    # the code each stage runs, found through imports at any depth
    assert {"src/nerflow/tasks/token/align.py", "src/nerflow/core/device.py", "src/nerflow/tasks/token/predict.py",
            "src/nerflow/tasks/token/metrics.py"} <= set(stages["evaluate"]["deps"])
    assert {"src/nerflow/tasks/token/predict.py", "src/nerflow/tasks/token/metrics.py",
            "src/nerflow/release/registry.py"} <= set(stages["gate"]["deps"])
    assert "src/nerflow/tasks/token/readers.py" in stages["data"]["deps"]
    assert "src/nerflow/steps/train.py" not in stages["data"]["deps"]
    # param keys: a KFP-only or cosmetic key re-runs nothing
    train = set(stages["train"]["params"])
    assert {"train.learning_rate", "train.epochs", "train.model"} <= train
    assert not train & {"train.resources", "train.progress", "train.logging_steps"}
    assert set(stages["gate"]["params"]) >= {"gate.min_f1", "registry.model_name"}
    assert set(stages["package"]["deps"]) >= {"serving/service.py", "serving/bentofile.yaml", "serving/static"}


def test_a_stage_depends_on_the_code_of_its_own_task_only():
    """An edit to text classification never re-runs the NER pipeline, nor the other way round."""
    from nerflow.orchestration import wiring
    from nerflow.tasks.base import TEXT, TOKEN

    for stage in wiring.STAGES:
        token, text = wiring.code_deps(stage, task=TOKEN), wiring.code_deps(stage, task=TEXT)
        assert not [d for d in token if "/tasks/text/" in d], (stage, token)
        assert not [d for d in text if "/tasks/token/" in d], (stage, text)
    assert "src/nerflow/tasks/token/metrics.py" in wiring.code_deps("train", task=TOKEN)
    assert "src/nerflow/tasks/text/metrics.py" in wiring.code_deps("train", task=TEXT)
    # register and package run no task code
    assert not [d for d in wiring.code_deps("package", task=TOKEN) if "/tasks/token/" in d]


def test_derived_deps_follow_a_new_import(tmp_path, monkeypatch):
    """An import added at the top of a step module lands in that stage's deps."""
    import shutil

    from nerflow.orchestration import wiring

    pkg = tmp_path / "src" / "nerflow"
    shutil.copytree(wiring.PACKAGE_DIR, pkg, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(wiring, "PACKAGE_DIR", pkg)
    assert "src/nerflow/cli/summary.py" not in wiring.code_deps("gate", tmp_path)
    gate_py = pkg / "steps" / "gate.py"
    gate_py.write_text(gate_py.read_text().replace("from nerflow import NerflowError\n",
                                                   "from nerflow import NerflowError\nfrom nerflow.cli import summary\n"))
    assert "src/nerflow/cli/summary.py" in wiring.code_deps("gate", tmp_path)


def test_the_import_contracts_catch_an_import_that_points_up(tmp_path):
    """lint-imports (make test) passes on the package and fails on a copy of it where a task
    imports the other task and a core module imports a step, naming both contracts."""
    import shutil
    import subprocess
    import sys

    from nerflow.orchestration import wiring

    pkg = tmp_path / "src" / "nerflow"
    shutil.copytree(wiring.PACKAGE_DIR, pkg, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    lint = [str(Path(sys.executable).with_name("lint-imports")), "--no-cache"]
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "src")}
    ok = subprocess.run(lint, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    metrics = pkg / "tasks" / "token" / "metrics.py"
    metrics.write_text(metrics.read_text() + "\nfrom nerflow.tasks.text import metrics as text_metrics  # noqa\n")
    stats = pkg / "core" / "stats.py"
    stats.write_text(stats.read_text() + "\nfrom nerflow.steps import gate  # noqa\n")
    bad = subprocess.run(lint, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "Contracts: 0 kept, 3 broken." in bad.stdout  # the layers, the tasks' independence, no circle
    assert "nerflow.tasks.token.metrics -> nerflow.tasks.text.metrics" in bad.stdout
    assert "nerflow.core.stats -> nerflow.steps.gate" in bad.stdout


def test_score_runs_outside_a_project_without_a_params_file(tmp_path):
    import subprocess
    import sys

    (tmp_path / "s.txt").write_text("EU B-ORG B-ORG\nrejects O O\n\n")
    r = subprocess.run([sys.executable, "-m", "nerflow.cli", "score", "s.txt", "--json"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["f1"] == 1.0
    r = subprocess.run([sys.executable, "-m", "nerflow.cli", "data"], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 2 and "params.yaml: params file not found" in r.stderr


def test_a_partly_given_section_keeps_the_other_defaults():
    from nerflow.core.config import ValidateParams, section

    checks = section(ValidateParams, {"checks": {"subtoken_overflow": {"severity": "error"},
                                                 "duplicates": {"error_fraction": 1.0},
                                                 "leakage": {"severity": "off"}}}).checks
    assert checks.subtoken_overflow.max_fraction == 0.01 and checks.subtoken_overflow.severity == "error"
    assert checks.duplicates.max_fraction == 0.15 and checks.duplicates.severity == "warning"
    assert checks.leakage.max_fraction == 0.10 and checks.leakage.error_fraction == 0.5
