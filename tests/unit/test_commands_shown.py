"""Every command the README and the docs show is one the tools accept as written: each
`nerflow ...` and `pipeline.py ...` line of their shell blocks parses with the real parsers
(a renamed flag or subcommand fails here, not on a user's first try), each `make` target
exists, and each params file they name exists. Running them is the other tests' job."""

import contextlib
import io
import re
import shlex
import sys
from pathlib import Path

import pytest
from conftest import ROOT

from nerflow.cli.commands import _parser as nerflow_parser

sys.path.insert(0, str(ROOT))
import pipeline  # noqa: E402  (pipeline.py at the repository root: its parser)

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
BLOCK = re.compile(r"^```(?:bash|sh|shell|console)\n(.*?)^```", re.M | re.S)
SEPARATORS = {"&&", "||", ";", "|"}


def commands(page: Path) -> list[tuple[int, list[str]]]:
    """(line number, argv) of each simple command in the page's shell blocks; redirections and
    environment assignments are dropped, `a && b` is two commands."""
    text = page.read_text(encoding="utf-8")
    out = []
    for block in BLOCK.finditer(text):
        first = text.count("\n", 0, block.start(1)) + 1
        for i, line in enumerate(block.group(1).splitlines()):
            line = line.strip().removeprefix("$ ")
            if not line or line.startswith("#"):
                continue
            words = shlex.split(line, comments=True)
            argv: list[str] = []
            skip = False
            for word in [*words, "&&"]:
                if skip:
                    skip = False
                elif word in SEPARATORS:
                    if argv:
                        out.append((first + i, argv))
                    argv = []
                elif word in (">", ">>", "<", "2>"):
                    skip = True
                elif re.match(r"^[0-9]?>", word):
                    continue
                elif not argv and re.match(r"^[A-Z_]+=", word):
                    continue
                else:
                    argv.append(word)
    return out


def shown(program: str) -> list[tuple[str, list[str]]]:
    found = []
    for page in PAGES:
        for line, argv in commands(page):
            name = Path(argv[0]).name
            if name == "python" and len(argv) > 1 and Path(argv[1]).name == "pipeline.py":
                name, argv = "pipeline.py", argv[1:]
            if name == program:
                found.append((f"{page.relative_to(ROOT)}:{line}", argv[1:]))
    return found


def accepted(parser, argv: list[str]) -> str | None:
    """None when ``parser`` takes ``argv``, else argparse's message."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            parser.parse_args(argv)
    except SystemExit as exc:
        return None if exc.code == 0 else err.getvalue().strip().splitlines()[-1]
    return None


def test_the_pages_show_commands_of_every_kind():
    assert len(PAGES) > 10
    assert len(shown("nerflow")) >= 20 and len(shown("pipeline.py")) >= 4 and len(shown("make")) >= 5


@pytest.mark.parametrize("program", ["nerflow", "pipeline.py"])
def test_every_command_shown_parses(program):
    parser = nerflow_parser() if program == "nerflow" else pipeline.parser()
    bad = [f"{where}: {program} {' '.join(argv)}: {why}" for where, argv in shown(program)
           if (why := accepted(parser, argv)) is not None]
    assert not bad, "\n".join(bad)
    # the check can fail: a misspelled flag is refused
    assert accepted(parser, ["run", "--containerz"] if program == "pipeline.py" else ["score", "a", "--line-by-lines"])


def test_every_make_target_and_params_file_shown_exists():
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([\w-]+):", makefile, re.M))
    missing = [f"{where}: make {' '.join(argv)}" for where, argv in shown("make")
               for t in argv if not t.startswith("-") and "=" not in t and t not in targets]
    assert not missing, "\n".join(missing)
    named = [(where, argv[argv.index("--params") + 1]) for where, argv in shown("nerflow") if "--params" in argv]
    absent = [f"{where}: {path}" for where, path in named
              if path.startswith("examples/") and not (ROOT / path).exists()]
    assert not absent, "\n".join(absent)
