"""The nerflow command: `--help` loads no step, no params library and no task."""

import json
import subprocess
import sys

PROBE = """
import json, sys
from nerflow.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in ("pydantic", "pyarrow", "torch", "nerflow"))))
"""


def _loaded(*argv: str) -> list[str]:
    r = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.splitlines()[-1])


def test_help_loads_no_step_no_params_library_and_no_task():
    loaded = _loaded("--help")
    assert "nerflow.cli.commands" in loaded
    assert not [m for m in loaded if m.startswith(("pydantic", "pyarrow", "torch", "nerflow.steps", "nerflow.tasks",
                                                   "nerflow.core"))], loaded


def test_a_step_loads_its_own_code_not_the_others(tmp_path):
    loaded = _loaded("params", "--json")
    assert "nerflow.core.config" in loaded and "pydantic" in loaded
    assert not [m for m in loaded if m.startswith(("nerflow.steps", "nerflow.tasks", "torch"))], loaded
