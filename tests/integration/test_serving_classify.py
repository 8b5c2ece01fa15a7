"""Text classification served: nerflow.tasks.text.classify.TextClassifier against a direct forward pass,
and a real `bentoml serve` of a registered, promoted tiny text-classification model's Bento on
a loopback port (/classify, its limits, the other task's endpoints, model_info, the page)."""

import json
from pathlib import Path

import numpy as np
import pytest
import requests
import yaml
from conftest import ROOT, bentoml_server, build_tiny_bert, run_cli, write_params

SENTENCES = [
    "이 영화 정말 재미있어요", "배우들의 연기가 훌륭했다", "다시는 보고 싶지 않다", "서울에서 친구를 만났다",
    "The film was wonderful", "I did not like the ending", "Service was slow but the food was great",
]
LABELS = ["negative", "positive"]
MAX_LENGTH, HEAD_SHARE = 32, 0.25
REACH = 2.0  # the most the head's weights can move the positive-minus-negative logit
LONG = " ".join(SENTENCES * 12)  # far over 32 sub-tokens
METRICS = {"accuracy": 0.875, "macro_f1": 0.8612, "f1": 0.8612, "precision": 0.8701, "recall": 0.8533,
           "per_class": {"negative": {"f1": 0.84, "support": 40}, "positive": {"f1": 0.8824, "support": 56}},
           "task": "text-classification", "split": "test"}


def positive_classifier(out: Path) -> Path:
    """A tiny BERT with a two-class head for which "positive" wins every text by at least one
    logit: the pooled features lie in [-1, 1], so a positive bias of 1 more than the head's
    weights can move the logits (their L1 norm, 2) settles the label. The attention's value and
    output weights are scaled up so the text, not only [CLS]'s position, moves the features,
    and the probabilities differ from text to text (a wrong order or a wrong cut shows)."""
    import torch
    from transformers import AutoModelForSequenceClassification

    build_tiny_bert(out, [w for s in SENTENCES for w in s.split()])
    model = AutoModelForSequenceClassification.from_pretrained(
        str(out), num_labels=2, id2label=dict(enumerate(LABELS)), label2id={k: i for i, k in enumerate(LABELS)})
    with torch.no_grad():
        for layer in model.bert.encoder.layer:
            layer.attention.self.value.weight.mul_(10.0)
            layer.attention.output.dense.weight.mul_(10.0)
        model.bert.pooler.dense.weight.mul_(10.0)
        torch.manual_seed(1)
        weight = torch.randn(2, model.config.hidden_size)
        weight *= REACH / (weight[1] - weight[0]).abs().sum()
        model.classifier.weight.copy_(weight)
        model.classifier.bias.copy_(torch.tensor([0.0, REACH + 1.0]))
    model.save_pretrained(str(out))
    (out / "nerflow.json").write_text(json.dumps({
        "task": "text-classification", "labels": LABELS, "max_length": MAX_LENGTH, "truncation": "head_tail",
        "head_share": HEAD_SHARE, "content_hash": "c1a55" * 8, "base_model": "tiny-bert", "train": {"max_steps": 0}}))
    return out


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return positive_classifier(tmp_path_factory.mktemp("cls") / "model")


def direct_probabilities(model_dir: Path, texts: list[str]) -> np.ndarray:
    """Each text through the model on its own, cut by hand to MAX_LENGTH as the contract says:
    its first quarter of the budget and its end."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir)).eval()
    out = []
    for text in texts:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        budget = MAX_LENGTH - 2
        if len(ids) > budget:
            head = round(budget * HEAD_SHARE)
            ids = ids[:head] + ids[len(ids) - (budget - head):]
        ids = [tok.cls_token_id, *ids, tok.sep_token_id]
        with torch.no_grad():
            out.append(model(input_ids=torch.tensor([ids])).logits.float().softmax(-1)[0].numpy())
    return np.stack(out)


def test_probabilities_are_a_direct_forward_pass_cut_as_in_training(model_dir):
    from nerflow.tasks.text.classify import TextClassifier

    clf = TextClassifier(model_dir, precision="fp32", batch_size=4)
    texts = SENTENCES + [LONG, "", LONG[:300]]
    probs = clf.probabilities(texts)
    assert probs.dtype == np.float32 and probs.shape == (len(texts), 2)
    expected = direct_probabilities(model_dir, texts)
    np.testing.assert_allclose(probs, expected, atol=1e-5)
    assert np.ptp(probs[:, 1]) > 0.01  # the texts really differ: the comparison means something
    reordered = clf.probabilities(texts[::-1])[::-1]
    np.testing.assert_allclose(reordered, probs, atol=1e-5)
    results = clf.predict(texts)
    assert [r["label"] for r in results] == ["positive"] * len(texts)
    assert [r["truncated"] for r in results] == [False] * len(SENTENCES) + [True, False, True]
    assert all(r["score"] == round(float(p[1]), 4) and list(r["scores"]) == LABELS for r, p in zip(results, probs))
    assert clf.labels == LABELS and clf.label_index == {"negative": 0, "positive": 1} and clf.max_length == MAX_LENGTH
    assert clf.predict([]) == [] and clf.probabilities([]).shape == (0, 2)


def test_a_token_classification_model_is_refused(tmp_path):
    from nerflow import NerflowError
    from nerflow.tasks.text.classify import TextClassifier

    (tmp_path / "nerflow.json").write_text(json.dumps({"labels": ["O", "B-PER", "I-PER"], "max_length": 64}))
    with pytest.raises(NerflowError, match="token-classification model"):
        TextClassifier(tmp_path)


@pytest.fixture(scope="module")
def server(model_dir, tmp_path_factory):
    """The model registered and promoted through the CLI (which builds its Bento), served from
    that Bento by a real `bentoml serve` on a loopback port."""
    work = tmp_path_factory.mktemp("serve-cls")
    (work / "metrics.json").write_text(json.dumps(METRICS))
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["registry"] = {"model_name": "nerflow-cls", "bentoml_home": str(work / "bentoml")}
    params["package"] = {"build_bento": True}
    if "task" in params["data"]:
        params["data"]["task"] = "text-classification"
    pfile = write_params(params, work / "params.yaml")
    run_cli(["register", "--model", str(model_dir), "--metrics", str(work / "metrics.json"),
             "--out", str(work / "registered.json")], pfile, check=True)
    tag = json.loads((work / "registered.json").read_text())["model_tag"]
    run_cli(["registry", "promote", tag], pfile, check=True)
    from nerflow.release.registry import Registry

    bento = Registry("nerflow-cls", work / "bentoml").state()["bentos"][tag]
    with bentoml_server(bento, work / "bentoml", work / "serve.log") as s:
        yield {"url": s.url, "tag": tag, "log": s.log}


def classify(server, texts, timeout=60):
    return requests.post(f"{server['url']}/classify", json={"texts": texts}, timeout=timeout)


def test_one_text_and_twenty_in_one_request_keep_their_order(server, model_dir):
    from nerflow.tasks.text.classify import TextClassifier

    r = classify(server, [SENTENCES[0]])
    assert r.status_code == 200, r.text
    (one,) = r.json()
    assert one["label"] == "positive" and one["truncated"] is False and set(one["scores"]) == set(LABELS)
    assert sum(one["scores"].values()) == pytest.approx(1.0, abs=1e-4) and one["score"] == round(one["scores"]["positive"], 4)
    words = " ".join(SENTENCES).split()
    texts = [" ".join(words[i:i + 2 + i % 6]) for i in range(20)]  # 20 texts of 2 to 7 words
    r = classify(server, texts)
    assert r.status_code == 200, r.text
    results = r.json()
    local = TextClassifier(model_dir)  # the precision the server resolved on this machine
    expected = local.probabilities(texts)[:, 1]
    assert np.ptp(expected) > 0.01
    assert [x["label"] for x in results] == ["positive"] * 20
    np.testing.assert_allclose([x["scores"]["positive"] for x in results], expected,
                               atol=1e-5 if local.precision == "fp32" else 2e-3)
    assert all(sum(x["scores"].values()) == pytest.approx(1.0, abs=1e-4) for x in results)


def test_a_text_over_max_length_is_cut_and_answered(server):
    r = classify(server, [LONG, "", SENTENCES[4]])
    assert r.status_code == 200, r.text
    assert [(x["label"], x["truncated"]) for x in r.json()] == [("positive", True), ("positive", False), ("positive", False)]


def test_sixteen_concurrent_clients_get_no_server_error(server):
    from concurrent.futures import ThreadPoolExecutor

    def client(k):
        with requests.Session() as s:
            return [s.post(f"{server['url']}/classify", json={"texts": [f"{SENTENCES[k % 7]} {k} {i}"]},
                           timeout=120).status_code for i in range(4)]

    with ThreadPoolExecutor(16) as pool:
        codes = [c for row in pool.map(client, range(16)) for c in row]
    assert len(codes) == 64 and set(codes) == {200}


@pytest.mark.parametrize("path, body, message", [
    ("/classify", {"texts": ["x"] * 33}, "List should have at most 32 items"),
    ("/classify", {"texts": ["x" * 20001]}, "String should have at most 20000 characters"),
    ("/classify", {"texts": []}, "List should have at least 1 item"),
    ("/extract", {"texts": ["The film was wonderful"]}, "is a text-classification model: use /classify"),
    ("/tag_tokens", {"sentences": [["The", "film"]]}, "is a text-classification model: use /classify"),
])
def test_limits_and_the_other_tasks_endpoints_answer_400(server, path, body, message):
    r = requests.post(f"{server['url']}{path}", json=body, timeout=30)
    assert r.status_code == 400 and message in r.text, r.text


def test_model_info_says_the_task_labels_and_metrics(server):
    info = requests.post(f"{server['url']}/model_info", json={}, timeout=30).json()
    assert info["task"] == "text-classification" and info["labels"] == LABELS and info["tag"] == server["tag"]
    assert info["metrics"]["accuracy"] == 0.875 and info["metrics"]["macro_f1"] == 0.8612
    assert info["truncation"] == {"max_length": MAX_LENGTH, "mode": "head_tail", "head_share": HEAD_SHARE}
    assert info["data_version"] == "c1a55" * 8 and info["limits"]["items_per_request"] == 32


def test_page_shows_the_label_and_every_class_probability(server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"{server['url']}/ui/")
    wait = WebDriverWait(browser, 30)
    wait.until(lambda d: d.find_element(By.ID, "model").get_attribute("data-task") == "text-classification")
    assert "accuracy 0.8750" in browser.find_element(By.ID, "model").text
    box = browser.find_element(By.ID, "text")
    box.clear()
    box.send_keys("배우들의 연기가 정말 훌륭했다")
    browser.find_element(By.ID, "run").click()
    wait.until(lambda d: d.find_element(By.ID, "label").text == "positive")
    rows = browser.find_elements(By.CSS_SELECTOR, "#classes tbody tr")
    assert [r.get_attribute("data-label") for r in rows] == LABELS
    probs = [float(r.find_elements(By.TAG_NAME, "td")[1].text) for r in rows]
    assert probs[1] > probs[0] and sum(probs) == pytest.approx(1.0, abs=2e-4)
    assert "top" in rows[1].get_attribute("class") and not browser.find_element(By.ID, "result").is_displayed()
    browser.save_screenshot(str(tmp_path / "page.png"))
    urls = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert urls and all(u.startswith(server["url"]) for u in urls)


def test_client_errors_left_no_traceback_in_the_log(server):
    lines = server["log"].read_text().splitlines()
    assert not [line for line in lines if "Traceback" in line or "[ERROR]" in line], lines[-40:]
