"""companion.distributed: two torchrun workers with half a batch each equal one device with all of it."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from companion import distributed


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6, msg=key)


def test_two_workers_equal_one_device_with_the_whole_batch():
    steps, batch = 10, 32
    state, output = distributed.launch(nproc=2, steps=steps, batch_size=batch, timeout=90)
    assert "rank 0 of 2" in output
    one = distributed.train_one_device(steps, batch)
    assert_same_weights(state, one)
    start = distributed.build_model(0).state_dict()
    assert any(not torch.allclose(start[k], one[k]) for k in one), "training must move the weights"


def test_accumulation_equals_one_big_batch():
    assert_same_weights(distributed.train_one_device(5, 64, accumulation=4), distributed.train_one_device(5, 64))


def test_half_the_batch_alone_is_not_the_same():
    alone = distributed.train_one_device(5, 32)
    assert any(not torch.allclose(alone[k], distributed.train_one_device(5, 64)[k]) for k in alone)


@pytest.mark.parametrize("bad", [dict(batch_size=30, accumulation=4), dict(steps=0), dict(accumulation=0)])
def test_bad_sizes(bad):
    with pytest.raises(ValueError):
        distributed.train_one_device(**bad)


def test_launch_checks_sizes_before_starting():
    with pytest.raises(ValueError, match="nproc"):
        distributed.launch(nproc=3, batch_size=64)


def test_a_failing_launch_raises_with_its_output():
    with pytest.raises(RuntimeError, match="exited with code"):
        distributed.launch(nproc=2, steps=2, batch_size=4, timeout=60, module="companion.no_such_script")


def test_a_launch_past_its_time_limit_is_stopped():
    with pytest.raises(TimeoutError):
        distributed.launch(nproc=2, steps=2, batch_size=4, timeout=0.5)


def test_script_refuses_to_run_outside_torchrun(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "companion.distributed", "--out", str(tmp_path / "w.pt")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode != 0 and "torchrun" in result.stderr
