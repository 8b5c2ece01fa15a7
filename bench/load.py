"""Load test on loopback: the nerflow service against a naive baseline (bench/naive_service.py,
a plain transformers pipeline behind one non-batched endpoint), same model, same texts.

Starts each server in turn on a free 127.0.0.1 port, sends requests of 1 and of 8 texts
(CoNLL-2003 test sentences) from 1, 4 and 16 concurrent clients, each level bounded by --seconds
and --max-requests, and stops the server. Prints, per level and server: texts/s, requests/s, p50
and p99 latency, errors (any non-200, 503s included). --rounds: the two servers alternate that
many times (naive, nerflow, naive, nerflow, ...), so that both meet the machine in the same
minutes (a shared VM's speed drifts: the naive baseline ran 53.6-72.2 texts/s in three runs within
25 minutes); each level's ratio is the median of the rounds' ratios, its texts/s and latencies
the medians of the rounds'. Then the nerflow/naive throughput ratios. Writes bench/load_results.json.

    .venv/bin/python bench/load.py [--model-tag nerflow-ner:<v> | --model-dir DIR] [--seconds 10] [--rounds 3]

Model: --model-tag from the store at $BENTOML_HOME (default .bentoml), else the registry's
production model, else --model-dir (an HF folder, stored as a model for the run).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
LEVELS = (1, 4, 16)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_flags() -> str:
    """The CPU's name, cores and the flags that decide bf16 (timings name them)."""
    import platform
    import re

    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    name = re.search(r"model name\s*:\s*(.*)", text)
    flags = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16") if re.search(rf"\b{f}\b", text)]
    return f"{name.group(1) if name else platform.processor()}; {os.cpu_count()} cores; flags {' '.join(flags)}"


def texts(n: int = 2000) -> list[str]:
    from nerflow.core.paths import resolve_path
    from nerflow.tasks.token.readers import read_conll

    sentences = read_conll(resolve_path("pkg:neuroner/data/conll2003/en/test.txt"))
    return [" ".join(s.tokens) for s in sentences[:n]]


class Server:
    """`bentoml serve` in its own process group on 127.0.0.1; stopped on exit."""

    def __init__(self, target: str, env: dict[str, str], log: Path):
        self.port = free_port()
        self.log = open(log, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bentoml", "serve", target, "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=ROOT, env={**os.environ, **env}, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    def __enter__(self):
        deadline = time.time() + 180
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited; see {self.log.name}")
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                c.request("GET", "/readyz")
                if c.getresponse().status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.5)
        raise RuntimeError("server not ready in 180 s")

    def __exit__(self, *exc):
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.log.close()


def run_level(port: int, path: str, corpus: list[str], clients: int, seconds: float, max_requests: int, per_request: int = 1) -> dict:
    latencies: list[float] = []
    errors: dict[str, int] = {}
    lock = threading.Lock()
    counter = iter(range(max_requests))
    stop_at = time.perf_counter() + seconds

    def client(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        while time.perf_counter() < stop_at:
            try:
                i = next(counter)
            except (StopIteration, ValueError):
                return
            start = (i * 7 + k) * per_request % len(corpus)
            body = json.dumps({"texts": (corpus + corpus)[start : start + per_request]})
            t0 = time.perf_counter()
            try:
                conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
                r = conn.getresponse()
                r.read()
                status = r.status
            except OSError as exc:
                status = type(exc).__name__
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            dt = time.perf_counter() - t0
            with lock:
                if status == 200:
                    latencies.append(dt)
                else:
                    errors[str(status)] = errors.get(str(status), 0) + 1

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    latencies.sort()
    q = lambda p: round(1000 * latencies[min(len(latencies) - 1, int(p * len(latencies)))], 1) if latencies else None  # noqa: E731
    return {"clients": clients, "texts_per_request": per_request, "requests": len(latencies), "seconds": round(elapsed, 2),
            "requests_per_second": round(len(latencies) / elapsed, 1),
            "texts_per_second": round(per_request * len(latencies) / elapsed, 1), "p50_ms": q(0.50), "p99_ms": q(0.99),
            "errors": errors}


def served_f1(port: int, model_dir: Path, per_request: int = 8) -> dict:
    """Test F1 of the served model through the service path (/tag_tokens), the test split read
    as evaluate reads it (consecutive sentences of a document in one window for a model trained
    with document context), against the same weights run by torch in this process."""
    from nerflow.tasks.token.align import document_windows, packed, unpacked
    from nerflow.tasks.token.metrics import score
    from nerflow.core.paths import resolve_path
    from nerflow.tasks.token.predict import WordTagger
    from nerflow.tasks.token.readers import read_conll

    sentences = read_conll(resolve_path("pkg:neuroner/data/conll2003/en/test.txt"))
    tokens, gold = [s.tokens for s in sentences], [s.tags for s in sentences]
    torch_tagger = WordTagger(model_dir, runtime="torch")
    if torch_tagger.info.get("context") == "document":
        groups = document_windows(torch_tagger.tokenizer, tokens, [("", s.document) for s in sentences],
                                  torch_tagger.max_length)
    else:
        groups = [[i] for i in range(len(tokens))]
    windows = packed(groups, tokens)
    served: list = []
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    started = time.perf_counter()
    for at in range(0, len(windows), per_request):
        conn.request("POST", "/tag_tokens", body=json.dumps({"sentences": windows[at:at + per_request]}),
                     headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        body = r.read()
        if r.status != 200:
            raise RuntimeError(f"/tag_tokens answered {r.status}: {body[:200]!r}")
        served += [row["tags"] for row in json.loads(body)]
    seconds = time.perf_counter() - started
    served_f1 = score(gold, unpacked(groups, [len(t) for t in tokens], served))["f1"]
    torch_f1 = score(gold, unpacked(groups, [len(t) for t in tokens], torch_tagger.predict(windows)[0]))["f1"]
    return {"sentences": len(tokens), "windows": len(windows), "served_f1": served_f1, "torch_f1": torch_f1,
            "difference_points": round(100 * (served_f1 - torch_f1), 3), "served_seconds": round(seconds, 1)}


def measure(name: str, server: Server, path: str, corpus: list[str], seconds: float, max_requests: int,
            per_request: tuple[int, ...], fidelity: Path | None = None) -> tuple[list[dict], dict | None]:
    with server:
        run_level(server.port, path, corpus, 4, 3, 200)  # warm-up
        rows = []
        for n in per_request:
            for clients in LEVELS:
                row = run_level(server.port, path, corpus, clients, seconds, max_requests, n)
                print(f"{name:<7} {n:>2} text(s)/request {clients:>2} clients: {row['texts_per_second']:>7.1f} texts/s "
                      f"{row['requests_per_second']:>7.1f} req/s  p50 {row['p50_ms']:>7} ms  p99 {row['p99_ms']:>7} ms  "
                      f"errors {row['errors'] or 0}", flush=True)
                rows.append(row)
        f1 = served_f1(server.port, fidelity) if fidelity else None
        if f1:
            print(f"{name:<7} test F1 through /tag_tokens {f1['served_f1']:.4f}; the same weights in torch "
                  f"{f1['torch_f1']:.4f} ({f1['difference_points']:+.2f} points)", flush=True)
        return rows, f1


def median_row(rows: list[dict]) -> dict:
    """One level's rounds as one row: the median of each rate and latency, requests and errors summed."""
    out = dict(rows[0])
    for key in ("seconds", "requests_per_second", "texts_per_second", "p50_ms", "p99_ms"):
        values = [r[key] for r in rows if r[key] is not None]
        out[key] = round(statistics.median(values), 1) if values else None
    out["requests"] = sum(r["requests"] for r in rows)
    out["errors"] = {k: sum(r["errors"].get(k, 0) for r in rows) for k in sorted({k for r in rows for k in r["errors"]})}
    return out


def resolve_model(args) -> tuple[str, Path]:
    from nerflow.release.registry import Registry

    registry = Registry("nerflow-ner", os.environ["BENTOML_HOME"])
    tag = args.model_tag or registry.production()
    if tag:
        return tag, registry.model_dir(tag)
    if not args.model_dir:
        raise SystemExit("no model: run the pipeline (make run) first, or give --model-tag / --model-dir")
    from nerflow.steps.package import git_revision

    tag = registry.register(args.model_dir, {"metrics": {}, "data_hash": "load-test", "git_revision": git_revision(ROOT)}, {})
    return tag, registry.model_dir(tag)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-tag")
    ap.add_argument("--model-dir")
    ap.add_argument("--seconds", type=float, default=10.0, help="per level and round (default 10)")
    ap.add_argument("--rounds", type=int, default=3, help="times the two servers alternate (default 3)")
    ap.add_argument("--max-requests", type=int, default=20000, help="per level (default 20000)")
    ap.add_argument("--texts-per-request", default="1,8", help="request sizes to test, comma-separated (default 1,8)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "load_results.json"))
    args = ap.parse_args(argv)
    if args.rounds < 1 or args.seconds <= 0:
        ap.error("--rounds must be at least 1 and --seconds over 0")
    from nerflow.core.paths import configure, load_params

    configure(load_params(ROOT / "params.yaml"))
    tag, model_dir = resolve_model(args)
    corpus = texts()
    logs = Path(tempfile.mkdtemp(prefix="nerflow-load-"))
    print(f"model {tag}; {len(corpus)} test sentences; {args.seconds:g} s per level; logs in {logs}")
    # the naive pipeline loads the stored model folder (an HF folder) directly
    plain = logs / "model"
    shutil.copytree(model_dir, plain, ignore=shutil.ignore_patterns("model.yaml"))
    sizes = tuple(int(x) for x in args.texts_per_request.split(","))
    rounds, fidelity = [], None
    for r in range(1, args.rounds + 1):
        print(f"round {r} of {args.rounds}", flush=True)
        naive, _ = measure("naive", Server("bench.naive_service:NaiveNER", {"NERFLOW_MODEL_DIR": str(plain)},
                                           logs / f"naive{r}.log"), "/extract", corpus, args.seconds, args.max_requests, sizes)
        last = r == args.rounds  # the served F1 once, in the last round
        ours, f1 = measure("nerflow", Server("serving.service:ModelService", {"NERFLOW_MODEL_TAG": tag}, logs / f"nerflow{r}.log"),
                           "/extract", corpus, args.seconds, args.max_requests, sizes, fidelity=model_dir if last else None)
        fidelity = f1 or fidelity
        rounds.append({"naive": naive, "nerflow": ours,
                       "ratio": [round(o["texts_per_second"] / max(n["texts_per_second"], 1e-9), 2) for n, o in zip(naive, ours)]})
    naive, ours = ([median_row([rd[side][i] for rd in rounds]) for i in range(len(rounds[0][side]))] for side in ("naive", "nerflow"))
    ratios = {f"{n['texts_per_request']} text(s)/request, {n['clients']} clients": statistics.median(rd["ratio"][i] for rd in rounds)
              for i, n in enumerate(naive)}
    print(f"throughput ratio nerflow/naive (texts/s; the median of {args.rounds} rounds' ratios, each round's in brackets; "
          "nerflow's p99 ms, the median of the rounds' and each round's):")
    for i, (key, ratio) in enumerate(ratios.items()):
        print(f"  {key}: {ratio}x {[rd['ratio'][i] for rd in rounds]}  p99 {ours[i]['p99_ms']} ms "
              f"{[rd['nerflow'][i]['p99_ms'] for rd in rounds]}", flush=True)
    info = json.loads((model_dir / "nerflow.json").read_text())
    result = {"model": tag, "runtime": info.get("runtime", "torch"), "base_model": info.get("base_model"),
              "cpu": cpu_flags(), "cores": os.cpu_count(), "seconds_per_level": args.seconds, "rounds": args.rounds,
              "naive": naive, "nerflow": ours, "throughput_ratio": ratios, "served_f1": fidelity, "each_round": rounds}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    shutil.rmtree(plain)  # the naive endpoint's copy of the model (the servers' logs stay)
    return 0


if __name__ == "__main__":
    sys.exit(main())
