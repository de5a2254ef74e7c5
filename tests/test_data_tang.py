"""companion.data for the Tang poems: the real files, their download (SHA-256, atomic), the offline error."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest

from downloads import closed_port, leftovers
from companion import data

FOLDER = data.TANG_POEMS.folder  # chinese-poetry/quantangshi
LAST = data.TANG_POEMS.file_list[-1].name  # poet.tang.57000.json, the smallest file (591 poems)


@pytest.fixture(scope="module")
def real_root() -> Path:
    """A data root holding the real files (downloaded to the cache if need be)."""
    folder = data.ensure_files(data.TANG_POEMS)
    return folder.parent.parent


@pytest.fixture(scope="module")
def real_poems(real_root) -> list[data.Poem]:
    return data.tang_poems(root=real_root, download=False)


# --- the real files ----------------------------------------------------------------------------


def test_the_collection_is_complete(real_poems):
    assert len(real_poems) == 57_607 and len(data.TANG_POEMS.files()) == 58
    assert len({poem.author for poem in real_poems}) == 3_663
    verse = "".join("".join(poem.lines) for poem in real_poems)
    assert len(verse) == 3_668_082 and len(set(verse)) == 9_588
    assert sum(not poem.lines for poem in real_poems) == 4  # only a title survives
    first = real_poems[0]
    assert (first.author, first.title) == ("太宗皇帝", "帝京篇十首 一")
    assert first.lines[0] == "秦川雄帝宅，函谷壯皇居。"


def test_li_bai_quiet_night_thoughts_is_there_in_traditional_characters(real_poems):
    found = [poem for poem in real_poems if poem.author == "李白" and poem.title == "靜夜思"]
    assert found == [data.Poem("李白", "靜夜思", ("牀前看月光，疑是地上霜。", "舉頭望山月，低頭思故鄉。"))]
    assert found[0].text == "牀前看月光，疑是地上霜。\n舉頭望山月，低頭思故鄉。"


def test_poems_are_frozen_with_tuple_lines(real_poems):
    poem = real_poems[1]
    assert isinstance(poem.lines, tuple) and all(isinstance(line, str) for line in poem.lines)
    with pytest.raises(dataclasses.FrozenInstanceError):
        poem.title = "x"  # type: ignore[misc]


def test_default_root_is_companion_data(monkeypatch, real_root):
    monkeypatch.setenv("COMPANION_DATA", str(real_root))
    assert len(data.tang_poems(download=False)) == 57_607


# --- checksums and downloads -------------------------------------------------------------------


def all_but_last(real_root: Path, root: Path) -> Path:
    """A data root holding copies of every real file but the last; returns the folder."""
    folder = root / FOLDER
    shutil.copytree(real_root / FOLDER, folder, ignore=shutil.ignore_patterns(LAST))
    return folder


def with_mirrors(monkeypatch, *mirrors: str) -> None:
    monkeypatch.setattr(data, "TANG_POEMS", dataclasses.replace(data.TANG_POEMS, mirrors=mirrors))


def test_missing_file_is_downloaded_and_verified(real_root, tmp_path, file_server, monkeypatch):
    folder = all_but_last(real_root, tmp_path)
    file_server.files[f"/npm/{LAST}"] = (real_root / FOLDER / LAST).read_bytes()
    with_mirrors(monkeypatch, file_server.base_url + "/gone/", file_server.base_url + "/npm/")
    poems = data.tang_poems(root=tmp_path)
    assert len(poems) == 57_607 and poems[-1].author == "無名氏"
    assert file_server.requests == [f"/gone/{LAST}", f"/npm/{LAST}"]
    assert data.file_digest(folder / LAST, "sha256") == data.TANG_POEMS.file_list[-1].sha256
    assert leftovers(folder) == []
    data.tang_poems(root=tmp_path)  # every file verified on disk: no new download
    assert len(file_server.requests) == 2


def test_corrupt_download_is_rejected_and_leaves_nothing(real_root, tmp_path, file_server, monkeypatch):
    folder = all_but_last(real_root, tmp_path)
    corrupt = (real_root / FOLDER / LAST).read_bytes().replace("無名氏".encode(), "李白".encode(), 1)
    file_server.files[f"/npm/{LAST}"] = corrupt
    with_mirrors(monkeypatch, file_server.base_url + "/npm/")
    with pytest.raises(data.DataUnavailableError, match=rf"{LAST}: missing; download failed.*checksum mismatch.*SHA256"):
        data.tang_poems(root=tmp_path)
    assert not (folder / LAST).exists() and leftovers(folder) == []


def test_truncated_download_is_never_used(real_root, tmp_path, file_server, monkeypatch):
    folder = all_but_last(real_root, tmp_path)
    file_server.files[f"/npm/{LAST}"] = (real_root / FOLDER / LAST).read_bytes()
    file_server.truncate[f"/npm/{LAST}"] = 10_000
    with_mirrors(monkeypatch, file_server.base_url + "/npm/")
    with pytest.raises(data.DataUnavailableError, match=rf"{LAST}: missing; download failed"):
        data.tang_poems(root=tmp_path)
    assert not (folder / LAST).exists() and leftovers(folder) == []


def test_corrupt_file_on_disk_is_reported_then_replaced(real_root, tmp_path, file_server, monkeypatch):
    folder = all_but_last(real_root, tmp_path)
    (folder / LAST).write_bytes((real_root / FOLDER / LAST).read_bytes()[:-1])
    with pytest.raises(data.DataUnavailableError, match=rf"{LAST}: corrupt \(SHA256 does not match"):
        data.tang_poems(root=tmp_path, download=False)
    file_server.files[f"/npm/{LAST}"] = (real_root / FOLDER / LAST).read_bytes()
    with_mirrors(monkeypatch, file_server.base_url + "/npm/")
    assert len(data.tang_poems(root=tmp_path)) == 57_607
    assert file_server.requests == [f"/npm/{LAST}"]


def test_offline_error_names_every_missing_file_and_the_folder(tmp_path, monkeypatch):
    with_mirrors(monkeypatch, f"http://127.0.0.1:{closed_port()}/quantangshi/")
    with pytest.raises(data.DataUnavailableError) as err:
        data.tang_poems(root=tmp_path)
    message = str(err.value)
    assert "Tang poems (全唐诗) files are not usable in" in message
    assert str(tmp_path / FOLDER) in message and "COMPANION_DATA" in message
    for file in data.TANG_POEMS.files():
        assert f"{file.name}: missing; download failed" in message
    assert leftovers(tmp_path / FOLDER) == []


def test_no_download_when_told_not_to(real_root, tmp_path, file_server, monkeypatch):
    all_but_last(real_root, tmp_path)
    with_mirrors(monkeypatch, file_server.base_url + "/npm/")
    with pytest.raises(data.DataUnavailableError, match=rf"{LAST}: missing\n"):
        data.tang_poems(root=tmp_path, download=False)
    assert file_server.requests == []


def test_a_file_without_a_checksum_is_refused():
    with pytest.raises(ValueError, match="no published checksum"):
        data.IdxFile("x.json").checksum()
