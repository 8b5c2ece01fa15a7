"""A real `bentoml serve` of a promoted model's Bento on a loopback port: the API, its limits,
health and metrics, concurrency, the page in headless Chromium, and fuzzing of the OpenAPI schema."""

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from conftest import bentoml_server, run_cli, write_params

TEXT = "Angela Merkel visited Paris, France."
# split_words gives: Angela Merkel visited Paris , France .
SPANS = [("Angela", 0, 6), ("Merkel", 7, 13), ("visited", 14, 21), ("Paris", 22, 27), (",", 27, 28),
         ("France", 29, 35), (".", 35, 36)]


def every_word_tagged(src: Path, dst: Path, label: str) -> Path:
    """A copy of a trained model whose head says ``label`` for every word, so the expected
    entities are known exactly."""
    import torch
    from transformers import AutoModelForTokenClassification

    shutil.copytree(src, dst)
    model = AutoModelForTokenClassification.from_pretrained(str(dst))
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.fill_(-10.0)
        model.classifier.bias[model.config.label2id[label]] = 10.0
    model.save_pretrained(str(dst))
    # the service runs the runtime the train step exported (model.onnx): export the edited weights
    from transformers import AutoTokenizer

    from nerflow.core.runtime import export

    info = json.loads((dst / "nerflow.json").read_text())
    info.update(export(model.eval(), AutoTokenizer.from_pretrained(str(dst)), dst, info.get("runtime", "torch")))
    (dst / "nerflow.json").write_text(json.dumps(info))
    return dst


@pytest.fixture(scope="module")
def server(library_run, tmp_path_factory):
    """A model biased to B-PER, registered and promoted through the CLI (which builds its Bento),
    served from that Bento by a real `bentoml serve` on a loopback port."""
    work = tmp_path_factory.mktemp("serve")
    model = every_word_tagged(library_run["model"], work / "model", "B-PER")
    params = dict(library_run["params"], registry={"model_name": "nerflow-ner", "bentoml_home": str(work / "bentoml")},
                  package={"build_bento": True})
    pfile = write_params(params, work / "params.yaml")
    run_cli(["register", "--model", str(model), "--metrics", str(library_run["metrics"]), "--out", str(work / "registered.json")],
        pfile, check=True)
    tag = json.loads((work / "registered.json").read_text())["model_tag"]
    run_cli(["registry", "promote", tag], pfile, check=True)
    from nerflow.release.registry import Registry

    bento = Registry("nerflow-ner", work / "bentoml").state()["bentos"][tag]
    # a 1 MB request limit (default 4 MiB) keeps the chunked 413 case small
    # two workers, whatever the cores (one per core is the default)
    env = {"NERFLOW_MAX_REQUEST_BYTES": "1000000", "NERFLOW_WORKERS": "2"}
    with bentoml_server(bento, work / "bentoml", work / "serve.log", env=env) as s:
        yield {"url": s.url, "tag": tag, "bento": bento, "home": work / "bentoml", "log": s.log, "work": work,
               "pid": s.proc.pid}


def test_entities_with_character_offsets(server):
    r = requests.post(f"{server['url']}/extract", json={"texts": [TEXT, "", "   "]}, timeout=60)
    assert r.status_code == 200
    first, empty, blank = r.json()
    assert [(e["text"], e["start"], e["end"]) for e in first] == SPANS
    assert all(e["type"] == "PER" and TEXT[e["start"]:e["end"]] == e["text"] for e in first)
    assert all(0.99 < e["score"] <= 1.0 for e in first)
    assert empty == [] and blank == []


def test_spanish_text_offsets_slice_the_input(server):
    text = "José Martínez llegó a A Coruña el 23 de mayo (EFE)."
    r = requests.post(f"{server['url']}/extract", json={"texts": [text]}, timeout=60)
    assert r.status_code == 200, r.text
    (ents,) = r.json()
    assert [e["text"] for e in ents][:6] == ["José", "Martínez", "llegó", "a", "A", "Coruña"]
    assert all(text[e["start"]:e["end"]] == e["text"] for e in ents) and len(ents) == 14


def test_pre_tokenized_input_gets_a_tag_and_score_per_token(server):
    sentences = [["EU", "rejects", "German", "call"], ["Peter"]]
    r = requests.post(f"{server['url']}/tag_tokens", json={"sentences": sentences}, timeout=60)
    assert r.status_code == 200, r.text
    first, second = r.json()
    assert first["tags"] == ["B-PER"] * 4 and len(first["scores"]) == 4 and all(s > 0.99 for s in first["scores"])
    assert [(e["text"], e["start"], e["end"]) for e in first["entities"]] == [("EU", 0, 1), ("rejects", 1, 2), ("German", 2, 3), ("call", 3, 4)]
    assert second["tags"] == ["B-PER"]


def test_a_long_text_is_windowed_not_truncated(server):
    words = [f"w{i}" for i in range(3000)]  # far beyond the model's 64 sub-token windows
    text = " ".join(words)
    r = requests.post(f"{server['url']}/extract", json={"texts": [text]}, timeout=120)
    assert r.status_code == 200
    (ents,) = r.json()
    assert len(ents) == 3000  # every word tagged (B-PER each): none lost at a window edge or the end
    assert ents[-1] == {**ents[-1], "text": "w2999", "start": len(text) - 5, "end": len(text)}


@pytest.mark.parametrize("path, body, message", [
    ("/extract", {"texts": ["x"] * 33}, "List should have at most 32 items"),
    ("/extract", {"texts": ["x" * 20001]}, "String should have at most 20000 characters"),
    ("/extract", {"texts": []}, "List should have at least 1 item"),
    ("/extract", {"texts": "not a list"}, "list"),
    ("/tag_tokens", {"sentences": [["a"] * 4001]}, "List should have at most 4000 items"),
    ("/tag_tokens", {"sentences": [["a", ""]]}, "String should have at least 1 character"),
])
def test_limits_are_answered_with_400_and_a_clear_message(server, path, body, message):
    r = requests.post(f"{server['url']}{path}", json=body, timeout=30)
    assert r.status_code == 400 and message in r.text, r.text


def test_model_info(server, library_run):
    r = requests.post(f"{server['url']}/model_info", json={}, timeout=30)
    assert r.status_code == 200
    info = r.json()
    manifest = json.loads((library_run["dataset"] / "manifest.json").read_text())
    assert info["tag"] == server["tag"] and info["data_version"] == manifest["content_hash"]
    assert info["metrics"]["f1"] == pytest.approx(json.loads(library_run["metrics"].read_text())["f1"])
    assert info["labels"][0] == "O" and "B-PER" in info["labels"] and info["level"] == "word"
    assert info["limits"]["items_per_request"] == 32
    from nerflow.release.patches import DEFAULT_BATCH_POLL_MS

    # the worker's own BentoML dispatcher polls at nerflow's interval, not BentoML's 1 ms
    assert info["batch_poll_ms"] == DEFAULT_BATCH_POLL_MS != 1.0


def test_batch_poll_interval_is_set_on_bentomls_dispatcher_and_bad_values_are_named(monkeypatch):
    import inspect

    from bentoml._internal.marshal.dispatcher import CorkDispatcher

    from nerflow import NerflowError
    from nerflow.release.patches import (
        DEFAULT_BATCH_POLL_MS,
        batch_poll_ms,
        install_batch_poll,
    )

    # the dispatcher reads the attribute at every poll: a BentoML that stops doing so fails here
    assert inspect.getsource(CorkDispatcher.controller).count("asyncio.sleep(self.TICKET_INTERVAL)") >= 2
    monkeypatch.setattr(CorkDispatcher, "TICKET_INTERVAL", CorkDispatcher.TICKET_INTERVAL)  # restored after
    monkeypatch.delenv("NERFLOW_BATCH_POLL_MS", raising=False)
    assert install_batch_poll() == DEFAULT_BATCH_POLL_MS and CorkDispatcher.TICKET_INTERVAL == DEFAULT_BATCH_POLL_MS / 1000
    monkeypatch.setenv("NERFLOW_BATCH_POLL_MS", "2.5")
    assert install_batch_poll() == 2.5 and batch_poll_ms() == 2.5 and CorkDispatcher.TICKET_INTERVAL == 0.0025
    for bad, message in (("fast", "NERFLOW_BATCH_POLL_MS='fast': not a number of milliseconds"),
                         ("0", "NERFLOW_BATCH_POLL_MS=0: must be over 0 and at most 100 milliseconds"),
                         ("500", "NERFLOW_BATCH_POLL_MS=500: must be over 0")):
        monkeypatch.setenv("NERFLOW_BATCH_POLL_MS", bad)
        with pytest.raises(NerflowError, match=re.escape(message)):
            install_batch_poll()
        assert CorkDispatcher.TICKET_INTERVAL == 0.0025  # a bad value leaves the interval as it was


def test_health_readiness_metrics_and_openapi(server):
    for path in ("/healthz", "/livez", "/readyz"):
        assert requests.get(f"{server['url']}{path}", timeout=10).status_code == 200
    requests.post(f"{server['url']}/extract", json={"texts": ["Peter"]}, timeout=30)
    metrics = requests.get(f"{server['url']}/metrics", timeout=10).text
    assert 'bentoml_service_request_total{' in metrics and 'endpoint="/extract"' in metrics
    assert "bentoml_service_adaptive_batch_size_bucket" in metrics
    # every worker predicted once before it reported ready: a new worker's first requests do not
    # wait for lazy imports (seqeval -> scikit-learn: a worker's first requests waited 8.8 s)
    log = server["log"].read_text()
    assert log.count("ModelService worker warmed up in") == log.count("Service ModelService initialized") >= 1
    assert log.index("worker warmed up") < log.index("Service ModelService initialized")
    spec = requests.get(f"{server['url']}/docs.json", timeout=10).json()
    assert {"/extract", "/tag_tokens", "/model_info"} <= set(spec["paths"])


def test_sixteen_concurrent_clients_get_no_503(server):
    from concurrent.futures import ThreadPoolExecutor

    def client(k):
        with requests.Session() as s:
            return [s.post(f"{server['url']}/extract", json={"texts": [f"{TEXT} ({k}, {i})"]}, timeout=120).status_code
                    for i in range(12)]

    with ThreadPoolExecutor(16) as pool:
        codes = [c for row in pool.map(client, range(16)) for c in row]
    assert len(codes) == 192 and set(codes) == {200}


def test_model_store_records_data_version_and_metrics(server, library_run):
    env = {**os.environ, "BENTOML_HOME": str(server["home"])}
    out = subprocess.run([str(Path(sys.executable).parent / "bentoml"), "models", "get", server["tag"], "-o", "json"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    manifest = json.loads((library_run["dataset"] / "manifest.json").read_text())
    metrics = json.loads(library_run["metrics"].read_text())
    assert info["metadata"]["data_hash"] == manifest["content_hash"]
    assert info["metadata"]["metrics"]["f1"] == pytest.approx(metrics["f1"])
    assert info["labels"]["stage"] == "production"
    assert json.loads(info["metadata"]["params_json"])["max_steps"] == 8


def test_page_highlights_entities_in_headless_chromium(server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"{server['url']}/ui/")
    wait = WebDriverWait(browser, 30)
    wait.until(lambda d: d.find_element(By.ID, "model").get_attribute("data-tag"))
    assert server["tag"] in browser.find_element(By.ID, "model").text
    legend = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#legend span")]
    assert legend == ["LOC", "MISC", "ORG", "PER"]
    box = browser.find_element(By.ID, "text")
    box.clear()
    box.send_keys(TEXT)
    browser.find_element(By.ID, "run").click()
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#result mark")) == len(SPANS))
    marks = browser.find_elements(By.CSS_SELECTOR, "#result mark")
    assert [m.get_attribute("data-type") for m in marks] == ["PER"] * len(SPANS)
    assert [m.text.removesuffix("PER") for m in marks] == [w for w, _, _ in SPANS]
    assert browser.find_element(By.ID, "result").text.replace("PER", "") == TEXT  # the text itself, unchanged
    rows = browser.find_elements(By.CSS_SELECTOR, "#entities tbody tr")
    assert len(rows) == len(SPANS) and rows[0].text.split()[:4] == ["PER", "Angela", "0", "6"]
    assert "7 entities" in browser.find_element(By.ID, "status").text
    browser.save_screenshot(str(tmp_path / "page.png"))
    # emoji (two UTF-16 units each), a skin-tone modifier, a flag and combining marks before and inside
    # entities: the service's offsets count code points and the page highlights exactly its entities
    emoji = "😀😀 Angela Merkel met 👍🏽 Emmanuel Macron in 🇫🇷 Paris. Zoe\u0308 Bjo\u0308rk sang 👩\u200d💻 Ca\u0301diz ✓"
    served = requests.post(f"{server['url']}/extract", json={"texts": [emoji]}, timeout=30).json()[0]
    assert all(emoji[e["start"]:e["end"]] == e["text"] for e in served)
    words = [e["text"] for e in served]
    assert {"Angela", "Merkel", "Emmanuel", "Paris", "Zoe\u0308", "Bjo\u0308rk", "Ca\u0301diz"} <= set(words), words
    browser.execute_script("document.getElementById('text').value = arguments[0]", emoji)  # send_keys: BMP only
    browser.find_element(By.ID, "run").click()
    wait.until(lambda d: f"{len(served)} entities" in d.find_element(By.ID, "status").text)
    marks = browser.find_elements(By.CSS_SELECTOR, "#result mark")
    # as JSON: a wrong slice can hold half an emoji (a lone surrogate), which WebDriver cannot hand back
    shown = json.loads(browser.execute_script(
        "return JSON.stringify([...document.querySelectorAll('#result mark')].map(m => m.firstChild.textContent))"))
    assert shown == words, (shown, words)
    text = json.loads(browser.execute_script("return JSON.stringify([...document.getElementById('result').childNodes].map("
                                             "n => n.nodeType === 3 ? n.textContent : n.firstChild.textContent).join(''))"))
    assert text == emoji  # every character shown once, in order
    browser.save_screenshot(str(tmp_path / "emoji.png"))
    # a text over the limit: the service's 400 message is shown, nothing highlighted anew
    browser.execute_script("document.getElementById('text').value = 'x'.repeat(20001)")
    browser.find_element(By.ID, "run").click()
    wait.until(lambda d: "error" in d.find_element(By.ID, "status").get_attribute("class"))
    assert "400" in browser.find_element(By.ID, "status").text
    assert "at most 20000 characters" in browser.find_element(By.ID, "status").text
    # no request left the machine: every resource the page loaded came from the service
    urls = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert urls and all(u.startswith(server["url"]) for u in urls)


def test_fuzzing_the_openapi_schema_finds_no_server_error(server):
    """Property-based requests generated from the service's own OpenAPI schema (schemathesis):
    bodies that fit the schema and bodies that break it must never get a 5xx."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis.generation.modes import GenerationMode

    schema = schemathesis.openapi.from_url(f"{server['url']}/docs.json")
    tested = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path not in ("/extract", "/tag_tokens", "/model_info"):
            continue
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            codes = []

            @settings(max_examples=30, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
            @given(case=operation.as_strategy(mode))
            def check(case):
                response = case.call(base_url=server["url"], timeout=120)
                codes.append(response.status_code)
                assert response.status_code < 500, (case.body, response.status_code, response.text[:500])

            check()
            tested[(operation.path, mode.value)] = codes
    assert len(tested) == 6
    for (path, mode), codes in tested.items():
        assert codes, (path, mode)
        if mode == "positive" and path != "/model_info":
            assert 200 in codes, (path, sorted(set(codes)))
        if mode == "negative" and path != "/model_info":
            assert 400 in codes, (path, sorted(set(codes)))


def raw_post(url: str, path: str, head: dict, body: bytes) -> tuple[int, bytes]:
    """A POST written by hand on a socket: the headers say what we like, the body is what we send."""
    import socket
    from urllib.parse import urlsplit

    host, port = urlsplit(url).hostname, urlsplit(url).port
    with socket.create_connection((host, port), timeout=30) as sock:
        lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", "Content-Type: application/json",
                 *(f"{k}: {v}" for k, v in head.items()), "Connection: close", "", ""]
        sock.sendall("\r\n".join(lines).encode() + body)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, data.split(b"\r\n\r\n", 1)[1]


def test_a_body_over_the_limit_is_413_before_it_is_read(server):
    # a 50 MB body announced, 10 bytes of it sent: the answer comes without waiting for the rest
    t = time.time()
    status, body = raw_post(server["url"], "/extract", {"Content-Length": str(50 * 10**6)}, b'{"texts": ')
    assert status == 413 and time.time() - t < 5
    assert "request body over the limit of 1000000 bytes (NERFLOW_MAX_REQUEST_BYTES)" in body.decode()
    # no Content-Length (chunked): counted while read, refused once past the limit
    chunks = (b'{"texts": ["' + b"a" * 200_000 + b'"]}' for _ in range(6))
    r = requests.post(f"{server['url']}/extract", data=chunks, headers={"Content-Type": "application/json"}, timeout=30)
    assert r.status_code == 413 and "over the limit" in r.text
    small = (part for part in (b'{"texts": ', b'["Angela Merkel"]}'))  # chunked and small: served
    r = requests.post(f"{server['url']}/extract", data=small, headers={"Content-Type": "application/json"}, timeout=30)
    assert r.status_code == 200 and r.json()[0][0]["type"] == "PER"


def test_client_errors_are_logged_as_one_warning_line(server):
    r = requests.post(f"{server['url']}/extract", json={"texts": []}, timeout=30)
    assert r.status_code == 400
    time.sleep(1)  # the worker's log line reaches the file
    lines = server["log"].read_text().splitlines()
    warned = [line for line in lines if "client error on /extract [POST]: 400: 1 validation error(s), first: texts" in line]
    assert warned and "WARNING" in warned[-1], lines[-20:]
    assert not [line for line in lines if "Traceback" in line or "[ERROR]" in line], lines[-40:]


def test_metrics_carry_the_served_model_tag(server):
    metrics = requests.get(f"{server['url']}/metrics", timeout=10).text
    assert [line for line in metrics.splitlines() if line.startswith("nerflow_model_info{")] == \
        [f'nerflow_model_info{{model_tag="{server["tag"]}"}} 1.0']


def _workers_of(pid: int) -> list[int]:
    """The BentoML worker processes (children of the `bentoml serve` arbiter ``pid``)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == pid and b"_bentoml_impl.worker.service" in cmdline:
            found.append(int(stat.parent.name))
    return sorted(found)


def test_keep_alive_connections_are_spread_evenly_over_the_workers(server):
    """The workers share one listening socket and keep what they accept: with one worker stopped
    while 12 clients connect, the other holds all 12. Once both run, the one over its share closes
    a connection after an answer (Connection: close; the client reconnects) until the split is
    even, and no request fails."""
    import http.client
    import signal
    import threading

    import psutil

    port = int(server["url"].rsplit(":", 1)[1])
    workers = _workers_of(server["pid"])
    assert len(workers) == 2

    def held() -> list[int]:
        return [sum(c.status == "ESTABLISHED" and c.laddr.port == port for c in psutil.Process(w).net_connections("tcp"))
                for w in workers]

    body = json.dumps({"texts": [TEXT]})

    def ask(conn) -> int:
        conn.request("POST", "/extract", body=body, headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        r.read()
        return r.status

    conns = [http.client.HTTPConnection("127.0.0.1", port, timeout=60) for _ in range(12)]
    os.kill(workers[1], signal.SIGSTOP)
    try:
        first = [ask(c) for c in conns]  # all answered by the running worker
    finally:
        os.kill(workers[1], signal.SIGCONT)
    at_start = held()
    codes: list[int] = []

    def client(conn) -> None:
        deadline = time.time() + 4
        while time.time() < deadline:
            codes.append(ask(conn))

    threads = [threading.Thread(target=client, args=(c,)) for c in conns]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    at_end = held()
    for c in conns:
        c.close()
    print(f"connections per worker: {at_start} with one worker stopped, {at_end} after {len(codes)} requests")
    assert first == [200] * 12 and at_start[1] == 0 and at_start[0] >= 8
    assert codes and set(codes) == {200}
    assert min(at_end) >= 5 and max(at_end) <= 7, at_end  # 6/6, give or take one reconnecting


def test_bearer_token_auth_and_sigterm_drains_in_flight_requests(server, tmp_path):
    """A server that requires a token (from a mounted-secret file): 401 without it, health,
    readiness, metrics and the page open. Under load from 8 clients, SIGTERM to one of its two
    workers loses no request (it answers what it has and closes its connections after their
    next answer; another worker is started); SIGTERM to the server answers every request sent
    before it (new ones are refused: Kubernetes stops routing to a pod before it sends SIGTERM)."""
    import signal
    import threading

    secret = tmp_path / "token"
    secret.write_text("s3cret-token\n")
    env = {"NERFLOW_API_TOKEN_FILE": str(secret), "NERFLOW_WORKERS": "2", "NERFLOW_TORCH_THREADS": "1"}
    with bentoml_server(server["bento"], server["home"], tmp_path / "serve.log", env=env) as s:
        url, auth = s.url, {"Authorization": "Bearer s3cret-token"}
        r = requests.post(f"{url}/extract", json={"texts": [TEXT]}, timeout=30)
        assert r.status_code == 401 and r.headers["www-authenticate"] == 'Bearer realm="nerflow"'
        assert requests.post(f"{url}/extract", json={"texts": [TEXT]}, headers={"Authorization": "Bearer nope"},
                             timeout=30).status_code == 401
        assert requests.post(f"{url}/extract", json={"texts": [TEXT]}, headers=auth, timeout=30).status_code == 200
        for path in ("/livez", "/readyz", "/healthz", "/metrics", "/ui/"):
            assert requests.get(f"{url}{path}", timeout=10).status_code == 200, path

        results, stop = [], threading.Event()  # (sent at, finished at, status or error)

        def client(k):
            with requests.Session() as session:
                i = 0
                while not stop.is_set():
                    sent = time.time()
                    try:
                        code = session.post(f"{url}/extract", json={"texts": [f"{TEXT} ({k}, {i})"]}, headers=auth,
                                            timeout=60).status_code
                    except requests.RequestException as exc:
                        code = type(exc).__name__
                    results.append((sent, time.time(), code))
                    i += 1

        threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        time.sleep(3)
        before = _workers_of(s.proc.pid)
        assert len(before) == 2
        os.kill(before[0], signal.SIGTERM)  # one worker, as a rolling restart or an OOM-killer's TERM would
        time.sleep(6)
        deadline = time.time() + 90  # a new worker starts (loads its model) while the load goes on
        while (len(after := _workers_of(s.proc.pid)) < 2 or before[0] in after) and time.time() < deadline:
            time.sleep(0.5)
        worker_phase = list(results)
        term_at = time.time()
        s.proc.send_signal(signal.SIGTERM)  # the server, as Kubernetes does when the pod stops
        s.proc.wait(timeout=120)
        stop.set()
        for t in threads:
            t.join(timeout=120)

    failed_worker = [r for r in worker_phase if r[2] != 200]
    rest = results[len(worker_phase):]
    # in flight when the server got SIGTERM: sent before it, answered after it
    sent_before = [r for r in rest if r[0] < term_at]
    in_flight = [r for r in sent_before if r[1] >= term_at]
    after_term = [r for r in rest if r[0] >= term_at]
    print(f"SIGTERM to a worker: {len(worker_phase)} requests sent, {len(failed_worker)} failed; "
          f"SIGTERM to the server: {len(sent_before)} sent before it ({len(in_flight)} in flight at the signal), "
          f"{sum(r[2] != 200 for r in sent_before)} failed; {len(after_term)} sent after it, "
          f"{sum(r[2] != 200 for r in after_term)} refused (the server is stopping)")
    assert len(worker_phase) > 50 and not failed_worker, failed_worker[:5]
    assert before[0] not in after and len(after) == 2  # the terminated worker left; a new one took its place
    assert in_flight and all(r[2] == 200 for r in sent_before), [r for r in sent_before if r[2] != 200][:5]
