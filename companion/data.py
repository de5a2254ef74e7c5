"""Data of the course: MNIST-family loaders, Tiny Shakespeare, and on-device batching.

The loaders read their published files under
``<root>/<folder>/<original file name>`` (the gzip-compressed IDX files of
MNIST, ``tinyshakespeare/input.txt``), where ``root`` is the ``root``
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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from numbers import Integral
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
        """All four files: images and labels of each split."""
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

@dataclass(frozen=True)
class TextDataset:
    """A dataset published as one plain-text file on one or more mirrors.

    Attributes:
        title: the dataset's name in messages.
        folder: sub-folder of the data root that holds the file.
        mirrors: base URLs, tried in order (each ends with ``/``).
        file: the file's name and MD5 checksum.
    """

    title: str
    folder: str
    mirrors: tuple[str, ...]
    file: IdxFile

    def files(self) -> list[IdxFile]:
        """The one file, as a list like :meth:`IdxDataset.files`."""
        return [self.file]


TINY_SHAKESPEARE = TextDataset(
    title="Tiny Shakespeare",
    folder="tinyshakespeare",
    mirrors=("https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/",),
    file=IdxFile("input.txt", "6fb458f1232090904fb40fe944165e91"),
)

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
"""The names of Fashion-MNIST's ten classes; label ``k`` is ``FASHION_MNIST_CLASSES[k]``."""

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


def _fetch(dataset: IdxDataset | TextDataset, file: IdxFile, folder: Path, timeout: float) -> str | None:
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
    dataset: IdxDataset | TextDataset,
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


# --- text: Tiny Shakespeare and characters as ids ----------------------------------------------


def tiny_shakespeare(root: str | os.PathLike[str] | None = None, download: bool = True) -> str:
    """The Tiny Shakespeare text: 1,115,394 characters of the plays (public domain), as one ``str``.

    The file is ``<root>/tinyshakespeare/input.txt`` (see the module docstring
    for ``root``), checked against its published MD5 and downloaded (to a
    temporary file, verified, then renamed into place) when missing or corrupt
    and ``download`` is true. Language models of chapters 8 and 9 split it by
    position with :func:`split_text` and read it through a :class:`CharVocab`.

    Raises:
        DataUnavailableError: the file is missing or corrupt and could not be
            downloaded; the message names the file and the folder to put it in.
    """
    folder = ensure_files(TINY_SHAKESPEARE, root, download)
    return (folder / TINY_SHAKESPEARE.file.name).read_bytes().decode("utf-8")


class CharVocab:
    """The characters of a text, each given an id: text ↔ ``int64`` ids.

    ``CharVocab(text)`` numbers the distinct characters of ``text`` in sorted
    (code-point) order, ``0 … len(vocab) - 1``; Tiny Shakespeare has 65.

    >>> vocab = CharVocab("hello")
    >>> vocab.chars, vocab.encode("hole").tolist(), vocab.decode([3, 1])
    ('ehlo', [1, 3, 2, 0], 'oh')

    Attributes:
        chars: the characters, in id order (``chars[i]`` has id ``i``).
    """

    def __init__(self, text: str) -> None:
        if not isinstance(text, str):
            raise TypeError(f"CharVocab is built from a str; got {type(text).__name__}")
        if not text:
            raise ValueError("CharVocab needs a non-empty text to take its characters from")
        self.chars: str = "".join(sorted(set(text)))
        self.index: dict[str, int] = {c: i for i, c in enumerate(self.chars)}
        codes = np.frombuffer(self.chars.encode("utf-32-le"), dtype=np.uint32)
        self._lookup = np.full(int(codes.max()) + 1, -1, dtype=np.int64)
        self._lookup[codes] = np.arange(len(codes))

    def __len__(self) -> int:
        """The number of distinct characters V."""
        return len(self.chars)

    def __repr__(self) -> str:
        return f"CharVocab({len(self)} characters: {self.chars!r})"

    def encode(self, text: str) -> torch.Tensor:
        """The ids ``int64 [T]`` of the ``T`` characters of ``text``.

        Raises:
            ValueError: ``text`` holds a character that is not in the vocabulary
                (the message names it and its position).
        """
        if not isinstance(text, str):
            raise TypeError(f"encode takes a str; got {type(text).__name__}")
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
        ids = np.full(len(codes), -1, dtype=np.int64)
        known = codes < len(self._lookup)
        ids[known] = self._lookup[codes[known]]
        bad = np.flatnonzero(ids < 0)
        if len(bad):
            where = int(bad[0])
            raise ValueError(
                f"character {text[where]!r} (U+{ord(text[where]):04X}) at position {where} is not in the "
                f"vocabulary of {len(self)} characters {self.chars!r}"
            )
        return torch.from_numpy(ids)

    def decode(self, ids: torch.Tensor | Sequence[int]) -> str:
        """The text of a 1-D sequence of ids (an ``int`` tensor ``[T]`` or a list of ints).

        Raises:
            ValueError: an id is outside ``0 … len(vocab) - 1``, or the tensor is not 1-D.
            TypeError: the ids are not integers.
        """
        if isinstance(ids, torch.Tensor):
            if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
                raise TypeError(f"decode takes integer ids; got a tensor of dtype {ids.dtype}")
            if ids.ndim != 1:
                raise ValueError(f"decode takes a 1-D sequence of ids [T]; got shape {tuple(ids.shape)}")
            ids = ids.tolist()
        values = list(ids)
        for position, i in enumerate(values):
            if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
                raise TypeError(f"decode takes integer ids; got {i!r} at position {position}")
            if not 0 <= i < len(self.chars):
                raise ValueError(
                    f"id {i} at position {position} is outside the vocabulary's range 0 … {len(self) - 1}"
                )
        return "".join(self.chars[i] for i in values)


def split_text(ids: torch.Tensor, val_fraction: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """Split a sequence ``[T]`` by position: the first ``1 - val_fraction`` for training, the rest for validation.

    A split by position, not at random: the validation text is a stretch the
    model never saw, so its loss measures how well the model continues unseen
    text rather than how well it remembers windows overlapping its training data.

    Returns:
        ``(train [T - n_val], val [n_val])`` with ``n_val = round(T * val_fraction)``, views of ``ids``.
    """
    if not isinstance(ids, torch.Tensor) or ids.ndim != 1:
        shape = tuple(ids.shape) if isinstance(ids, torch.Tensor) else type(ids).__name__
        raise ValueError(f"split_text takes a 1-D tensor of ids [T]; got {shape}")
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be a number strictly between 0 and 1; got {val_fraction!r}")
    n_val = round(len(ids) * val_fraction)
    if n_val < 1 or n_val >= len(ids):
        raise ValueError(f"a text of {len(ids)} ids is too short to split with val_fraction={val_fraction}")
    return ids[: len(ids) - n_val], ids[len(ids) - n_val :]


def char_windows(ids: torch.Tensor, length: int, stride: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Windows of a sequence for next-character training: inputs ``X`` and targets ``Y = X`` shifted by one.

    Window ``i`` starts at ``i · stride``: ``X[i, t] = ids[i·stride + t]`` and
    ``Y[i, t] = ids[i·stride + t + 1]``, so ``Y[i, t]`` is the character that
    follows ``X[i, :t+1]``. With ``stride = length`` (the default) the windows
    do not overlap. A model giving logits ``[B, length, V]`` trains on them
    with ``train.fit`` and a loss on the flattened logits, e.g.
    ``lambda logits, y: F.cross_entropy(logits.flatten(0, 1), y.flatten())``.

    Args:
        ids: the text as ids, ``int64 [T]``.
        length: characters per window, ``>= 1``.
        stride: ids between the starts of consecutive windows, ``>= 1``.

    Returns:
        ``(X int64 [N, length], Y int64 [N, length])`` with ``N = (T - 1 - length) // stride + 1``.
    """
    if not isinstance(ids, torch.Tensor) or ids.ndim != 1:
        shape = tuple(ids.shape) if isinstance(ids, torch.Tensor) else type(ids).__name__
        raise ValueError(f"char_windows takes a 1-D tensor of ids [T]; got {shape}")
    if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
        raise TypeError(f"char_windows takes integer token ids (int64); got dtype {ids.dtype}")
    if isinstance(length, bool) or not isinstance(length, Integral) or length < 1:
        raise ValueError(f"length must be a positive int; got {length!r}")
    stride = length if stride is None else stride
    if isinstance(stride, bool) or not isinstance(stride, Integral) or stride < 1:
        raise ValueError(f"stride must be a positive int; got {stride!r}")
    length, stride = int(length), int(stride)
    if len(ids) < length + 1:
        raise ValueError(f"windows of length {length} need at least {length + 1} ids; got {len(ids)}")
    X = ids[:-1].unfold(0, length, stride)
    Y = ids[1:].unfold(0, length, stride)
    return X.contiguous(), Y.contiguous()
