"""companion.data for text: the real Tiny Shakespeare file, its download, CharVocab, splits and windows."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from downloads import closed_port, leftovers
from companion import data

NAME = data.TINY_SHAKESPEARE.file.name  # input.txt
FOLDER = data.TINY_SHAKESPEARE.folder  # tinyshakespeare
SIZE = 1_115_394


@pytest.fixture(scope="module")
def real_text_root() -> Path:
    """A data root holding the real Tiny Shakespeare file (downloaded to the cache if need be)."""
    return data.ensure_files(data.TINY_SHAKESPEARE).parent


@pytest.fixture(scope="module")
def real_bytes(real_text_root) -> bytes:
    return (real_text_root / FOLDER / NAME).read_bytes()


# --- the real file -----------------------------------------------------------------------------


def test_tiny_shakespeare_is_the_real_text(real_text_root, real_bytes):
    text = data.tiny_shakespeare(root=real_text_root, download=False)
    assert isinstance(text, str) and len(text) == SIZE == len(real_bytes)
    assert hashlib.sha256(real_bytes).hexdigest() == (
        "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
    )
    assert text.startswith("First Citizen:\nBefore we proceed any further, hear me speak.")
    assert text.count("\n") == 40_000
    vocab = data.CharVocab(text)
    assert len(vocab) == 65 and vocab.chars[:2] == "\n " and vocab.chars[-1] == "z"


def test_default_root_is_companion_data(monkeypatch, real_text_root):
    monkeypatch.setenv("COMPANION_DATA", str(real_text_root))
    assert len(data.tiny_shakespeare(download=False)) == SIZE


# --- checksums and downloads -------------------------------------------------------------------


def with_mirrors(monkeypatch, *mirrors: str) -> None:
    monkeypatch.setattr(data, "TINY_SHAKESPEARE", dataclasses.replace(data.TINY_SHAKESPEARE, mirrors=mirrors))


def test_download_tries_mirrors_in_turn(real_bytes, tmp_path, file_server, monkeypatch):
    file_server.files[f"/good/{NAME}"] = real_bytes
    with_mirrors(monkeypatch, file_server.base_url + "/missing/", file_server.base_url + "/good/")
    text = data.tiny_shakespeare(root=tmp_path)
    assert len(text) == SIZE and text.startswith("First Citizen:")
    assert file_server.requests == [f"/missing/{NAME}", f"/good/{NAME}"]
    assert (tmp_path / FOLDER / NAME).read_bytes() == real_bytes
    assert leftovers(tmp_path / FOLDER) == []
    data.tiny_shakespeare(root=tmp_path)  # a verified file on disk: no new download
    assert len(file_server.requests) == 2


def test_truncated_download_is_never_used(real_bytes, tmp_path, file_server, monkeypatch):
    file_server.files[f"/good/{NAME}"] = real_bytes
    file_server.truncate[f"/good/{NAME}"] = 100_000
    with_mirrors(monkeypatch, file_server.base_url + "/good/")
    with pytest.raises(data.DataUnavailableError, match=rf"{NAME}: missing; download failed"):
        data.tiny_shakespeare(root=tmp_path)
    assert not (tmp_path / FOLDER / NAME).exists()
    assert leftovers(tmp_path / FOLDER) == []


def test_download_with_wrong_checksum_is_rejected(real_bytes, tmp_path, file_server, monkeypatch):
    corrupt = bytearray(real_bytes)
    corrupt[500_000] ^= 0x20  # one letter changes case: same length, different text
    file_server.files[f"/good/{NAME}"] = bytes(corrupt)
    with_mirrors(monkeypatch, file_server.base_url + "/good/")
    with pytest.raises(data.DataUnavailableError, match="checksum mismatch"):
        data.tiny_shakespeare(root=tmp_path)
    assert not (tmp_path / FOLDER / NAME).exists()
    assert leftovers(tmp_path / FOLDER) == []


def test_corrupt_file_on_disk_is_reported_then_replaced(real_bytes, tmp_path, file_server, monkeypatch):
    folder = tmp_path / FOLDER
    folder.mkdir()
    (folder / NAME).write_bytes(real_bytes[:-1])  # a partial file from an earlier copy
    with pytest.raises(data.DataUnavailableError, match=rf"{NAME}: corrupt \(MD5 does not match"):
        data.tiny_shakespeare(root=tmp_path, download=False)
    file_server.files[f"/good/{NAME}"] = real_bytes
    with_mirrors(monkeypatch, file_server.base_url + "/good/")
    assert len(data.tiny_shakespeare(root=tmp_path)) == SIZE
    assert data.md5sum(folder / NAME) == data.TINY_SHAKESPEARE.file.md5
    assert leftovers(folder) == []


def test_offline_error_names_the_file_and_the_folder(tmp_path, monkeypatch):
    with_mirrors(monkeypatch, f"http://127.0.0.1:{closed_port()}/tinyshakespeare/")
    with pytest.raises(data.DataUnavailableError) as err:
        data.tiny_shakespeare(root=tmp_path)
    message = str(err.value)
    assert "Tiny Shakespeare files are not usable in" in message
    assert str(tmp_path / FOLDER) in message and f"{NAME}: missing; download failed" in message
    assert "download them by hand" in message and "COMPANION_DATA" in message
    assert leftovers(tmp_path / FOLDER) == []


def test_no_download_when_told_not_to(tmp_path, file_server, monkeypatch):
    with_mirrors(monkeypatch, file_server.base_url + "/good/")
    with pytest.raises(data.DataUnavailableError, match=rf"{NAME}: missing\n"):
        data.tiny_shakespeare(root=tmp_path, download=False)
    assert file_server.requests == []


# --- CharVocab ---------------------------------------------------------------------------------


def test_vocab_numbers_characters_in_sorted_order():
    vocab = data.CharVocab("hello world")
    assert vocab.chars == " dehlorw" and len(vocab) == 8
    ids = vocab.encode("hello")
    assert ids.dtype == torch.int64 and ids.shape == (5,) and ids.tolist() == [3, 2, 4, 4, 5]
    assert vocab.decode(ids) == "hello" and vocab.decode([7, 5]) == "wo"
    assert vocab.encode("").shape == (0,) and vocab.decode([]) == ""
    assert vocab.index["h"] == 3 and "8 characters" in repr(vocab)


@settings(max_examples=50, deadline=None)
@given(st.text(min_size=1, max_size=200))
def test_vocab_round_trip_of_any_text(text):
    vocab = data.CharVocab(text)
    ids = vocab.encode(text)
    assert vocab.decode(ids) == text and vocab.decode(ids.tolist()) == text
    assert len(ids) == len(text) and int(ids.max()) < len(vocab) and int(ids.min()) >= 0
    assert list(vocab.chars) == sorted(set(text))


def test_vocab_round_trip_of_the_real_text(real_text_root):
    text = data.tiny_shakespeare(root=real_text_root, download=False)
    vocab = data.CharVocab(text)
    ids = vocab.encode(text)
    assert len(ids) == SIZE and vocab.decode(ids[:1000]) == text[:1000]
    assert vocab.decode(ids[-1000:]) == text[-1000:]
    assert torch.equal(ids.bincount(minlength=65), torch.tensor([text.count(c) for c in vocab.chars]))


def test_unknown_character_is_a_clear_error():
    vocab = data.CharVocab("abc")
    with pytest.raises(ValueError, match=r"character 'z' \(U\+007A\) at position 2 is not in the vocabulary"):
        vocab.encode("abzc")
    with pytest.raises(ValueError, match=r"character '€' \(U\+20AC\) at position 0"):
        vocab.encode("€")


@pytest.mark.parametrize(
    ("ids", "error", "message"),
    [
        ([0, 3], ValueError, r"id 3 at position 1 is outside the vocabulary's range 0 … 2"),
        ([-1], ValueError, r"id -1 at position 0 is outside"),
        (torch.tensor([[0, 1]]), ValueError, r"1-D sequence of ids \[T\]; got shape \(1, 2\)"),
        (torch.tensor([0.0, 1.0]), TypeError, "integer ids; got a tensor of dtype torch.float32"),
        ([0, 1.0], TypeError, "integer ids; got 1.0 at position 1"),
    ],
)
def test_decode_rejects_bad_ids(ids, error, message):
    with pytest.raises(error, match=message):
        data.CharVocab("abc").decode(ids)


def test_vocab_rejects_bad_texts():
    with pytest.raises(ValueError, match="non-empty text"):
        data.CharVocab("")
    with pytest.raises(TypeError, match="built from a str; got list"):
        data.CharVocab(["a", "b"])
    with pytest.raises(TypeError, match="encode takes a str; got bytes"):
        data.CharVocab("ab").encode(b"ab")


# --- splits and windows ------------------------------------------------------------------------


def test_split_text_is_by_position():
    ids = torch.arange(100)
    train, val = data.split_text(ids)
    assert train.tolist() == list(range(90)) and val.tolist() == list(range(90, 100))
    train, val = data.split_text(ids, val_fraction=0.25)
    assert len(train) == 75 and int(val[0]) == 75


@pytest.mark.parametrize(
    ("ids", "fraction", "message"),
    [
        (torch.arange(10), 0.0, "strictly between 0 and 1; got 0.0"),
        (torch.arange(10), 1, "strictly between 0 and 1; got 1"),
        (torch.arange(3), 0.1, "too short to split"),
        (torch.zeros(2, 5, dtype=torch.long), 0.1, r"1-D tensor of ids \[T\]; got \(2, 5\)"),
    ],
)
def test_split_text_rejects_bad_input(ids, fraction, message):
    with pytest.raises(ValueError, match=message):
        data.split_text(ids, fraction)


def test_char_windows_are_shifted_by_one():
    ids = torch.arange(11)
    X, Y = data.char_windows(ids, 3)
    assert X.dtype == Y.dtype == torch.int64
    assert X.tolist() == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    assert Y.tolist() == [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
    X, Y = data.char_windows(ids, 4, stride=2)
    assert X.tolist() == [[0, 1, 2, 3], [2, 3, 4, 5], [4, 5, 6, 7], [6, 7, 8, 9]]
    assert torch.equal(Y, X + 1)


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 300), st.integers(1, 40), st.one_of(st.none(), st.integers(1, 50)))
def test_char_windows_shapes_and_contents(n, length, stride):
    ids = torch.randint(0, 65, (n,), generator=torch.Generator().manual_seed(n))
    if n < length + 1:
        with pytest.raises(ValueError, match=f"need at least {length + 1} ids; got {n}"):
            data.char_windows(ids, length, stride)
        return
    X, Y = data.char_windows(ids, length, stride)
    step = length if stride is None else stride
    count = (n - 1 - length) // step + 1
    assert X.shape == Y.shape == (count, length)
    assert X.is_contiguous() and Y.is_contiguous()
    for i in (0, count - 1):
        start = i * step
        assert torch.equal(X[i], ids[start : start + length])
        assert torch.equal(Y[i], ids[start + 1 : start + length + 1])
    assert (count - 1) * step + length + 1 <= n < count * step + length + 1  # no window left out


@pytest.mark.parametrize(
    ("length", "stride", "message"),
    [(0, None, "length must be a positive int; got 0"), (3, 0, "stride must be a positive int; got 0")],
)
def test_char_windows_rejects_bad_sizes(length, stride, message):
    with pytest.raises(ValueError, match=message):
        data.char_windows(torch.arange(10), length, stride)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bool])
def test_char_windows_refuses_ids_that_are_not_integers(dtype):
    with pytest.raises(TypeError, match=f"integer token ids.*{dtype}"):
        data.char_windows(torch.arange(20).to(dtype), 4)


def test_char_windows_takes_numpy_integers():
    import numpy as np

    X, Y = data.char_windows(torch.arange(20), np.int64(4), stride=np.int32(2))
    assert X.shape == (8, 4) and torch.equal(Y, X + 1)
