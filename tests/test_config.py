"""companion.config: device choice, seeding, run profile."""

import json
import random

import numpy as np
import pytest
import torch

from companion import config


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in ("COMPANION_DEVICE", "COMPANION_REQUIRE_GPU", "COMPANION_PROFILE", "COMPANION_PROGRESS",
                 "COMPANION_PRECISION"):
        monkeypatch.delenv(name, raising=False)


def test_device_prefers_cuda_then_mps_then_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert config.device() == torch.device("cpu")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert config.device() == torch.device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert config.device() == torch.device("cuda")


def test_device_override(monkeypatch):
    monkeypatch.setenv("COMPANION_DEVICE", "cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert config.device() == torch.device("cpu")


def test_device_override_must_exist(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("COMPANION_DEVICE", "cuda:0")
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        config.device()
    monkeypatch.setenv("COMPANION_DEVICE", "gpu-please")
    with pytest.raises(ValueError, match="COMPANION_DEVICE must name a torch device"):
        config.device()


def test_require_gpu_raises_on_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    monkeypatch.setenv("COMPANION_REQUIRE_GPU", "1")
    with pytest.raises(RuntimeError, match="COMPANION_REQUIRE_GPU=1"):
        config.device()
    monkeypatch.setenv("COMPANION_REQUIRE_GPU", "0")
    assert config.device().type == "cpu"
    monkeypatch.setenv("COMPANION_REQUIRE_GPU", "maybe")
    with pytest.raises(ValueError, match="COMPANION_REQUIRE_GPU must be one of"):
        config.device()


def test_require_gpu_accepts_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("COMPANION_REQUIRE_GPU", "1")
    assert config.device() == torch.device("cuda")


def test_seed_everything_makes_all_generators_repeat():
    def draw(gen):
        return random.random(), np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=gen).item()

    first = draw(config.seed_everything(123))
    second = draw(config.seed_everything(123))
    other = draw(config.seed_everything(124))
    assert first == second
    assert all(a != b for a, b in zip(first, other))


@pytest.mark.parametrize("bad", [-1, 1.5, "7", True])
def test_seed_everything_rejects_bad_seeds(bad):
    with pytest.raises(ValueError, match="non-negative int"):
        config.seed_everything(bad)


def test_profile_default_is_full():
    assert config.profile() == "full"
    assert config.budget(quick=10, full=60_000) == 60_000


@pytest.mark.parametrize("value", ["quick", "QUICK", " quick "])
def test_profile_quick(monkeypatch, value):
    monkeypatch.setenv("COMPANION_PROFILE", value)
    assert config.profile() == "quick"
    assert config.budget(quick=10, full=60_000) == 10


def test_profile_rejects_unknown(monkeypatch):
    monkeypatch.setenv("COMPANION_PROFILE", "fast")
    with pytest.raises(ValueError, match="'quick' or 'full'; got 'fast'"):
        config.profile()


@pytest.mark.parametrize("amx", [True, False])
def test_precision_auto_follows_the_hardware(monkeypatch, amx):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    assert config.native_bf16("cpu") is amx
    assert config.precision("cpu") == ("bf16" if amx else "fp32")
    monkeypatch.setenv("COMPANION_PRECISION", " AUTO ")
    assert config.precision("cpu") == ("bf16" if amx else "fp32")


@pytest.mark.parametrize("capability, native", [((7, 5), False), ((8, 0), True), ((9, 0), True)])
def test_precision_cuda_needs_ampere_or_later(monkeypatch, capability, native):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert config.native_bf16("cuda") is native  # a T4 (7.5) emulates bf16
    assert config.native_bf16("mps") is False


def test_a_torch_without_the_amx_query_counts_as_no_amx(monkeypatch):
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported", raising=False)
    assert config.native_bf16("cpu") is False
    assert config.precision("cpu") == "fp32"


@pytest.mark.parametrize("amx", [True, False])
@pytest.mark.parametrize("forced", ["fp32", "bf16"])
def test_precision_can_be_forced(monkeypatch, amx, forced):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setenv("COMPANION_PRECISION", forced)
    assert config.precision("cpu") == forced


def test_precision_rejects_unknown(monkeypatch):
    monkeypatch.setenv("COMPANION_PRECISION", "fp16")
    with pytest.raises(ValueError, match="COMPANION_PRECISION must be 'auto', 'fp32' or 'bf16'; got 'fp16'"):
        config.precision("cpu")
    with pytest.raises(ValueError, match="precision must be 'fp32' or 'bf16'; got 'half'"):
        config.mixed_precision("cpu", "half")


def test_mixed_precision_runs_products_in_bf16_only_when_chosen():
    x, w = torch.randn(4, 8), torch.randn(8, 3)
    with config.mixed_precision("cpu", "bf16"):
        assert torch.is_autocast_enabled("cpu")
        assert (x @ w).dtype == torch.bfloat16
    with config.mixed_precision("cpu", "fp32"):
        assert not torch.is_autocast_enabled("cpu")
        assert (x @ w).dtype == torch.float32


def test_mixed_precision_in_fp32_changes_nothing_on_any_device():
    with config.mixed_precision("meta", "fp32"):  # a device autocast does not know
        assert (torch.ones(2, 3, device="meta") @ torch.ones(3, 1, device="meta")).dtype == torch.float32


def test_mixed_precision_follows_the_setting(monkeypatch):
    monkeypatch.setenv("COMPANION_PRECISION", "bf16")
    with config.mixed_precision("cpu"):
        assert torch.is_autocast_enabled("cpu")
    monkeypatch.setenv("COMPANION_PRECISION", "fp32")
    with config.mixed_precision("cpu"):
        assert not torch.is_autocast_enabled("cpu")


def test_budget_needs_both_sizes_by_name():
    with pytest.raises(TypeError):
        config.budget(10, 20)  # type: ignore[misc]


def test_progress_style_defaults_to_a_bar(monkeypatch):
    monkeypatch.delenv("COMPANION_PROGRESS", raising=False)
    assert config.progress_style() == "bar"
    monkeypatch.setenv("COMPANION_PROGRESS", " Text ")
    assert config.progress_style() == "text"
    monkeypatch.setenv("COMPANION_PROGRESS", "widget")
    with pytest.raises(ValueError, match="'bar' or 'text'; got 'widget'"):
        config.progress_style()


def test_record_returns_the_value_and_writes_nothing_unless_asked(monkeypatch, tmp_path):
    monkeypatch.delenv("COMPANION_RECORDS", raising=False)
    value = torch.tensor(0.5)
    assert config.record("val_loss", value) is value
    assert list(tmp_path.iterdir()) == []


def test_record_appends_one_json_line_per_result(monkeypatch, tmp_path):
    target = tmp_path / "records.jsonl"
    monkeypatch.setenv("COMPANION_RECORDS", str(target))
    config.record("test_accuracy", 0.9838)
    config.record("parameters", 225_034)
    config.record("best", torch.tensor([1.5], dtype=torch.float64))
    config.record("mean", np.float32(0.25))
    config.record("nearest", "edward")
    lines = [json.loads(line) for line in target.read_text().splitlines()]
    assert lines == [
        {"name": "test_accuracy", "value": 0.9838},
        {"name": "parameters", "value": 225034},
        {"name": "best", "value": 1.5},
        {"name": "mean", "value": 0.25},
        {"name": "nearest", "value": "edward"},
    ]
    assert isinstance(lines[1]["value"], int)


@pytest.mark.parametrize(
    ("name", "value", "error", "message"),
    [
        ("Test accuracy", 0.9, ValueError, "lower-case letters"),
        ("", 0.9, ValueError, "lower-case letters"),
        ("accuracy", torch.ones(2), ValueError, "one number; got shape \\(2,\\)"),
        ("accuracy", [0.9], TypeError, "number or a string; got list"),
        ("accuracy", True, TypeError, "got bool"),
        ("loss", float("nan"), ValueError, "finite; got nan"),
    ],
)
def test_record_rejects_bad_names_and_values(monkeypatch, tmp_path, name, value, error, message):
    target = tmp_path / "records.jsonl"
    monkeypatch.setenv("COMPANION_RECORDS", str(target))
    with pytest.raises(error, match=message):
        config.record(name, value)
    assert not target.exists()
