"""companion.data: IDX parsing of the real MNIST files, checksums, downloads, batching."""

from __future__ import annotations

import dataclasses
import gzip
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from downloads import closed_port, leftovers
from companion import data

LABELS = data.MNIST.splits["test"][1]  # the smallest real file (4,542 bytes)


# --- the real files ---------------------------------------------------------------------------


def test_mnist_test_split_is_the_real_one(real_mnist_root):
    images, labels = data.mnist("test", root=real_mnist_root, download=False)
    assert images.shape == (10_000, 28, 28) and images.dtype == torch.uint8
    assert labels.shape == (10_000,) and labels.dtype == torch.int64
    assert (images.float() / 255).mean().item() == pytest.approx(0.1325, abs=5e-4)
    assert labels.bincount().tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]


def test_mnist_train_split_is_the_real_one(real_mnist_root):
    images, labels = data.mnist("train", root=real_mnist_root, download=False)
    assert images.shape == (60_000, 28, 28) and labels.shape == (60_000,)
    assert labels.bincount().tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert labels[:5].tolist() == [5, 0, 4, 1, 9]
    assert int(images.max()) == 255 and int(images.min()) == 0


def test_data_root_defaults(monkeypatch, tmp_path):
    monkeypatch.setenv("COMPANION_DATA", str(tmp_path / "d"))
    assert data.data_root() == tmp_path / "d"
    assert data.data_root(tmp_path) == tmp_path
    monkeypatch.delenv("COMPANION_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert data.data_root() == tmp_path / "cache" / "companion"


def test_unknown_split_is_a_clear_error(real_mnist_root):
    with pytest.raises(ValueError, match=r"split must be one of \['test', 'train'\]; got 'validation'"):
        data.mnist("validation", root=real_mnist_root)


# --- the IDX format ----------------------------------------------------------------------------


def idx_bytes(array: np.ndarray, code: int = 0x08) -> bytes:
    header = struct.pack(">BBBB", 0, 0, code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def test_parse_idx_round_trip():
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    assert np.array_equal(data.parse_idx(idx_bytes(array)), array)
    big_endian = np.array([[1.5, -2.0]], dtype=">f4")
    parsed = data.parse_idx(idx_bytes(big_endian, code=0x0D))
    assert parsed.dtype == np.float32 and parsed.tolist() == [[1.5, -2.0]]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"\x01\x00\x08\x01", "must start with two zero bytes"),
        (b"\x00\x00\x07\x01\x00\x00\x00\x01\x00", "unknown IDX type code 0x07"),
        (b"\x00\x00\x08\x03\x00\x00", "announces 3 dimensions"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x05\x01\x02", "needs 5 bytes after the header; found 2"),
    ],
)
def test_parse_idx_rejects_malformed_files(raw, message):
    with pytest.raises(ValueError, match=message):
        data.parse_idx(raw)


# --- checksums and downloads -------------------------------------------------------------------


def copy_mnist(real_root: Path, root: Path) -> Path:
    """A data root holding a copy of the real MNIST files."""
    shutil.copytree(real_root / "mnist", root / "mnist")
    return root / "mnist"


def test_corrupt_file_is_reported_not_parsed(real_mnist_root, tmp_path):
    folder = copy_mnist(real_mnist_root, tmp_path)
    raw = bytearray((folder / LABELS.name).read_bytes())
    raw[100] ^= 0xFF
    (folder / LABELS.name).write_bytes(bytes(raw))
    with pytest.raises(data.DataUnavailableError, match=rf"{LABELS.name}: corrupt \(MD5 does not match"):
        data.mnist("test", root=tmp_path, download=False)


def test_missing_files_are_named_with_the_folder(tmp_path):
    with pytest.raises(data.DataUnavailableError) as err:
        data.mnist("test", root=tmp_path, download=False)
    message = str(err.value)
    for file in data.MNIST.files():
        assert f"{file.name}: missing" in message
    assert str(tmp_path / "mnist") in message and "COMPANION_DATA" in message


def serve_mnist(real_root: Path, server, prefix: str = "/good/") -> None:
    for file in data.MNIST.files():
        server.files[prefix + file.name] = (real_root / "mnist" / file.name).read_bytes()


def with_mirrors(monkeypatch, *mirrors: str) -> None:
    monkeypatch.setattr(data, "MNIST", dataclasses.replace(data.MNIST, mirrors=mirrors))


def test_download_tries_mirrors_in_turn(real_mnist_root, tmp_path, file_server, monkeypatch):
    serve_mnist(real_mnist_root, file_server)
    with_mirrors(monkeypatch, file_server.base_url + "/missing/", file_server.base_url + "/good/")
    images, labels = data.mnist("test", root=tmp_path)
    assert images.shape == (10_000, 28, 28) and labels[:3].tolist() == [7, 2, 1]
    assert f"/missing/{LABELS.name}" in file_server.requests
    assert f"/good/{LABELS.name}" in file_server.requests
    assert leftovers(tmp_path / "mnist") == []
    requests = len(file_server.requests)
    data.mnist("test", root=tmp_path)  # verified files on disk: no new download
    assert len(file_server.requests) == requests


def test_corrupt_file_on_disk_is_replaced_by_download(real_mnist_root, tmp_path, file_server, monkeypatch):
    folder = copy_mnist(real_mnist_root, tmp_path)
    (folder / LABELS.name).write_bytes(b"not a gzip file")
    serve_mnist(real_mnist_root, file_server)
    with_mirrors(monkeypatch, file_server.base_url + "/good/")
    _, labels = data.mnist("test", root=tmp_path)
    assert labels.bincount().tolist()[:2] == [980, 1135]
    assert file_server.requests == [f"/good/{LABELS.name}"]
    assert data.md5sum(folder / LABELS.name) == LABELS.md5


def test_truncated_download_is_never_used(real_mnist_root, tmp_path, file_server, monkeypatch):
    serve_mnist(real_mnist_root, file_server)
    file_server.truncate[f"/good/{LABELS.name}"] = 1000
    with_mirrors(monkeypatch, file_server.base_url + "/good/")
    with pytest.raises(data.DataUnavailableError, match=rf"{LABELS.name}: missing; download failed"):
        data.mnist("test", root=tmp_path)
    folder = tmp_path / "mnist"
    assert not (folder / LABELS.name).exists()
    assert leftovers(folder) == []


def test_download_with_wrong_checksum_is_rejected(real_mnist_root, tmp_path, file_server, monkeypatch):
    serve_mnist(real_mnist_root, file_server)
    file_server.files[f"/good/{LABELS.name}"] = gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x01\x07")
    with_mirrors(monkeypatch, file_server.base_url + "/good/")
    with pytest.raises(data.DataUnavailableError, match="checksum mismatch"):
        data.mnist("test", root=tmp_path)
    assert not (tmp_path / "mnist" / LABELS.name).exists()
    assert leftovers(tmp_path / "mnist") == []


def test_offline_error_names_missing_files_and_folder(tmp_path, monkeypatch):
    with_mirrors(monkeypatch, f"http://127.0.0.1:{closed_port()}/mnist/")
    with pytest.raises(data.DataUnavailableError) as err:
        data.mnist("train", root=tmp_path)
    message = str(err.value)
    assert "MNIST files are not usable in" in message and str(tmp_path / "mnist") in message
    for file in data.MNIST.files():
        assert f"{file.name}: missing; download failed" in message
    assert "download them by hand" in message
    assert leftovers(tmp_path / "mnist") == []


def test_fashion_mnist_reads_its_own_folder(tmp_path, file_server, monkeypatch):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(3, 28, 28), dtype=np.uint8)
    labels = np.array([9, 0, 4], dtype=np.uint8)
    files = {"images": gzip.compress(idx_bytes(images)), "labels": gzip.compress(idx_bytes(labels))}
    spec_files = {}
    for split, (image_file, label_file) in data.FASHION_MNIST.splits.items():
        file_server.files[f"/f/{image_file.name}"] = files["images"]
        file_server.files[f"/f/{label_file.name}"] = files["labels"]
        spec_files[split] = (
            data.IdxFile(image_file.name, data.hashlib.md5(files["images"]).hexdigest()),
            data.IdxFile(label_file.name, data.hashlib.md5(files["labels"]).hexdigest()),
        )
    fake = dataclasses.replace(data.FASHION_MNIST, mirrors=(file_server.base_url + "/f/",), splits=spec_files)
    monkeypatch.setattr(data, "FASHION_MNIST", fake)
    got_images, got_labels = data.fashion_mnist("test", root=tmp_path)
    assert (tmp_path / "fashion-mnist" / "t10k-images-idx3-ubyte.gz").is_file()
    assert torch.equal(got_images, torch.from_numpy(images))
    assert got_labels.tolist() == [9, 0, 4] and got_labels.dtype == torch.int64
    assert len(data.FASHION_MNIST_CLASSES) == 10


# --- batches -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "batch_size"), [(10, 3), (12, 4), (1, 5), (7, 1)])
def test_batches_cover_every_sample_once(n, batch_size):
    X = torch.arange(n).float().unsqueeze(1) * 10
    y = torch.arange(n)
    seen = []
    sizes = []
    for xb, yb in data.batches(X, y, batch_size, generator=torch.Generator().manual_seed(0)):
        assert torch.equal(xb[:, 0], yb.float() * 10)  # inputs stay paired with their targets
        seen += yb.tolist()
        sizes.append(len(yb))
    assert sorted(seen) == list(range(n))
    assert sizes == [batch_size] * (n // batch_size) + ([n % batch_size] if n % batch_size else [])


def test_batches_shuffle_is_seeded_and_changes_per_epoch():
    X, y = torch.zeros(100, 2), torch.arange(100)

    def order(gen):
        return torch.cat([yb for _, yb in data.batches(X, y, 32, generator=gen)]).tolist()

    gen = torch.Generator().manual_seed(1)
    epoch1, epoch2 = order(gen), order(gen)
    assert epoch1 != epoch2 and sorted(epoch1) == sorted(epoch2) == list(range(100))
    assert order(torch.Generator().manual_seed(1)) == epoch1
    assert torch.cat([yb for _, yb in data.batches(X, y, 32, shuffle=False)]).tolist() == list(range(100))


def test_batches_drop_last():
    X, y = torch.zeros(10, 1), torch.arange(10)
    assert [len(yb) for _, yb in data.batches(X, y, 4, drop_last=True)] == [4, 4]


@pytest.mark.parametrize(
    ("X", "y", "batch_size", "error", "message"),
    [
        (torch.zeros(3, 2), torch.zeros(4), 2, ValueError, r"same first dimension; got shapes \(3, 2\) and \(4,\)"),
        (np.zeros((3, 2)), torch.zeros(3), 2, TypeError, "must be torch tensors; got ndarray"),
        (torch.zeros(3, 2), torch.zeros(3), 0, ValueError, "batch_size must be a positive int; got 0"),
        (torch.zeros(3, 2), torch.zeros(3), 2.5, ValueError, "batch_size must be a positive int; got 2.5"),
    ],
)
def test_batches_bad_input(X, y, batch_size, error, message):
    with pytest.raises(error, match=message):
        next(data.batches(X, y, batch_size))
