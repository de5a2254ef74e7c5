"""Fixtures of the unit tests: the real MNIST folder and a local file server; the options ``--run-slow``
and ``--colab-every-chapter``."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from companion import data

SLOW_REASON = "slow: run with --run-slow (.ci/run does)"
COLAB_REASON = ("another chapter than the day's: run with --colab-every-chapter "
                "(.github/workflows/colab.yml runs every chapter in Colab's own image)")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", help="also run the tests marked slow")
    parser.addoption("--colab-every-chapter", action="store_true",
                     help="run every chapter in the Colab-like Python, not only the chapter of the day")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip the tests marked ``slow`` unless ``--run-slow`` is given, and those marked ``colab_sweep``
    unless ``--colab-every-chapter`` is."""
    skipped = {"slow": (not config.getoption("--run-slow"), SLOW_REASON),
               "colab_sweep": (not config.getoption("--colab-every-chapter"), COLAB_REASON)}
    for item in items:
        for marker, (skip, reason) in skipped.items():
            if skip and item.get_closest_marker(marker):
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def real_mnist_root() -> Path:
    """A data root holding the four real MNIST files (downloaded to the cache if need be)."""
    return data.ensure_files(data.MNIST).parent


@dataclass
class FileServer:
    """An HTTP server on 127.0.0.1 that serves ``files`` (path → bytes).

    ``truncate[path] = n`` sends the full ``Content-Length`` but only the first
    ``n`` bytes, then closes the connection: an interrupted download.
    ``requests`` lists every path asked for.
    """

    base_url: str
    files: dict[str, bytes] = field(default_factory=dict)
    truncate: dict[str, int] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)


@pytest.fixture
def file_server() -> Iterator[FileServer]:
    state = FileServer(base_url="")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            state.requests.append(self.path)
            body = state.files.get(self.path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: state.truncate.get(self.path, len(body))])
            self.wfile.flush()
            self.close_connection = True

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.base_url = f"http://127.0.0.1:{server.server_port}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
