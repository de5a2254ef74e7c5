"""companion.base_models: deterministic recipes, the cache (round trip, two builders at once, corruption), and a
model that beats the unigram baseline."""

from __future__ import annotations

import dataclasses
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from companion import base_models as bm
from companion import config

ROOT = Path(__file__).resolve().parent.parent
# A recipe small enough to build in a few seconds: ~300 poems, a 300-token vocabulary, one small block.
TINY = dataclasses.replace(
    bm.recipe("tang", "quick"), vocab_size=300, tokenizer_chars=20_000, poem_stride=150, val_every=400,
    context=32, dim=32, heads=2, layers=1, stride=32, batch_size=16,
)  # fmt: skip


@pytest.fixture(autouse=True)
def on_cpu(monkeypatch, tmp_path):
    monkeypatch.setenv("COMPANION_DEVICE", "cpu")
    monkeypatch.setenv("COMPANION_CACHE", str(tmp_path / "cache"))


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_same_recipe_gives_bit_identical_weights():
    first, second = bm.build(TINY), bm.build(TINY)
    assert same_weights(first.model, second.model)
    assert first.val_loss == second.val_loss and first.tokenizer.merges == second.tokenizer.merges
    other = bm.build(dataclasses.replace(TINY, seed=1))
    assert not same_weights(first.model, other.model)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_the_recipe_records_the_precision_and_the_cache_tells_them_apart(monkeypatch, precision):
    monkeypatch.setenv("COMPANION_PRECISION", precision)
    r = bm.recipe("tang", "quick")
    assert r.precision == precision
    other = dataclasses.replace(r, precision="bf16" if precision == "fp32" else "fp32")
    assert r.key() != other.key()


def test_the_precision_of_the_recipe_is_the_precision_of_the_training():
    other = dataclasses.replace(TINY, precision="bf16" if TINY.precision == "fp32" else "fp32")
    assert not same_weights(bm.build(TINY).model, bm.build(other).model)


def test_cache_round_trip_equals_the_fresh_model(monkeypatch):
    fresh = bm.cached(TINY)
    folder = bm.entry_dir(TINY)
    assert folder.parent == Path(os.environ["COMPANION_CACHE"]) / "base-models" and folder.name.startswith("tang-quick-cpu-")
    assert sorted(p.name for p in folder.iterdir()) == ["ids.pt", "meta.json", "model.pt", "tokenizer.json"]

    def no_build(recipe):
        raise AssertionError("a valid cache entry must be loaded, not rebuilt")

    monkeypatch.setattr(bm, "build", no_build)
    loaded = bm.cached(TINY)
    assert same_weights(fresh.model, loaded.model) and not loaded.model.training
    assert loaded.tokenizer.merges == fresh.tokenizer.merges and loaded.tokenizer.vocab == fresh.tokenizer.vocab
    assert loaded.val_loss == fresh.val_loss and loaded.unigram_loss == fresh.unigram_loss
    assert torch.equal(loaded.train_ids, fresh.train_ids) and torch.equal(loaded.val_ids, fresh.val_ids)
    assert loaded.recipe == TINY
    window = fresh.val_ids[: TINY.context].unsqueeze(0)
    with torch.no_grad():
        assert torch.equal(loaded.model(window), fresh.model(window))


def test_a_corrupt_entry_is_rebuilt_never_used(monkeypatch):
    original = bm.cached(TINY)
    model_file = bm.entry_dir(TINY) / "model.pt"
    raw = bytearray(model_file.read_bytes())
    raw[-100] ^= 0xFF
    model_file.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="does not match its recorded SHA-256"):
        bm.load(bm.entry_dir(TINY))
    builds, real = [], bm.build
    monkeypatch.setattr(bm, "build", lambda r: builds.append(r) or real(r))
    rebuilt = bm.cached(TINY)
    assert builds == [TINY] and same_weights(rebuilt.model, original.model)
    assert bm.load(bm.entry_dir(TINY)).val_loss == original.val_loss

BUILDER = """
import sys
from companion import base_models as bm
import tests.test_base_models as t
real = bm.build
def build(r):
    print("built", flush=True)
    return real(r)
bm.build = build
print(bm.cached(t.TINY).val_loss)
"""


def test_two_processes_building_at_once_leave_one_valid_entry(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    runs = [
        subprocess.Popen([sys.executable, "-c", BUILDER], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [run.communicate(timeout=600)[0].split() for run in runs]
    assert [run.returncode for run in runs] == [0, 0]
    assert sorted(out[0] for out in outputs).count("built") == 1  # the lock let one build, the other load
    assert outputs[0][-1] == outputs[1][-1]  # the same validation loss
    cache = Path(os.environ["COMPANION_CACHE"])
    entries = [p.name for p in (cache / "base-models").iterdir() if p.is_dir()]
    assert entries == [bm.entry_dir(TINY).name]  # no staging folder left behind
    assert bm.load(cache / "base-models" / entries[0]).recipe == TINY


def test_the_script_caches_every_corpus_two_at_a_time_and_reports_their_losses(capsys):
    bm.main(["--profile", "quick", "--jobs", "2"])
    lines = sorted(capsys.readouterr().out.splitlines())
    assert [line.split()[2] for line in lines] == sorted(bm.CORPORA)
    for corpus, line in zip(sorted(bm.CORPORA), lines):
        entry = bm.entry_dir(bm.recipe(corpus, "quick"))
        assert entry.is_dir() and f"validation loss {bm.load(entry).val_loss:.3f} nats/token" in line
    with pytest.raises(SystemExit):
        bm.main(["--jobs", "0"])


def test_the_quick_shakespeare_model_beats_the_unigram_baseline():
    model = bm.base_model("shakespeare", "quick")
    assert model.recipe == bm.recipe("shakespeare", "quick")
    assert len(model.tokenizer) == 1024 and model.model.config.vocab_size == 1024
    assert model.val_loss < model.unigram_loss - 1.0, (model.val_loss, model.unigram_loss)
    assert model.unigram_loss < math.log(1024)  # frequencies beat a uniform guess
    prompt = torch.tensor(model.tokenizer.encode("ROMEO:"))
    text = model.tokenizer.decode(model.model.generate(prompt, 20, generator=torch.Generator().manual_seed(0)))
    assert text.startswith("ROMEO:") and len(text) > len("ROMEO:")


@pytest.mark.slow
def test_the_quick_tang_model_beats_the_unigram_baseline():
    model = bm.base_model("tang", "quick")
    assert len(model.tokenizer) == 2048 and model.tokenizer.special_tokens == {"<|endoftext|>": 2047}
    assert model.val_loss < model.unigram_loss - 0.5, (model.val_loss, model.unigram_loss)
    eot = torch.tensor([2047])
    poem = model.tokenizer.decode(model.model.generate(eot, 30, generator=torch.Generator().manual_seed(0))[1:])
    assert any("\u4e00" <= char <= "\u9fff" for char in poem)  # it writes Chinese characters


def test_profiles_share_the_tokenizer_text_and_the_validation_text():
    for corpus in bm.CORPORA:
        quick, full = bm.recipe(corpus, "quick"), bm.recipe(corpus, "full")
        assert quick.key() != full.key()
        tq, _, vq = bm.texts(quick)
        tf, _, vf = bm.texts(full)
        assert tq == tf and vq == vf


def test_tang_text_separates_poems_with_the_end_of_text_token():
    _, train_text, val_text = bm.texts(TINY)
    assert train_text.endswith("<|endoftext|>") and val_text.count("<|endoftext|>") == 57_603 // 400


def test_the_validation_poems_are_the_validation_text_and_never_training_text():
    poems = bm.validation_poems(TINY)
    _, train_text, val_text = bm.texts(TINY)
    assert len(poems) == 57_603 // 400 and all(p.lines for p in poems)
    assert val_text == "".join(p.text + "<|endoftext|>" for p in poems)
    assert not any(p.text in train_text for p in poems[:20])
    with pytest.raises(ValueError, match="only the Tang poems"):
        bm.validation_poems(bm.recipe("shakespeare", "quick"))


def test_unigram_loss_is_the_cross_entropy_of_smoothed_frequencies():
    train_ids, val_ids = torch.tensor([0, 0, 0, 1]), torch.tensor([0, 2])
    # counts + 1 = [4, 2, 1] of 7
    expected = -(math.log(4 / 7) + math.log(1 / 7)) / 2
    assert bm.unigram_loss(train_ids, val_ids, 3) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: bm.base_model("latin"), r"corpus must be one of \('shakespeare', 'tang'\); got 'latin'"),
        (lambda: bm.recipe("tang", "medium"), r"profile must be one of \('quick', 'full'\); got 'medium'"),
    ],
)
def test_bad_calls_are_clear_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_cache_dir_defaults(monkeypatch, tmp_path):
    monkeypatch.setenv("COMPANION_CACHE", str(tmp_path / "c"))
    assert config.cache_dir() == tmp_path / "c"
    monkeypatch.delenv("COMPANION_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert config.cache_dir() == tmp_path / "x" / "companion"


def test_the_script_builds_the_corpora_named_in_this_process_on_the_threads_asked(capsys):
    threads = torch.get_num_threads()
    bm.main(["--profile", "quick", "--corpus", "shakespeare", "--threads", "1"])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and lines[0].startswith("base model shakespeare (quick): cached after")
    assert torch.get_num_threads() == threads
    for bad in (["--threads", "0"], ["--corpus", "klingon"]):
        with pytest.raises(SystemExit):
            bm.main(bad)
