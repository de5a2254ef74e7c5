"""The back matter: the glossary (``book/glossary.md``) and the errata page (``book/errata.md``).

A book build reports a link to a missing section or a ``{term}`` missing from the glossary as a warning,
after minutes of executing chapters; these tests name the broken link or term in seconds, without building.
They read the MyST sources the way MyST does: headings give anchors by MyST's slug rule
(``myst_heading_anchors``), and ``{term}`` looks terms up case-insensitively, as Sphinx does.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import pytest
import yaml
from markdown_it import MarkdownIt
from markdown_it.token import Token
from mdit_py_plugins.dollarmath import dollarmath_plugin
from mdit_py_plugins.front_matter import front_matter_plugin

from book_files import toc_files

ROOT = Path(__file__).resolve().parent.parent
BOOK = ROOT / "book"
GLOSSARY = BOOK / "glossary.md"
ERRATA = BOOK / "errata.md"
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
CHAPTERS = sorted(BOOK.glob("[0-9][0-9]-*.md"))

HAN = re.compile(r"[\u4e00-\u9fff]")
LINK = re.compile(r"\[([^\]]*)\]\(([^)\s]+)\)")
TERM_ROLE = re.compile(r"\{term\}`([^`]+)`")
# The block structure of a MyST page as MyST's own parser sees it: front matter, fences, headings, $math$.
MARKDOWN = MarkdownIt("commonmark").use(front_matter_plugin).use(dollarmath_plugin)


def slugify(title: str) -> str:
    """The anchor MyST gives a heading whose plain text is ``title`` (GitHub's rule).

    Lower-case, every space a hyphen, and every character that is not a word character, a CJK
    ideograph or a hyphen removed: "The chain rule, by hand" → "the-chain-rule-by-hand".
    """
    return re.sub(r"[^\w\u4e00-\u9fff\- ]", "", title.lower().replace(" ", "-"))


def plain_text(inline: Token) -> str:
    """The text MyST slugifies for a heading: its text and inline code, without markup or math."""
    return "".join(child.content for child in inline.children or [] if child.type in ("text", "code_inline"))


@functools.lru_cache(maxsize=None)
def anchors(page: Path) -> frozenset[str]:
    """The section anchors of ``page``: its headings down to level ``myst_heading_anchors``.

    Headings inside fenced blocks (code cells, directives) are no headings. A slug that is already
    taken on the page gets ``-1`` appended (then ``-2`` …), as in MyST.
    """
    depth = CONFIG["sphinx"]["config"]["myst_heading_anchors"]
    tokens = MARKDOWN.parse(page.read_text(encoding="utf-8"))
    slugs: set[str] = set()
    for token, inline in zip(tokens, tokens[1:]):
        if token.type != "heading_open" or int(token.tag[1:]) > depth:
            continue
        slug, i = slugify(plain_text(inline)), 1
        while slug in slugs:
            slug = f"{slug}-{i}"
            i += 1
        slugs.add(slug)
    return frozenset(slugs)


def code_and_math(text: str) -> str:
    """Everything of a page that is code or math: code cells and code blocks, $…$ and $$…$$.

    Directives such as admonitions hold prose and are left out.
    """
    parts = []
    for token in MARKDOWN.parse(text):
        directive = token.info.startswith("{") and not token.info.startswith("{code-cell}")
        if token.type == "fence" and not directive:
            parts.append(token.content)
        elif token.type in ("code_block", "math_block"):
            parts.append(token.content)
        elif token.type == "inline":
            parts += [child.content for child in token.children or [] if child.type == "math_inline"]
    return "\n".join(parts)


IN_TOC = set(toc_files())


def glossary_entries() -> list[tuple[list[str], str]]:
    """The entries of the ``{glossary}`` directive: (terms, definition), in the order written."""
    text = GLOSSARY.read_text(encoding="utf-8")
    block = re.search(r"^```\{glossary\}\n(.*?)^```$", text, re.S | re.M)
    assert block, "book/glossary.md must hold a ```{glossary} directive"
    entries: list[tuple[list[str], str]] = []
    terms: list[str] = []
    definition: list[str] = []
    for line in block.group(1).split("\n") + [""]:
        if line.startswith(":"):  # an option such as :sorted:
            continue
        if not line.strip():
            if terms:
                entries.append((terms, " ".join(definition)))
            terms, definition = [], []
        elif line[0].isspace():
            definition.append(line.strip())
        else:
            assert not definition, f"term {line!r} follows a definition without a blank line"
            terms.append(line.strip())
    return entries


ENTRIES = glossary_entries()
TERMS = {term.lower() for terms, _ in ENTRIES for term in terms}


def term_target(role_text: str) -> str:
    """The glossary term a ``{term}`` role points at: the part in ``<…>``, or the whole text."""
    explicit = re.fullmatch(r"(.*?)\s*<([^<>]+)>", role_text, re.S)
    return (explicit.group(2) if explicit else role_text).strip()


# The slug rule


@pytest.mark.parametrize(
    ("title", "slug"),
    [
        ("The chain rule, by hand", "the-chain-rule-by-hand"),
        ('What "a model stores its knowledge in its parameters" means',
         "what-a-model-stores-its-knowledge-in-its-parameters-means"),
        ("Why momentum 0.9 swings on the bowl", "why-momentum-09-swings-on-the-bowl"),
        ("The articles' two CNNs, counted", "the-articles-two-cnns-counted"),
        ("Targets: one-hot vectors or class indices?", "targets-one-hot-vectors-or-class-indices"),
        ("King − man + woman", "king--man--woman"),
        (r"Why divide by $\sqrt{d_k}$", "why-divide-by-"),
        ("The `batch_first` trap", "the-batch_first-trap"),
        ("术语 表", "术语-表"),
    ],
)
def test_slugify_follows_mysts_rule(title, slug):
    assert slugify(plain_text(MARKDOWN.parse(f"## {title}")[1])) == slug


def test_slugify_agrees_with_myst_parser():
    base = pytest.importorskip("myst_parser.mdit_to_docutils.base")
    titles = [
        "The chain rule, by hand",
        "Compute: about 6 FLOPs per parameter and token",
        "Why momentum 0.9 swings on the bowl",
        "King − man + woman",
        "Epochs: training and validation loss",
        "Transfer learning: features learned once, used again",
    ]
    for title in titles:
        assert slugify(title) == base.default_slugify(title), title


def test_a_repeated_heading_gets_a_numbered_anchor(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "---\ntitle: x\n---\n# Title\n\n## Notes\n\n```python\n# not a heading\n```\n\n## Notes\n\n#### Deep\n"
    )
    assert anchors(page) == {"title", "notes", "notes-1"}


def test_code_and_math_are_told_from_prose():
    page = (
        "Prose with {term}`a`.\n\n```{code-cell} ipython3\nx = 1  # {term}`b`\n```\n\n"
        "```{admonition} Note\nProse in a box, {term}`c`.\n```\n\nMath $y = {term}`d`$ and\n\n$$\n{term}`e`\n$$\n"
    )
    assert TERM_ROLE.findall(code_and_math(page)) == ["b", "d", "e"]


def test_the_anchors_the_pages_link_to_are_switched_on():
    # jupyter-book 1.x does not pass `parse: myst_heading_anchors` on to Sphinx: it must sit in sphinx.config
    assert CONFIG["sphinx"]["config"].get("myst_heading_anchors", 0) >= 3


# Links into the book


@pytest.mark.parametrize("page", [GLOSSARY, ERRATA], ids=lambda p: p.stem)
def test_every_link_into_the_book_resolves(page):
    assert f"book/{page.stem}" in IN_TOC, f"_toc.yml must list book/{page.stem}"
    internal = [
        (text, target)
        for text, target in LINK.findall(page.read_text(encoding="utf-8"))
        if not re.match(r"[a-z]+:", target)
    ]
    assert len(internal) >= 20, f"{page.name} links to only {len(internal)} places in the book"
    for text, target in internal:
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve()
        assert linked.is_file(), f"[{text}]({target}): no file {path}"
        docname = linked.relative_to(ROOT).with_suffix("").as_posix()
        assert docname in IN_TOC, f"[{text}]({target}): {docname} is not in _toc.yml"
        if anchor:
            assert anchor in anchors(linked), f"[{text}]({target}): no heading of {path} has the anchor #{anchor}"


# The glossary


def test_the_glossary_is_a_plain_page_not_a_notebook():
    assert not GLOSSARY.read_text(encoding="utf-8").startswith("---"), "no jupytext header: it has no code"


def test_the_glossary_has_the_terms_of_the_course():
    assert 40 <= len(ENTRIES) <= 130
    for needed in ("neuron", "backpropagation", "gradient descent", "overfitting", "convolution", "attention",
                   "transformer", "embedding", "softmax", "cross-entropy", "adam", "dropout", "lstm"):
        assert needed in TERMS, f"the glossary has no entry {needed!r}"


def test_every_glossary_term_is_unique():
    written = [term.lower() for terms, _ in ENTRIES for term in terms]
    assert len(written) == len(set(written)), sorted({t for t in written if written.count(t) > 1})


@pytest.mark.parametrize("entry", ENTRIES, ids=[terms[0] for terms, _ in ENTRIES])
def test_every_glossary_entry_has_english_and_chinese_names_a_definition_and_a_chapter(entry):
    terms, definition = entry
    assert not HAN.search(terms[0]), f"{terms}: the first name is the English one"
    assert any(HAN.search(term) for term in terms), f"{terms[0]}: no Chinese name"
    assert len(definition.split()) >= 12, f"{terms[0]}: the definition is too short"
    assert re.search(r"\]\(\d\d-[\w-]+\.md#[\w-]+\)", definition), f"{terms[0]}: no link to a chapter section"


# The chapters' {term} roles


@pytest.mark.parametrize("source", CHAPTERS, ids=[c.stem for c in CHAPTERS])
def test_every_term_a_chapter_uses_is_in_the_glossary(source):
    text = source.read_text(encoding="utf-8")
    for role in TERM_ROLE.findall(text):
        assert term_target(role).lower() in TERMS, f"{source.name}: {{term}}`{role}` names no glossary entry"
    assert not TERM_ROLE.search(code_and_math(text)), f"{source.name}: a {{term}} role inside code or math"


def test_every_term_the_back_matter_uses_is_in_the_glossary():
    for page in (GLOSSARY, ERRATA):
        for role in TERM_ROLE.findall(page.read_text(encoding="utf-8")):
            assert term_target(role).lower() in TERMS, f"{page.name}: {{term}}`{role}` names no glossary entry"


def test_chapters_and_glossary_give_the_same_chinese_names():
    chinese = {term.lower(): {t for t in terms if HAN.search(t)} for terms, _ in ENTRIES for term in terms}
    uses = 0
    for source in CHAPTERS:
        for role, gloss in re.findall(r"\{term\}`([^`]+)`\**\s*\(([^)]*)\)", source.read_text(encoding="utf-8")):
            names = [part.strip() for part in gloss.split(",") if HAN.search(part)]
            if names:
                uses += 1
                target = term_target(role)
                assert names[0] in chinese[target.lower()], f"{source.name}: {target} ({names[0]}) in the glossary?"
    assert uses >= 50, f"only {uses} terms link to the glossary where the chapters name them in Chinese"


# The errata page


def errata_sections() -> dict[str, str]:
    """The entries of the errata page: each ``###`` heading with the text under it."""
    parts = re.split(r"^### (.+)$", ERRATA.read_text(encoding="utf-8"), flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))


SECTIONS = errata_sections()


@pytest.mark.parametrize("heading", list(SECTIONS))
def test_every_erratum_states_the_claim_the_correction_and_where_it_runs(heading):
    body = SECTIONS[heading]
    for part in ("**As commonly stated.**", "**What is right.**", "**Where it runs.**"):
        assert part in body, f"{heading}: missing {part}"
    where = body.split("**Where it runs.**")[1]
    assert re.search(r"\]\(\d\d-[\w-]+\.md#[\w-]+\)", where), f"{heading}: no link to a chapter section"
    sources = re.findall(r"^\*\*Source\.\*\* (.+)$", body, re.M)
    assert sources in (["From the source articles."], ["A common misconception."]), (
        f"{heading}: one line **Source.** saying 'From the source articles.' or 'A common misconception.'"
    )


# Each item the errata page must cover: words that its entry must contain, and the chapter it links to.
REQUIRED = {
    "GPT-3 counted": (["1.5亿", "174.6 billion", "1,164"], "10-scale.md"),
    "BERT counted": (["3亿", "109.5 million", "335.1 million"], "10-scale.md"),
    "the Adam update": (["outside the root", "square root", "1 - \\beta_1^t", "counted from 0"], "05-optimizers.md"),
    "Adam's bias correction": (["without the hats", "3.16"], "05-optimizers.md"),
    "convolution is cross-correlation": (["cross-correlation", "flip"], "07-cnn.md"),
    "backward pass versus update": (["backward pass computes the gradient", "update"], "03-backprop.md"),
    "binary cross-entropy": (["0 or 1", "probability", "\\log 0"], "04-mnist.md"),
    "CNNs and RNNs do not solve overfitting": (["solve overfitting", "RNN"], "06-overfitting.md"),
    "RNNs and long-range dependencies": (["long-range dependencies", "LSTM", "GRU", "vanish"], "08-rnn.md"),
    "training is not deterministic": (["deterministic", "seed"], "10-scale.md"),
    "a module that does not exist": (["tensorflow.models.transformer", "ModuleNotFoundError"], "09-transformer.md"),
    "integer labels": (["categorical_crossentropy", "sparse_categorical_crossentropy", "one-hot"], "07-cnn.md"),
    "the MLP is not single-layer": (["single-layer networks such as the MLP", "perceptron", "XOR"],
                                    "01-neurons.md"),
    "a doubled softmax": (["softmax twice", "1.46"], "04-mnist.md"),
    "the article's vectors, quoted as they are": (["[0.8, 0.5, \\dots, 0.2]", "rotation"], "09-transformer.md"),
    "invented keyword arguments": (["keyword arguments", "TypeError"], "09-transformer.md"),
    "deep networks before 2006": (["2006", "backpropagation"], "01-neurons.md"),
    "RMSprop has no momentum": (["RMSprop is a momentum-based optimizer", "squared"], "05-optimizers.md"),
    "no 80 % of image recognition": (["80 %", "test set"], "07-cnn.md"),
    "transfer is the usual start": (["Transferring a model is hard", "fine-tune"], "10-scale.md"),
    "bf16 activations are measured": (["activations", "bf16", "16 bytes"], "10-scale.md"),
    "tokens are subwords, not words": (["One token is one word", "subwords"], "11-llm.md"),
    "a Chinese character's tokens depend on the tokenizer": (["Chinese character", "UTF-8", "tokenizer"],
                                                             "11-llm.md"),
    "temperature 0 is greedy, not a division": (["Temperature 0", "greedy", "nan"], "11-llm.md"),
    "losses compare per character across tokenizers": (["bits per character", "tokenizer"], "11-llm.md"),
    "references that do not exist": (["Radford", "Hochreiter", "Vinyals", "Show, Attend and Tell"], "09-transformer.md"),
}


@pytest.mark.parametrize("item", list(REQUIRED))
def test_the_errata_page_covers(item):
    words, chapter = REQUIRED[item]
    covering = [h for h, body in SECTIONS.items() if all(w in " ".join(f"{h} {body}".split()) for w in words)]
    assert covering, f"no entry of book/errata.md contains all of {words}"
    assert any(f"]({chapter}#" in SECTIONS[h] for h in covering), f"the entry on {item} must link into {chapter}"
