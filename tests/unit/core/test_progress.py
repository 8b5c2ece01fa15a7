"""Progress is a bar on a terminal and plain lines in a log (make run > log, CI, a KFP pod):
training, predict and validation, with the same information, never carriage returns."""

import io
import re

import pytest

from nerflow import NerflowError
from nerflow.core.progress import Lines, period, progress
from nerflow.steps.train import train
from nerflow.steps.validate import validate_dataset

LINE = re.compile(r"^(train|predict|validate: [^:]+): \d+(/\d+)? [a-z ]+( \(\d+%\))?, [\d.]+ [a-z ]+/s, \d+:\d\d elapsed")


class Terminal(io.StringIO):
    def isatty(self):
        return True


def plain_lines(text: str) -> list[str]:
    assert "\r" not in text and "\x1b" not in text  # no bar redraws, no escape codes
    return text.splitlines()


def test_a_log_gets_periodic_lines_and_a_terminal_a_bar(monkeypatch):
    monkeypatch.setenv("NERFLOW_PROGRESS_SECONDS", "0")
    log = io.StringIO()
    with progress(5, "predict", "sentences", stream=log) as bar:
        assert isinstance(bar, Lines)
        for _ in range(5):
            bar.set_postfix(loss=0.123456)
            bar.update(1)
    lines = plain_lines(log.getvalue())
    assert len(lines) == 6 and all(LINE.match(line) for line in lines), lines
    assert lines[0].startswith("predict: 1/5 sentences (20%)") and "left" in lines[0] and "loss 0.1235" in lines[0]
    assert lines[-1].startswith("predict: 5/5 sentences (100%)") and lines[-1].endswith("(done)")
    monkeypatch.setenv("NERFLOW_PROGRESS_SECONDS", "3600")  # the default 30 s: only the last line in a short run
    log = io.StringIO()
    with progress(5, "predict", "sentences", stream=log) as bar:
        bar.update(5)
    assert len(plain_lines(log.getvalue())) == 1
    tty = Terminal()
    with progress(5, "predict", "sentences", stream=tty) as bar:
        assert not isinstance(bar, Lines)
        bar.update(5)
    assert "\r" in tty.getvalue() and "5/5" in tty.getvalue()  # tqdm's bar
    quiet = io.StringIO()
    with progress(5, "predict", "sentences", enabled=False, stream=quiet) as bar:
        bar.update(5)
    assert quiet.getvalue() == ""


def test_the_period_is_checked(monkeypatch):
    monkeypatch.delenv("NERFLOW_PROGRESS_SECONDS", raising=False)
    assert period() == 30.0
    for bad in ("soon", "-1", "nan"):
        monkeypatch.setenv("NERFLOW_PROGRESS_SECONDS", bad)
        with pytest.raises(NerflowError, match=f"NERFLOW_PROGRESS_SECONDS='{bad}': expected seconds"):
            period()


def test_training_and_validation_write_plain_lines_to_a_log(library_run, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("NERFLOW_PROGRESS_SECONDS", "0")
    capsys.readouterr()
    params = dict(library_run["params"]["train"], max_steps=4, progress=True, logging_steps=2)
    train(params, library_run["features"], tmp_path / "model")
    captured = capsys.readouterr()
    lines = [line for line in plain_lines(captured.err) if line.startswith("train: ")]
    assert [line.split(" steps")[0] for line in lines] == [f"train: {i}/4" for i in (1, 2, 3, 4, 4)], lines
    assert lines[-1].endswith("(done)") and "loss " in lines[-1] and "epoch " in lines[-1]
    assert "{'loss'" not in captured.out + captured.err  # the Trainer's printed log dicts are replaced by the lines
    validate_dataset(library_run["params"]["validate"], library_run["dataset"], tmp_path / "report")
    lines = plain_lines(capsys.readouterr().err)
    done = [line for line in lines if line.endswith("(done)")]
    assert any(line.startswith("validate: sub-tokens: 2095/2095 distinct words (100%)") for line in done), lines
    assert any(line.startswith("validate: GX: 16/16 expectations (100%)") for line in done), lines
    assert all(LINE.match(line) for line in lines if line.startswith("validate: ")), lines
