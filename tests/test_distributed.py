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


GLOO_ALL_REDUCE = """
import sys, torch, torch.distributed as dist
dist.init_process_group("gloo")
folder, rank = sys.argv[1], dist.get_rank()
tensor = torch.load(f"{folder}/in{rank}.pt")
dist.all_reduce(tensor)
torch.save(tensor, f"{folder}/out{rank}.pt")
dist.destroy_process_group()
"""


def test_the_ring_gives_what_torch_distributed_all_reduce_gives(tmp_path):
    workers, gen = 3, torch.Generator().manual_seed(1)
    tensors = [torch.randn(4, 7, generator=gen, dtype=torch.float64) for _ in range(workers)]
    for rank, t in enumerate(tensors):
        torch.save(t, tmp_path / f"in{rank}.pt")
    (tmp_path / "script.py").write_text(GLOO_ALL_REDUCE)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={workers}",
               str(tmp_path / "script.py"), str(tmp_path)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    reduced, _ = distributed.ring_all_reduce(tensors)
    for rank, mine in enumerate(reduced):
        torch.testing.assert_close(mine, torch.load(tmp_path / f"out{rank}.pt"), rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize(("workers", "shape"), [(1, (5,)), (2, (3, 4)), (4, (10,)), (5, (2,)), (6, (7, 3, 2))])
def test_the_ring_sums_every_workers_tensor_and_every_worker_gets_the_same_bits(workers, shape):
    gen = torch.Generator().manual_seed(workers)
    tensors = [torch.randn(shape, generator=gen, dtype=torch.float64) for _ in range(workers)]
    before = [t.clone() for t in tensors]
    reduced, sent = distributed.ring_all_reduce(tensors)
    assert len(reduced) == workers and all(torch.equal(r, reduced[0]) for r in reduced)
    torch.testing.assert_close(reduced[0], torch.stack(tensors).sum(0), rtol=1e-13, atol=1e-13)
    sizes = [c.numel() for c in torch.zeros(shape).reshape(-1).tensor_split(workers)]
    assert sum(sent) == 2 * (workers - 1) * sum(sizes)  # every chunk twice round the ring but one hop
    assert all(torch.equal(t, b) for t, b in zip(tensors, before))  # the inputs are left as they were


def test_each_worker_sends_two_w_minus_one_over_w_of_its_tensor_and_integers_sum_exactly():
    tensors = [torch.arange(12) * (w + 1) for w in range(4)]
    reduced, sent = distributed.ring_all_reduce(tensors)
    assert sent == [2 * 3 * 12 // 4] * 4
    assert all(torch.equal(r, torch.arange(12) * 10) for r in reduced)


def test_a_schedule_that_does_not_pass_on_what_it_received_does_not_sum():
    tensors = [torch.full((4,), float(10**w)) for w in range(4)]
    reduced, _ = distributed.ring_all_reduce(tensors, schedule=lambda worker, step, workers: worker)
    assert not torch.equal(reduced[0], torch.full((4,), 1111.0))
    shifted, _ = distributed.ring_all_reduce(tensors, schedule=lambda w, s, n: (w - s + 2) % n)
    assert all(torch.equal(r, torch.full((4,), 1111.0)) for r in shifted)  # any fixed offset is a ring too


@pytest.mark.parametrize(
    ("tensors", "schedule", "error", "match"),
    [([], distributed.ring_chunk, TypeError, "non-empty list"),
     (torch.ones(3, 2), distributed.ring_chunk, TypeError, "one per worker"),
     ([torch.ones(2), "x"], distributed.ring_chunk, TypeError, "list of tensors"),
     ([torch.ones(2), torch.ones(3)], distributed.ring_chunk, ValueError, "shape"),
     ([torch.ones(2), torch.ones(2, dtype=torch.float64)], distributed.ring_chunk, ValueError, "dtype"),
     ([torch.ones(2)] * 3, lambda w, s, n: w + s, ValueError, "chunks are 0 to 2"),
     ([torch.ones(2)] * 3, lambda w, s, n: -1, ValueError, "chunks are 0 to 2"),
     ([torch.ones(2)] * 3, lambda w, s, n: 1.0, TypeError, "int chunk"),
     ([torch.ones(2)] * 3, lambda w, s, n: True, TypeError, "int chunk")],
)  # fmt: skip
def test_bad_calls_of_the_ring_say_what_was_expected(tensors, schedule, error, match):
    with pytest.raises(error, match=match):
        distributed.ring_all_reduce(tensors, schedule)
