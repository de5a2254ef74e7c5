"""Data of the course: MNIST-family loaders and on-device batching.

The loaders read the standard gzip-compressed IDX files under
``<root>/<folder>/<original file name>``, where ``root`` is the ``root``
argument, else ``$COMPANION_DATA``, else the user's cache folder
(``$XDG_CACHE_HOME/companion`` or ``~/.cache/companion``).

A file is used only after its checksum matches the published one. Downloads
try each mirror in turn, write to a temporary file beside the target, verify
the checksum and only then rename the file into place, so an interrupted or
corrupt download is never used and never left behind.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import shutil
import tempfile
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

Split = str  # "train" or "test"


@dataclass(frozen=True)
class IdxFile:
    """One published file: its original name and MD5 checksum."""

    name: str
    md5: str


@dataclass(frozen=True)
class IdxDataset:
    """A dataset published as four IDX ``.gz`` files on one or more mirrors.

    Attributes:
        title: the dataset's name in messages.
        folder: sub-folder of the data root that holds the files.
        mirrors: base URLs, tried in order (each ends with ``/``).
        splits: ``{"train": (images, labels), "test": (images, labels)}``.
    """

    title: str
    folder: str
    mirrors: tuple[str, ...]
    splits: dict[str, tuple[IdxFile, IdxFile]]

    def files(self) -> list[IdxFile]:
        return [f for pair in self.splits.values() for f in pair]


MNIST = IdxDataset(
    title="MNIST",
    folder="mnist",
    mirrors=(
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ),
    splits={
        "train": (
            IdxFile("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
            IdxFile("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
        ),
        "test": (
            IdxFile("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
            IdxFile("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c"),
        ),
    },
)

FASHION_MNIST = IdxDataset(
    title="Fashion-MNIST",
    folder="fashion-mnist",
    mirrors=(
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
        "https://storage.googleapis.com/tensorflow/tf-keras-datasets/",
    ),
    splits={
        "train": (
            IdxFile("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
            IdxFile("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe"),
        ),
        "test": (
            IdxFile("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
            IdxFile("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310"),
        ),
    },
)

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_CHUNK = 1 << 20


class DataUnavailableError(FileNotFoundError):
    """Dataset files are missing or corrupt and could not be downloaded."""


def data_root(root: str | os.PathLike[str] | None = None) -> Path:
    """The data folder: ``root``, else ``$COMPANION_DATA``, else the user's cache folder."""
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get("COMPANION_DATA", "").strip()
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME", "").strip() or Path.home() / ".cache"
    return Path(cache) / "companion"


def md5sum(path: Path) -> str:
    """The hex MD5 digest of a file, read in 1 MiB chunks."""
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def parse_idx(raw: bytes) -> np.ndarray:
    """Decode an (uncompressed) IDX file into a NumPy array.

    The format: two zero bytes, a type code (``0x08`` = uint8, ...), the number
    of dimensions ``d``, then ``d`` big-endian uint32 sizes, then the data.

    Raises:
        ValueError: the header is malformed or the data length does not match.
    """
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError("not an IDX file: it must start with two zero bytes")
    code, ndim = raw[2], raw[3]
    if code not in _IDX_DTYPES:
        raise ValueError(f"unknown IDX type code 0x{code:02x}; expected one of {sorted(_IDX_DTYPES)}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"IDX header announces {ndim} dimensions but the file has only {len(raw)} bytes")
    shape = tuple(int(s) for s in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[code])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(f"IDX data of shape {shape} needs {expected} bytes after the header; found {len(raw) - header}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def _download(url: str, target: Path, md5: str, timeout: float) -> None:
    """Fetch ``url`` into a temporary file beside ``target``; rename it into place only if its MD5 is ``md5``."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            shutil.copyfileobj(response, out, _CHUNK)
        got = md5sum(tmp)
        if got != md5:
            raise ValueError(f"checksum mismatch for {url}: MD5 {got}, expected {md5}")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _fetch(dataset: IdxDataset, file: IdxFile, folder: Path, timeout: float) -> str | None:
    """Try every mirror for one file; return None on success, else what went wrong."""
    folder.mkdir(parents=True, exist_ok=True)
    failures = []
    for mirror in dataset.mirrors:
        url = mirror + file.name
        try:
            _download(url, folder / file.name, file.md5, timeout)
            return None
        except (OSError, ValueError, http.client.HTTPException) as err:  # URLError is an OSError
            failures.append(f"{url}: {err}")
    return "; ".join(failures) or "no mirrors configured"


def ensure_files(
    dataset: IdxDataset,
    root: str | os.PathLike[str] | None = None,
    download: bool = True,
    timeout: float = 60.0,
) -> Path:
    """Make sure every file of ``dataset`` is present with the right checksum.

    A file that is missing or whose MD5 is wrong is (re-)downloaded when
    ``download`` is true; otherwise, or when every mirror fails, one
    :class:`DataUnavailableError` names each bad file and the folder to put it in.

    Returns:
        the folder that holds the verified files.
    """
    folder = data_root(root) / dataset.folder
    problems: dict[str, str] = {}
    for file in dataset.files():
        path = folder / file.name
        if not path.is_file():
            problems[file.name] = "missing"
        elif md5sum(path) != file.md5:
            problems[file.name] = "corrupt (MD5 does not match the published checksum)"
    if problems and download:
        for name in list(problems):
            file = next(f for f in dataset.files() if f.name == name)
            failure = _fetch(dataset, file, folder, timeout)
            if failure is None:
                del problems[name]
            else:
                problems[name] += f"; download failed: {failure}"
    if problems:
        listing = "\n".join(f"  {name}: {why}" for name, why in problems.items())
        hint = "download them" if not download else "download them by hand"
        raise DataUnavailableError(
            f"{dataset.title} files are not usable in {folder}:\n{listing}\n"
            f"{hint} from one of {', '.join(dataset.mirrors)} and put them in {folder} "
            "(or set COMPANION_DATA to a folder that holds "
            f"{dataset.folder}/<file>)."
        )
    return folder


def load_idx_split(
    dataset: IdxDataset,
    split: Split = "train",
    root: str | os.PathLike[str] | None = None,
    download: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``uint8 [N, H, W]`` and labels ``int64 [N]`` of one split of an IDX dataset."""
    if split not in dataset.splits:
        raise ValueError(f"split must be one of {sorted(dataset.splits)}; got {split!r}")
    folder = ensure_files(dataset, root, download)
    image_file, label_file = dataset.splits[split]
    images = parse_idx(gzip.decompress((folder / image_file.name).read_bytes()))
    labels = parse_idx(gzip.decompress((folder / label_file.name).read_bytes()))
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(
            f"{dataset.title} {split}: expected images [N, H, W] and labels [N]; "
            f"got {images.shape} and {labels.shape}"
        )
    return torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64))


def mnist(
    split: Split = "train", root: str | os.PathLike[str] | None = None, download: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """The MNIST handwritten digits: ``(images uint8 [N, 28, 28], labels int64 [N])``.

    ``split="train"`` has N = 60,000, ``split="test"`` N = 10,000; labels are 0-9.
    Files live in ``<root>/mnist/`` (see the module docstring for ``root``).
    """
    return load_idx_split(MNIST, split, root, download)


def fashion_mnist(
    split: Split = "train", root: str | os.PathLike[str] | None = None, download: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Zalando's Fashion-MNIST: ``(images uint8 [N, 28, 28], labels int64 [N])``.

    Same sizes and layout as :func:`mnist`, in ``<root>/fashion-mnist/``;
    class names are in :data:`FASHION_MNIST_CLASSES`.
    """
    return load_idx_split(FASHION_MNIST, split, root, download)


def batches(
    X: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    shuffle: bool = True,
    generator: torch.Generator | None = None,
    drop_last: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Mini-batches of ``(X, y)`` taken by index, on the tensors' own device.

    One pass visits every sample exactly once (in a random order when
    ``shuffle``); the last batch is smaller unless ``drop_last``. Indexing a
    tensor already on the device costs one gather per batch, instead of the
    per-sample Python calls and collation of a ``DataLoader``.

    Args:
        X: inputs ``[N, ...]``.
        y: targets ``[N, ...]`` on the same device.
        batch_size: samples per batch, ``>= 1``.
        shuffle: visit the samples in a random order.
        generator: a CPU ``torch.Generator`` for a reproducible order.
        drop_last: skip a final batch smaller than ``batch_size``.

    Yields:
        ``(X[idx], y[idx])`` with ``len(idx) <= batch_size``.
    """
    if not isinstance(X, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise TypeError(f"X and y must be torch tensors; got {type(X).__name__} and {type(y).__name__}")
    if X.ndim == 0 or y.ndim == 0 or len(X) != len(y):
        raise ValueError(f"X and y need the same first dimension; got shapes {tuple(X.shape)} and {tuple(y.shape)}")
    if X.device != y.device:
        raise ValueError(f"X and y must be on the same device; got {X.device} and {y.device}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int; got {batch_size!r}")
    n = len(X)
    if shuffle:
        order = torch.randperm(n, generator=generator).to(X.device)
    else:
        order = torch.arange(n, device=X.device)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        idx = order[start : start + batch_size]
        yield X[idx], y[idx]
