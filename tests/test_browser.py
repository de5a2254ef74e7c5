"""The built book as a reader sees it, offline: headless Chromium with no network opens two chapters.

A module fixture builds the book as ``make book`` does, with the real ``_config.yml`` and ``_toc.yml``,
into a temporary folder under ``-W`` (a warning fails the build): two chapters executed side by side,
in the quick profile, by ``bench/run_notebooks.py`` into a jupyter-cache, then the book built from that
cache (``tools/book_config.py``) without executing anything again; the other pages are built
unexecuted, so that every link and citation between pages resolves as in the full book. It serves the HTML on 127.0.0.1, and Chromium loads each of the two chapters with a
proxy that leads nowhere, so any request beyond 127.0.0.1 fails as it would on a reader's machine
with no network. The server's log tells which files each page asked for.

Chapter 1 holds much of the course's math and many figures; chapter 4 trains with
``companion.train.fit``, whose progress in the built book must be plain text, not a widget.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

import pytest
import yaml
from book_files import load_script, read_toc, toc_files

ROOT = Path(__file__).resolve().parent.parent
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
TOC = read_toc()
CHAPTERS = ("book/01-neurons", "book/04-mnist")
JUPYTER_BOOK = Path(sys.executable).with_name("jupyter-book")

book_config = load_script("tools/book_config.py")


def _chromium() -> str | None:
    if Path("/usr/bin/chromium").is_file():
        return "/usr/bin/chromium"
    return shutil.which("chromium")


CHROMIUM = _chromium()
pytestmark = [
    pytest.mark.slow,  # a book build that executes two chapters: a minute or two
    pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (/usr/bin/chromium or chromium on PATH)"),
    pytest.mark.skipif(not JUPYTER_BOOK.is_file(), reason="needs jupyter-book (the [book] extra)"),
]

# The chapters' "Open in Colab" badge is Colab's own image: with no network it shows its alt text.
COLAB_BADGE = "https://colab.research.google.com/assets/colab-badge.svg"
IMAGE_SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF8")
RAW_TEX = ("\\(", "\\[", "$$", "\\begin{")
SKIPPED_TEXT = {"script", "style", "pre", "code", "textarea"}
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


# -- the book -------------------------------------------------------------------------------------


@dataclass
class Server:
    """``python -m http.server`` on 127.0.0.1: its base URL, process and request log."""

    url: str
    process: subprocess.Popen
    log: Path

    def requests_since(self, offset: int) -> list[tuple[str, int]]:
        """(path, status) of each GET logged after byte ``offset`` of the log."""
        text = self.log.read_bytes()[offset:].decode("utf-8", "replace")
        found = re.findall(r'"GET (\S+) HTTP/[\d.]+" (\d{3})', text)
        return [(unquote(urlsplit(path).path), int(status)) for path, status in found]


@dataclass
class Book:
    """The built HTML, the server that serves it, and a scratch folder."""

    html: Path
    server: Server
    tmp: Path


@pytest.fixture(scope="module")
def book(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Book]:
    tmp = tmp_path_factory.mktemp("browser")
    # MPLBACKEND=Agg (set for the tests by conftest.py) would keep the kernels off the inline
    # backend, and every figure off the pages: the book is built as `make book` builds it.
    env = {key: value for key, value in os.environ.items() if key != "MPLBACKEND"}
    env["COMPANION_PROFILE"] = "quick"
    cache = tmp / "cache"
    run = [sys.executable, str(ROOT / "bench" / "run_notebooks.py"), "--profile", "quick", "--jobs", "2",
           "--cache", str(cache), "--output", str(tmp / "run.jsonl"), *(Path(c).name for c in CHAPTERS)]
    done = subprocess.run(run, env=env, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, f"executing the chapters failed:\n{done.stdout}\n{done.stderr[-4000:]}"
    others = [name for name in toc_files(TOC) if name not in CHAPTERS]
    config = book_config.book_config(cache, unexecuted=others)
    (tmp / "config.yml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    command = [str(JUPYTER_BOOK), "build", str(ROOT), "--config", str(tmp / "config.yml"),
               "--path-output", str(tmp / "out"), "-W", "--keep-going"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1800)
    log = done.stdout + done.stderr
    assert done.returncode == 0, f"the book build failed or warned:\n{done.stdout[-6000:]}\n{done.stderr[-4000:]}"
    assert "Executed notebook" not in log, "the build executed a notebook that the cache should have held"
    cached = re.findall(r"/([\w-]+)\.md: Using cached notebook", log)
    assert sorted(cached) == sorted(Path(c).name for c in CHAPTERS), f"took {cached} from the cache"
    html = tmp / "out" / "_build" / "html"

    log = tmp / "server.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-u", "-m", "http.server", "0", "--bind", "127.0.0.1", "--directory", str(html)],
            stdout=subprocess.PIPE, stderr=sink, text=True,
        )
    try:
        first = process.stdout.readline()
        port = re.search(r" port (\d+)", first)
        assert port, f"http.server did not start: {first!r}"
        yield Book(html, Server(f"http://127.0.0.1:{port.group(1)}", process, log), tmp)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        process.stdout.close()


# -- a page as Chromium leaves it --------------------------------------------------------------------


@dataclass
class Element:
    """An element of a parsed page: its tag, attributes, parent and children (elements and text)."""

    tag: str
    attrs: dict[str, str]
    parent: Element | None = None
    children: list[Element | str] = field(default_factory=list)

    @property
    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())

    def iter(self) -> Iterator[Element]:
        yield self
        for child in self.children:
            if isinstance(child, Element):
                yield from child.iter()

    def text(self) -> str:
        return "".join(child if isinstance(child, str) else child.text() for child in self.children)


class _TreeBuilder(HTMLParser):
    """A DOM tree from serialized HTML (Chromium's ``--dump-dom`` closes every non-void element)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = self.current = Element("#document", {})

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, {key: value or "" for key, value in attrs}, self.current)
        self.current.children.append(element)
        if tag not in VOID:
            self.current = element

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.current.children.append(Element(tag, {key: value or "" for key, value in attrs}, self.current))

    def handle_endtag(self, tag: str) -> None:
        node = self.current
        while node.parent is not None and node.tag != tag:
            node = node.parent
        if node.parent is not None:
            self.current = node.parent

    def handle_data(self, data: str) -> None:
        self.current.children.append(data)


def parse(html: str) -> Element:
    builder = _TreeBuilder()
    builder.feed(html)
    builder.close()
    return builder.root


def visible_text_nodes(root: Element) -> Iterator[str]:
    """Text nodes of ``root`` outside scripts, styles and code."""
    for child in root.children:
        if isinstance(child, str):
            yield child
        elif child.tag not in SKIPPED_TEXT:
            yield from visible_text_nodes(child)


@dataclass
class Page:
    """A chapter's page: as the build wrote it, as Chromium left it, and what it asked the server for."""

    name: str
    url: str
    source: Element  # the page as the build wrote it
    dom: Element  # the page after Chromium ran its scripts (MathJax)
    dom_html: str
    requests: list[tuple[str, int]]  # (path, status) that the server answered during the load


def open_page(book: Book, name: str) -> Page:
    url = f"{book.server.url}/{name}.html"
    profile = book.tmp / f"profile-{Path(name).name}"
    offset = book.server.log.stat().st_size
    flags = [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-quic",
        "--no-first-run", "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}",
        # Every request goes to a proxy that does not exist, except those to the book's own server.
        "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=127.0.0.1",
        "--virtual-time-budget=20000", "--dump-dom", url,
    ]
    done = subprocess.run([CHROMIUM, *flags], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "<html" in done.stdout, f"Chromium failed on {url}:\n{done.stderr[-3000:]}"
    source = parse((book.html / f"{name}.html").read_text(encoding="utf-8"))
    return Page(name, url, source, parse(done.stdout), done.stdout, book.server.requests_since(offset))


@pytest.fixture(scope="module", params=CHAPTERS, ids=[Path(c).name for c in CHAPTERS])
def page(request: pytest.FixtureRequest, book: Book) -> Page:
    return open_page(book, request.param)


# -- what a reader sees -------------------------------------------------------------------------------


def test_math_is_rendered_by_the_mathjax_shipped_with_the_book(page: Page, book: Book):
    mathjax = CONFIG["sphinx"]["config"]["mathjax_path"]
    scripts = [e.attrs["src"] for e in page.source.iter() if "mathjax" in e.attrs.get("src", "")]
    assert scripts == [f"../_static/{mathjax}"], "pages must load MathJax from the book itself"
    assert (book.html / "_static" / mathjax).is_file()

    math = [e for e in page.source.iter() if "math" in e.classes]
    rendered = [e for e in page.dom.iter() if e.tag == "mjx-container"]
    assert len(math) >= 10, f"{page.name} should hold much math; found {len(math)} formulas"
    assert len(rendered) >= len(math), f"MathJax rendered {len(rendered)} of {len(math)} formulas"
    assert not [e for e in page.dom.iter() if e.tag == "mjx-merror"], "MathJax reported a TeX error"
    raw = sorted({token for text in visible_text_nodes(page.dom) for token in RAW_TEX if token in text})
    assert not raw, f"raw TeX left in the page's text: {raw}"

    served = dict(page.requests)
    assert served.get(f"/_static/{mathjax}") == 200
    fonts = [path for path in served if path.startswith("/_static/mathjax/output/chtml/fonts/woff-v2/")]
    assert fonts and all(served[path] == 200 for path in fonts), "MathJax's fonts must come from the book"


def test_every_image_of_the_page_loads(page: Page, book: Book):
    images = [e.attrs.get("src", "") for e in page.dom.iter() if e.tag == "img"]
    local = [src for src in images if not urlsplit(src).scheme and not src.startswith("//")]
    assert set(images) - set(local) <= {COLAB_BADGE}, "only the Colab badge may come from outside the book"
    assert len(local) >= 5, f"{page.name} should show its figures; found {len(local)} images"
    served = dict(page.requests)
    for src in local:
        path = urlsplit(urljoin(page.url, src)).path
        file = book.html / unquote(path).lstrip("/")
        assert file.is_file(), f"{src} is not in the build"
        head = file.read_bytes()[:4096]
        is_svg = file.suffix == ".svg" and b"<svg" in head
        assert head.startswith(IMAGE_SIGNATURES) or is_svg, f"{src} is not a PNG, JPEG, GIF or SVG image"
        assert served.get(unquote(path)) == 200, f"the browser did not load {src}"


def test_the_page_asked_for_nothing_that_is_missing(page: Page):
    # A browser asks for /favicon.ico by itself when a page names no icon.
    failed = [(path, status) for path, status in page.requests if status >= 400 and path != "/favicon.ico"]
    assert not failed, f"requests that failed: {failed}"


def test_training_progress_is_text_not_a_widget(page: Page):
    assert "application/vnd.jupyter.widget-view+json" not in page.dom_html
    assert not [e for e in page.dom.iter() if any(c.startswith("jupyter-widgets") for c in e.classes)]
    outputs = "\n".join(e.text() for e in page.dom.iter() if "cell_output" in e.classes)
    assert "Loading widget" not in page.dom.text()
    assert "█" not in outputs and not re.search(r"\d+%\|", outputs), "a tqdm bar was left in an output"
    if page.name == "book/04-mnist":
        assert re.search(r"(?m)^epoch \d+/\d+", outputs), "training should print one line per epoch"


def test_colab_links_open_the_chapters_notebook(page: Page):
    expected = colab_url(page.name)
    launch = [e for e in page.dom.iter() if "dropdown-launch-buttons" in e.classes]
    assert len(launch) == 1, "the page header should have one launch-buttons dropdown"
    buttons = [e.attrs.get("href") for e in launch[0].iter() if e.tag == "a" and "Colab" in e.text()]
    assert buttons == [expected]
    badges = [e.attrs.get("href") for e in page.dom.iter()
              if e.tag == "a" and any(c.tag == "img" and c.attrs.get("src") == COLAB_BADGE for c in e.iter())]
    assert badges == [expected]


def colab_url(name: str) -> str:
    """Where Colab opens the twin of the page ``name`` (``book/04-mnist``), from ``_config.yml``'s repository."""
    repository = urlsplit(CONFIG["repository"]["url"]).path.strip("/")
    return f"https://colab.research.google.com/github/{repository}/blob/{CONFIG['repository']['branch']}/{name}.ipynb"


def test_every_page_with_a_twin_opens_that_twin_in_colab(book: Book):
    """Every page of the book, executed or not: a notebook page's Colab button opens its own twin."""
    for name in toc_files(TOC):
        root = parse((book.html / f"{name}.html").read_text(encoding="utf-8"))
        launch = [e for e in root.iter() if "dropdown-launch-buttons" in e.classes]
        buttons = [e.attrs.get("href") for menu in launch for e in menu.iter() if e.tag == "a" and "Colab" in e.text()]
        has_twin = (ROOT / f"{name}.ipynb").is_file()
        assert buttons == ([colab_url(name)] if has_twin else []), f"{name}: Colab buttons {buttons}"
        badges = [e.attrs.get("href") for e in root.iter()
                  if e.tag == "a" and any(c.tag == "img" and c.attrs.get("src") == COLAB_BADGE for c in e.iter())]
        assert badges in ([], [colab_url(name)]), f"{name}: a Colab badge opens {badges}"
        if re.fullmatch(r"book/\d\d-[\w-]+", name):
            assert badges == [colab_url(name)], f"{name}: a chapter shows one Colab badge that opens its twin"

