"""companion.pretrained against transformers and safetensors, offline: the safetensors reader against the
library's own files, tiny random GPT-2 and Llama checkpoints loaded into TinyGPT with the same logits and the
same greedy generations as transformers, clear errors for wrong checkpoints, and downloads from a local server."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from companion import config, pretrained
from companion.models import TinyGPT

transformers = pytest.importorskip("transformers")
safetensors_torch = pytest.importorskip("safetensors.torch")

VOCAB = 100


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """No test here reaches the network: transformers builds its models locally, downloads go to a local server."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


# --------------------------------------------------------------------------------------------
# the safetensors reader
# --------------------------------------------------------------------------------------------

DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.int32, torch.int16,
          torch.int8, torch.uint8, torch.bool]  # fmt: skip


def random_tensor(gen: torch.Generator, dtype: torch.dtype, shape: tuple[int, ...]) -> torch.Tensor:
    if dtype.is_floating_point:
        return (torch.randn(shape, generator=gen, dtype=torch.float64) * 100).to(dtype)
    if dtype == torch.bool:
        return torch.rand(shape, generator=gen) < 0.5
    low, high = max(torch.iinfo(dtype).min, -(2**31)), min(torch.iinfo(dtype).max, 2**31 - 1)
    return torch.randint(low, high, shape, generator=gen, dtype=torch.int64).to(dtype)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(DTYPES), st.lists(st.integers(0, 5), max_size=4)), min_size=1, max_size=6),
       st.integers(0, 2**31 - 1))  # fmt: skip
def test_reader_matches_the_safetensors_library(tmp_path, specs, seed):
    gen = torch.Generator().manual_seed(seed)
    tensors = {f"t{i}.weight": random_tensor(gen, dtype, tuple(shape)) for i, (dtype, shape) in enumerate(specs)}
    path = tmp_path / f"{seed}.safetensors"
    safetensors_torch.save_file(tensors, str(path), metadata={"format": "pt"})
    ours, theirs = pretrained.read_safetensors(path), safetensors_torch.load_file(str(path))
    assert ours.keys() == theirs.keys() == tensors.keys()
    for name, tensor in theirs.items():
        assert ours[name].dtype == tensor.dtype and ours[name].shape == tensor.shape
        assert torch.equal(ours[name], tensor)


def test_reader_refuses_broken_files_and_names_the_tensor(tmp_path):
    path = tmp_path / "a.safetensors"
    safetensors_torch.save_file({"a": torch.ones(3), "b": torch.zeros(2, 2)}, str(path))
    raw = path.read_bytes()
    (tmp_path / "short.safetensors").write_bytes(raw[:-4])
    with pytest.raises(ValueError, match="tensor 'b' .* truncated or corrupt"):
        pretrained.read_safetensors(tmp_path / "short.safetensors")
    (tmp_path / "long.safetensors").write_bytes(raw + b"\0" * 4)
    with pytest.raises(ValueError, match="the file holds"):
        pretrained.read_safetensors(tmp_path / "long.safetensors")
    (tmp_path / "header.safetensors").write_bytes((10**9).to_bytes(8, "little") + raw[8:])
    with pytest.raises(ValueError, match="header announces"):
        pretrained.read_safetensors(tmp_path / "header.safetensors")
    header = json.dumps({"x": {"dtype": "C64", "shape": [1], "data_offsets": [0, 8]}}).encode()
    (tmp_path / "dtype.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + b"\0" * 8)
    with pytest.raises(ValueError, match="tensor 'x' has dtype 'C64'"):
        pretrained.read_safetensors(tmp_path / "dtype.safetensors")
    (tmp_path / "tiny").write_bytes(b"abc")
    with pytest.raises(ValueError, match="not a safetensors file"):
        pretrained.read_safetensors(tmp_path / "tiny")


# --------------------------------------------------------------------------------------------
# tiny random checkpoints of transformers
# --------------------------------------------------------------------------------------------


def gpt2(tied: bool = True):
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=2, n_head=2, n_embd=32, vocab_size=VOCAB, n_positions=64,
                                     bos_token_id=0, eos_token_id=1, tie_word_embeddings=tied)  # fmt: skip
    return transformers.GPT2LMHeadModel(config)


def llama(tied: bool = False, kv_heads: int = 2, bias: bool = False):
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=kv_heads, max_position_embeddings=64,
                                      tie_word_embeddings=tied, attention_bias=bias, mlp_bias=bias,
                                      rope_theta=1000.0, bos_token_id=0, eos_token_id=1)  # fmt: skip
    return transformers.LlamaForCausalLM(config)


CHECKPOINTS = {
    "gpt2 (tied)": lambda: gpt2(True),
    "gpt2 (untied)": lambda: gpt2(False),
    "llama (gqa)": lambda: llama(False, 2),
    "llama (tied, mqa)": lambda: llama(True, 1),
    "llama (biases, mha)": lambda: llama(False, 4, bias=True),
}


def saved(make, folder: Path):
    """A random checkpoint of transformers, its weights spread wider than at initialisation, saved in ``folder``."""
    model = make()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)  # varied logits: greedy decoding does not repeat one token
    model.save_pretrained(folder)
    return model.eval()


@pytest.mark.parametrize("name", CHECKPOINTS)
@pytest.mark.parametrize("attention", ["torch", "scratch"])
def test_loaded_checkpoints_give_transformers_logits(tmp_path, name, attention):
    theirs = saved(CHECKPOINTS[name], tmp_path)
    assert (tmp_path / "model.safetensors").is_file() and (tmp_path / "config.json").is_file()
    ours = pretrained.load_pretrained(tmp_path, attention=attention)
    assert not ours.training and ours.config.attention == attention
    ids = torch.randint(0, VOCAB, (3, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = theirs(ids).logits
        torch.testing.assert_close(ours(ids), expected, rtol=0, atol=1e-5)
    extra = 0  # the checkpoints' read-out has no bias; where the course's model has one, it is zero
    if ours.head.bias is not None:
        assert torch.equal(ours.head.bias, torch.zeros(VOCAB))
        extra = VOCAB
    assert sum(p.numel() for p in ours.parameters()) == theirs.num_parameters() + extra


@pytest.mark.parametrize("name", CHECKPOINTS)
def test_greedy_generation_with_the_cache_equals_transformers(tmp_path, name):
    theirs = saved(CHECKPOINTS[name], tmp_path)
    ours = pretrained.load_pretrained(tmp_path)
    prompt = torch.randint(0, VOCAB, (2, 5), generator=torch.Generator().manual_seed(2))
    expected = theirs.generate(prompt, max_new_tokens=30, do_sample=False, eos_token_id=None, pad_token_id=0)
    got = ours.generate(prompt, 30, temperature=0)
    assert torch.equal(got, expected)
    assert got[:, 5:].unique().numel() > 3


def test_config_from_hf_maps_the_switches():
    gpt = pretrained.config_from_hf(gpt2().config.to_dict())
    assert (gpt.positions, gpt.norm, gpt.mlp, gpt.bias, gpt.tie_weights, gpt.context) == (
        "learned", "layer", "gelu_tanh", True, True, 64)  # fmt: skip
    ll = pretrained.config_from_hf(llama(kv_heads=1).config.to_dict(), context=16)
    assert (ll.positions, ll.norm, ll.mlp, ll.kv_heads, ll.bias, ll.rope_base, ll.norm_eps, ll.context) == (
        "rope", "rms", "swiglu", 1, False, 1000.0, 1e-6, 16)  # fmt: skip
    with pytest.raises(ValueError, match="model_type 'bert'"):
        pretrained.config_from_hf({"model_type": "bert"})
    scaled = llama().config.to_dict() | {"rope_parameters": {"rope_type": "llama3", "rope_theta": 1e4}}
    with pytest.raises(ValueError, match="RoPE scaling"):
        pretrained.config_from_hf(scaled)
    with pytest.raises(ValueError, match="activation_function 'relu'"):
        pretrained.config_from_hf(gpt2().config.to_dict() | {"activation_function": "relu"})


def test_every_tensor_of_the_model_has_a_source():
    for make in CHECKPOINTS.values():
        hf = make().config.to_dict()
        config = pretrained.config_from_hf(hf)
        names = set(pretrained.weight_map(config, hf["model_type"]))
        expected = set(TinyGPT(config).state_dict()) - ({"head.weight"} if config.tie_weights else set())
        assert names == expected


def rewrite(folder: Path, change) -> None:
    tensors = safetensors_torch.load_file(str(folder / "model.safetensors"))
    change(tensors)
    safetensors_torch.save_file(tensors, str(folder / "model.safetensors"))


def test_the_layout_of_the_hubs_gpt2_file(tmp_path):
    """The hub's "gpt2" stores a bare GPT2Model: names without "transformer.", and each block's causal mask."""
    theirs = saved(lambda: gpt2(), tmp_path)

    def bare(tensors: dict) -> None:
        for name in list(tensors):
            tensors[name.removeprefix("transformer.")] = tensors.pop(name)
        for i in range(2):
            tensors[f"h.{i}.attn.bias"] = torch.ones(1, 1, 64, 64).tril()

    rewrite(tmp_path, bare)
    ids = torch.randint(0, VOCAB, (2, 16), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(pretrained.load_pretrained(tmp_path)(ids), theirs(ids).logits, rtol=0, atol=1e-5)


def test_a_checkpoint_in_shards(tmp_path):
    theirs = llama()
    theirs.save_pretrained(tmp_path, max_shard_size="20KB")
    assert not (tmp_path / "model.safetensors").exists()
    assert len(json.loads((tmp_path / pretrained.SHARD_INDEX).read_text())["weight_map"]) > 10
    assert len(list(tmp_path.glob("model-*.safetensors"))) > 1
    ids = torch.randint(0, VOCAB, (2, 16), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        torch.testing.assert_close(pretrained.load_pretrained(tmp_path)(ids), theirs(ids).logits, rtol=0, atol=1e-5)


def test_wrong_checkpoints_name_the_tensor(tmp_path):
    saved(lambda: llama(), tmp_path)
    rewrite(tmp_path, lambda t: t.pop("model.layers.1.self_attn.k_proj.weight"))
    with pytest.raises(ValueError, match=r"no tensor 'model.layers.1.self_attn.k_proj.weight' .*blocks.1.attn.in_proj"):
        pretrained.load_pretrained(tmp_path)

    saved(lambda: gpt2(), tmp_path)
    rewrite(tmp_path, lambda t: t.update({"transformer.h.0.mlp.c_fc.weight": torch.zeros(32, 100)}))
    with pytest.raises(ValueError, match=r"transformer.h.0.mlp.c_fc.weight \(32, 100\).*blocks.0.mlp.0.weight"):
        pretrained.load_pretrained(tmp_path)

    saved(lambda: gpt2(), tmp_path)
    rewrite(tmp_path, lambda t: t.update({"transformer.h.9.attn.c_attn.weight": torch.zeros(1)}))
    with pytest.raises(ValueError, match=r"no place for: 'transformer.h.9.attn.c_attn.weight'"):
        pretrained.load_pretrained(tmp_path)

    saved(lambda: gpt2(), tmp_path)
    rewrite(tmp_path, lambda t: t.update({"transformer.h.0.attn.bias": torch.ones(1, 1, 64, 64)}))  # an old buffer
    pretrained.load_pretrained(tmp_path)

    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(pretrained.PretrainedUnavailableError, match="model.safetensors missing"):
        pretrained.load_pretrained(tmp_path)
    with pytest.raises(ValueError, match="neither a folder nor a hub repository"):
        pretrained.load_pretrained(tmp_path / "config.json")


# --------------------------------------------------------------------------------------------
# downloads
# --------------------------------------------------------------------------------------------


def serve(file_server, folder: Path, repo: str = "tiny/gpt2", corrupt: bool = False) -> None:
    """Serve ``folder``'s checkpoint as the hub would: the API's file list with sizes and hashes, and the files."""
    config, weights = (folder / "config.json").read_bytes(), (folder / "model.safetensors").read_bytes()
    blob = hashlib.sha1(f"blob {len(config)}\0".encode() + config).hexdigest()
    siblings = [{"rfilename": "config.json", "size": len(config), "blobId": blob},
                {"rfilename": "model.safetensors", "size": len(weights),
                 "lfs": {"sha256": hashlib.sha256(weights).hexdigest(), "size": len(weights)}}]  # fmt: skip
    api = json.dumps({"id": repo, "sha": "abc123", "siblings": siblings}).encode()
    file_server.files[f"/api/models/{repo}?blobs=true"] = api
    file_server.files[f"/{repo}/resolve/abc123/config.json"] = config
    if corrupt:
        weights = weights[:-1] + bytes([weights[-1] ^ 1])
    file_server.files[f"/{repo}/resolve/abc123/model.safetensors"] = weights


@pytest.fixture
def online(monkeypatch, tmp_path):
    monkeypatch.setenv("COMPANION_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return tmp_path / "cache" / "pretrained" / "tiny--gpt2"


def test_download_then_load_from_the_cache(tmp_path, file_server, online):
    theirs = saved(lambda: gpt2(), tmp_path / "checkpoint")
    serve(file_server, tmp_path / "checkpoint")
    model = pretrained.load_pretrained("tiny/gpt2", endpoint=file_server.base_url)
    ids = torch.randint(0, VOCAB, (2, 10), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model(ids), theirs(ids).logits, rtol=0, atol=1e-5)
    assert sorted(p.name for p in online.iterdir()) == ["config.json", "model.safetensors"]
    requests = len(file_server.requests)
    pretrained.load_pretrained("tiny/gpt2", endpoint=file_server.base_url)
    assert len(file_server.requests) == requests  # the second time from the cache


@pytest.mark.parametrize("damage", ["corrupt", "truncated"])
def test_a_bad_download_is_refused_and_leaves_no_file(tmp_path, file_server, online, damage):
    saved(lambda: gpt2(), tmp_path / "checkpoint")
    serve(file_server, tmp_path / "checkpoint", corrupt=damage == "corrupt")
    if damage == "truncated":
        file_server.truncate["/tiny/gpt2/resolve/abc123/model.safetensors"] = 1000
    with pytest.raises(pretrained.PretrainedUnavailableError, match="could not be downloaded") as err:
        pretrained.load_pretrained("tiny/gpt2", endpoint=file_server.base_url)
    if damage == "corrupt":
        assert "SHA-256" in str(err.value)
    assert [p.name for p in online.iterdir()] == ["config.json"]  # verified, kept; nothing of the weights


def test_offline_names_what_to_put_where(online, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(pretrained.PretrainedUnavailableError) as err:
        pretrained.load_pretrained("gpt2")
    message = str(err.value)
    assert "HF_HUB_OFFLINE" in message and "config.json and model.safetensors" in message
    assert str(online.parent / "gpt2") in message
    with pytest.raises(ValueError, match="hub name"):
        pretrained.download("not a name")


def test_the_cache_folder_is_companion_cache_or_the_home_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("COMPANION_CACHE", str(tmp_path))
    assert config.cache_dir() == tmp_path
    monkeypatch.delenv("COMPANION_CACHE")
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert config.cache_dir() == Path.home() / ".cache" / "companion"


def test_a_repository_without_safetensors_is_refused(file_server, online):
    api = json.dumps({"sha": "abc", "siblings": [{"rfilename": "config.json"}, {"rfilename": "pytorch_model.bin"}]})
    file_server.files["/api/models/tiny/gpt2?blobs=true"] = api.encode()
    with pytest.raises(pretrained.PretrainedUnavailableError, match="no model.safetensors .*pytorch_model.bin"):
        pretrained.download("tiny/gpt2", endpoint=file_server.base_url)
