"""What the download tests of `companion.data` share (a helper module of the tests, not a test file)."""

from __future__ import annotations

import socket
from pathlib import Path


def leftovers(folder: Path) -> list[str]:
    """The ``.part`` files a download left in ``folder``: a failed download must leave none."""
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".part"))


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on, so that a download from it fails at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
