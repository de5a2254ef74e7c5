"""Data of the course: MNIST-family loaders, Tiny Shakespeare, the Tang poems, and on-device batching.

The loaders read their published files under
``<root>/<folder>/<original file name>`` (the gzip-compressed IDX files of
MNIST, ``tinyshakespeare/input.txt``, ``chinese-poetry/quantangshi/poet.tang.N.json``), where ``root`` is the ``root``
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
import json
import os
import shutil
import tempfile
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from numbers import Integral
from pathlib import Path

import numpy as np
import torch

Split = str  # "train" or "test"


@dataclass(frozen=True)
class IdxFile:
    """One published file: its original name and its MD5 or SHA-256 checksum (SHA-256 is used when given)."""

    name: str
    md5: str = ""
    sha256: str = ""

    def checksum(self) -> tuple[str, str]:
        """``(algorithm, hex digest)`` the file is verified with: ``("sha256", ...)`` when given, else ``("md5", ...)``."""
        if self.sha256:
            return "sha256", self.sha256
        if self.md5:
            return "md5", self.md5
        raise ValueError(f"{self.name}: no published checksum (md5 or sha256) to verify it against")


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

@dataclass(frozen=True)
class FileSetDataset:
    """A dataset published as several files in one folder, on one or more mirrors.

    Attributes:
        title: the dataset's name in messages.
        folder: sub-folder of the data root that holds the files (may contain ``/``).
        mirrors: base URLs, tried in order (each ends with ``/``).
        file_list: the files, in the dataset's order.
    """

    title: str
    folder: str
    mirrors: tuple[str, ...]
    file_list: tuple[IdxFile, ...]

    def files(self) -> list[IdxFile]:
        """The files, as a list like :meth:`IdxDataset.files`."""
        return list(self.file_list)


_TANG_SHA256 = {
    0: "4f88f429938082523cdc72a1612bd7a7c3e3f7a33f8192c61ae51340efc3c92d",
    1000: "6e703b8d8dcedbd6110f6d48d043665ca2131db2035a5bfcef5e59a19aeb6d75",
    2000: "ec28efa7e2ae9cdbbba09f0ed186e32ccae47a325ad1e5816b7ad56071c1665a",
    3000: "9e4ba2323752b6b9fbdba875cdbc6a26636fe0cabc85fd066370d4915952001f",
    4000: "b8a7946c879b9658a6c667a4c55f776fae7e5e00a17789ab06b274c1429afc66",
    5000: "a0306e6962cff01639ad9a00b042a201b8dec1f30fa5d768a7b112589887861e",
    6000: "982a21d2b15922b406911f1c825785054314c686da86b2155d7aebb362d22771",
    7000: "a6fb69d7b4343c904dc56ae5aae34facc2478d196b51c37ceba9d1e2f171b342",
    8000: "ac3848e95b02736168003863795de4474838c2d6a71a24ca2a4a280ea5177773",
    9000: "b99d6596e3a1fe1a661652383083f92d196b8baf4e461d087081d5e1e1b7a51f",
    10000: "b97d1c5509ab62f5b433dee2020c11c4deda4542e276683d1ada6619c34c2113",
    11000: "9adf1835246053c821d99af39ce9092e14a94e1baf91740098bd9fc6f6f1cd27",
    12000: "ec43d055a219d52ecdb58cd30a8a444189392f0d68b92a41495df1c72c5fd095",
    13000: "eb9c85072d7913bb972e07c72f0123e9d7addca22cfd833cb79a5d74b1c76ebf",
    14000: "1e366dd3fb5a011091524bed36e4edff5d015bf0ddb14143f298515387dbd9a9",
    15000: "0386e58f46517daa3af0e0f385e0223f1efc0dac53afbe8fea64f99074d870b7",
    16000: "1c477aef1fc50523f9baf10f29d2d89201a14c4c73001c1c041d0fe8464d11db",
    17000: "11bac8333b2042975b9844423d113ff2c6fdf701c8b08a5b3aaa6bc9472222de",
    18000: "37543a147d16e3576d5f45ba8f7b8b51fc311bc10eddae9440f16f2d5ae885c2",
    19000: "dea74b41bc807ce2527bb119862a251e3a92b6f69bdf9f98b1434a8336830542",
    20000: "8ccf0783888b15bec60d0253e278cd4b67e94a77725df8ed079d4d8062d050b4",
    21000: "bddae814c82bf6a9fd294504aa48794bca5f03e986110739b1577aa811125cbd",
    22000: "d7e7efe3f67415455ae93974a5aa67427e99f6713fde27920bfb657ad3204c4a",
    23000: "220a535a762349ec1beed00f1dc11293ccefc70bda15c5258bbcab208b14337f",
    24000: "2f40a4ec0e4469c29f0f028d7a4ad73b83850aa271be9b63ea0c08de6e094dee",
    25000: "7e7c00ba3f7a95e97de5440f85affa9d54b420d31995b449e97a3e9ea00259f5",
    26000: "74b5bed25622da1611928fdb31297fafadaf2876ce32ddb0c8b6d12d772979f4",
    27000: "11626fcc310bbbcc601f7c8c4d8a664cef4907076cd7ec4f16268ee5b921ba44",
    28000: "86a15affa95859046f869ffd4850886250d1a181e5151b1f096f728fb2d67502",
    29000: "e1a0cffe17b4f109399db38f2b23f9b6668b8ca1c3c24e36d5cbe4f40a925862",
    30000: "e71996f771d15476bae48751081b473b381774b5d335f6163b183f70a2eaed01",
    31000: "f1efaf172d4f6fa9aaacfa4160feb766189989c3264da6ce3a6d64a7c97097bb",
    32000: "fcb2096245719199249ad23e75eac6997b5a4341564dd1cf73ce8008975b3d74",
    33000: "35abb37f65817ee4630cfeb2db286832e505873c477e12f14693bcd20e920885",
    34000: "4b656a62b6a187792c96a632c7e33f443eabda8b48c4fb5dfdda72cf02003095",
    35000: "a9671b350e58b805fda88b2c17fa0bf3a05313017d28485010e6f60a69bdf945",
    36000: "1c8e71a32743b37d318bf8beb44b8809a8079011231cf3c7106e2c59f03c55b4",
    37000: "4c37d2d92ee6fdd73299ef13c91e17b9cbb11ef59d1e024254db1eceb95dc7ae",
    38000: "08b2ce85e59eac59fe621921b62c15528e9dfb6a102994297703ad67e14aa83f",
    39000: "791d0171fe1dc88cee8424ae0281f495ed0dcdf042f97f2a3fc9b37e05e9426c",
    40000: "851d0c3cb796c7f7c63a7765e28564b2c3be3d9691c9f43f88d4d3c64034b5d8",
    41000: "3c12f59a5103e582eed9fe6ae13affddc030a31e9956efb13cb7768296ba7396",
    42000: "060026beb06028864bce48e8074e2690f92a1dc5a76ee91f98f2d62b5f02a15c",
    43000: "de5e658dccbcf0d2b38312b39a2423459b88ef893830bc145d453d82887a5753",
    44000: "8c6d550818f5390413bc58fbb3af059d3fa4a92264b1bcf84439c2b0bb043985",
    45000: "5177a4747b785f04897c36b77d5e033b11a7bcad759d1557fdb425166b8767f3",
    46000: "287e548147e6959306b74c862a1ebe43cdca39adee34e2c63ae5d3b5eaced1f5",
    47000: "8b43cce475ed43b1105a12a8bdcef32ac22dc056c5f2c616a2976a4103b5d8ac",
    48000: "8df4861e8d7bc114e91d0a5e37d193f662485cd88b8d09289cc5ac9ab243c3ed",
    49000: "418e5a082cb70c4f85ce842affec8828a53f6296882e45339c74d553fc46495e",
    50000: "894bf4e729932d2b48ba731a48075347cf55626c08ac9f30b2fe412ca9e4e895",
    51000: "9bd1b263807c5c64bca773b76d4861a49af19b76184f88260d6080bb03311928",
    52000: "1124f4b27f46bd1ffaafdda530719eddbe41858778a0a13e4557ea4eb49ffef0",
    53000: "75841062fa939e72ee12669859933c9178b88a5c5492bc9ba84d9ef7c6f1e65a",
    54000: "cd2ba326b80ff8490723ad9fb1ace812306f0e433b74268420165068b0a975ac",
    55000: "3782736dfee847958363d4adeff1236f148aff3726f2964963b17b06dad2f97b",
    56000: "274ad6e13c069e35856e53b5dee6821ad2aa9bf8b2a5f969e2eb1234fe954bca",
    57000: "e04c137b040c1a91e16614178c189d0c30a68e1d4657ea8fde8467601e3ac121",
}

TANG_POEMS = FileSetDataset(
    title="Tang poems (全唐诗)",
    folder="chinese-poetry/quantangshi",
    mirrors=(
        # the npm release chinese-poetry@2.0.1 (folder dist/quantangshi/), file by file through two npm CDNs
        "https://cdn.jsdelivr.net/npm/chinese-poetry@2.0.1/dist/quantangshi/",
        "https://unpkg.com/chinese-poetry@2.0.1/dist/quantangshi/",
        # the same files in the collection's GitHub repository, folder 全唐诗/ (checked against the same SHA-256)
        "https://raw.githubusercontent.com/chinese-poetry/chinese-poetry/master/%E5%85%A8%E5%94%90%E8%AF%97/",
    ),
    file_list=tuple(IdxFile(f"poet.tang.{n}.json", sha256=digest) for n, digest in _TANG_SHA256.items()),
)
"""The 58 JSON files of the complete Tang poems (全唐诗) of the MIT-licensed collection chinese-poetry."""

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


def file_digest(path: Path, algorithm: str = "md5", prefix: bytes = b"") -> str:
    """The hex digest of ``prefix`` + the file's bytes by ``algorithm`` (``"md5"``, ``"sha256"``, ...),
    read in 1 MiB chunks."""
    digest = hashlib.new(algorithm, prefix)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def md5sum(path: Path) -> str:
    """The hex MD5 digest of a file, read in 1 MiB chunks."""
    return file_digest(path, "md5")


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


def download_verified(url: str, target: Path, verify: Callable[[Path], None], timeout: float) -> None:
    """Fetch ``url`` into a temporary file beside ``target`` and rename it into place once ``verify(tmp)``
    returns. ``verify`` raises ``ValueError`` when the bytes are not the file wanted (a checksum or size
    that differs); that, an interrupted transfer or any other error leaves neither ``target`` nor a
    partial file behind."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            shutil.copyfileobj(response, out, _CHUNK)
        verify(tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _has_checksum(file: IdxFile) -> Callable[[Path], None]:
    """A ``verify`` for :func:`download_verified`: the file's checksum must be ``file``'s."""

    def verify(path: Path) -> None:
        algorithm, expected = file.checksum()
        got = file_digest(path, algorithm)
        if got != expected:
            raise ValueError(f"checksum mismatch: {algorithm.upper()} {got}, expected {expected}")

    return verify


def _fetch(dataset: IdxDataset | TextDataset | FileSetDataset, file: IdxFile, folder: Path, timeout: float) -> str | None:
    """Try every mirror for one file; return None on success, else what went wrong."""
    folder.mkdir(parents=True, exist_ok=True)
    failures = []
    for mirror in dataset.mirrors:
        url = mirror + file.name
        try:
            download_verified(url, folder / file.name, _has_checksum(file), timeout)
            return None
        except (OSError, ValueError, http.client.HTTPException) as err:  # URLError is an OSError
            failures.append(f"{url}: {err}")
    return "; ".join(failures) or "no mirrors configured"


def ensure_files(
    dataset: IdxDataset | TextDataset | FileSetDataset,
    root: str | os.PathLike[str] | None = None,
    download: bool = True,
    timeout: float = 60.0,
) -> Path:
    """Make sure every file of ``dataset`` is present with the right checksum.

    A file that is missing or whose checksum (MD5 or SHA-256) is wrong is (re-)downloaded when
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
        else:
            algorithm, expected = file.checksum()
            if file_digest(path, algorithm) != expected:
                problems[file.name] = f"corrupt ({algorithm.upper()} does not match the published checksum)"
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


@dataclass(frozen=True)
class Poem:
    """One poem: its author, its title and its lines (each line a couplet with its punctuation, as published).

    >>> Poem("李白", "靜夜思", ("牀前看月光，疑是地上霜。", "舉頭望山月，低頭思故鄉。")).text
    '牀前看月光，疑是地上霜。\\n舉頭望山月，低頭思故鄉。'
    """

    author: str
    title: str
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        """The poem's lines joined by newlines."""
        return "\n".join(self.lines)


def tang_poems(root: str | os.PathLike[str] | None = None, download: bool = True) -> list[Poem]:
    """The complete Tang poems (全唐诗): 57,607 poems by 3,663 poets, in traditional characters, in the collection's order.

    The 58 JSON files of the MIT-licensed collection chinese-poetry (the poems
    themselves are public domain; 3,668,082 characters of verse, 9,588 distinct)
    live in ``<root>/chinese-poetry/quantangshi/`` (see the module docstring for
    ``root``). Each is checked against its published SHA-256 and, when missing
    or corrupt and ``download`` is true, downloaded from the npm release
    ``chinese-poetry@2.0.1`` (or the collection's GitHub repository) to a
    temporary file, verified, then renamed into place. Four poems have no lines
    (only a title survives); they are kept, so counts match the collection.

    Returns:
        a list of :class:`Poem`, e.g. ``Poem(author="李白", title="靜夜思", lines=(...))``.

    Raises:
        DataUnavailableError: files are missing or corrupt and could not be
            downloaded; the message names each file and the folder to put it in.
    """
    folder = ensure_files(TANG_POEMS, root, download)
    poems = []
    for file in TANG_POEMS.file_list:
        for entry in json.loads((folder / file.name).read_bytes().decode("utf-8")):
            poems.append(Poem(entry["author"], entry["title"], tuple(entry["paragraphs"])))
    return poems


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
