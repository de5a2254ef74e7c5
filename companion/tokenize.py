"""Byte-level byte-pair encoding (BPE, 字节对编码), the tokenizer (分词器) of GPT-2, from scratch.

Text becomes tokens (词元) in three steps:

1. **Bytes.** The text is encoded as UTF-8, so every string is a sequence of
   bytes ``0 … 255`` and no character is ever unknown (a Chinese character is
   3 bytes, an emoji 4).
2. **Pre-split.** A regular expression cuts the text into pieces
   (:data:`GPT2_SPLIT_PATTERN`: words with their leading space, runs of
   digits, runs of punctuation, runs of white space); merges never cross a
   piece's boundary, so ``" dog."`` cannot become one token.
3. **Merges.** Training counts every adjacent pair of tokens inside the pieces,
   makes the most frequent pair a new token, and repeats: merge ``i`` creates
   token ``256 + i``. Encoding applies the learned merges to a new piece in
   the order they were learned (GPT-2's ``bpe``): while some adjacent pair is
   a merge, merge every occurrence, left to right, of the pair that was learned
   first.

Special tokens (e.g. ``"<|endoftext|>"``) are whole strings with ids after the
merges; they never come out of the merges and are encoded only where
:meth:`BPETokenizer.encode` is told to allow them.

**Tie-breaking in training.** The pair with the largest count is merged; among
pairs with the same count, the smallest ``(left id, right id)`` wins (ids
compare as integers: bytes by value, merged tokens by age). Counts are over
every occurrence, overlapping ones included (``"aaa"`` holds ``(a, a)`` twice),
as in GPT-2's and tiktoken's trainers.

**The pattern with Python's own** ``re``. GPT-2's pattern uses the Unicode
classes ``\\p{L}`` (letters) and ``\\p{N}`` (numbers), which the standard
library's ``re`` lacks. :func:`compile_pattern` replaces each ``\\p{..}`` by the
explicit code-point ranges of that general category, as Python's
:mod:`unicodedata` lists them, and ``\\s``/``\\S`` by the Unicode
``White_Space`` characters (Python's own ``\\s`` also counts ``\\x1c … \\x1f``,
which GPT-2's does not). The split is then the same as that of the ``regex``
module or of tiktoken's engine for every character in Python's Unicode
database; characters added to Unicode after it (Python 3.11 knows Unicode 14)
are treated as unassigned, so they may split differently.

**Strings that are not text.** A ``str`` holding a lone surrogate
(``"\\ud800"``) has no UTF-8 encoding; :meth:`BPETokenizer.encode` refuses it
with a ``ValueError`` naming its position (tiktoken instead replaces it by
U+FFFD). Every other string round-trips: ``decode(encode(s)) == s``.
"""

from __future__ import annotations

import heapq
import json
import os
import re
from collections import Counter, defaultdict
from collections.abc import Collection, Iterable, Sequence
from functools import cache
from pathlib import Path
from typing import Literal

GPT2_SPLIT_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
"""GPT-2's pre-split pattern (the ``regex``-module syntax that tiktoken also takes as ``pat_str``)."""

ENDOFTEXT = "<|endoftext|>"
"""GPT-2's end-of-text token, the default special token: it separates documents."""

_WHITE_SPACE = ((0x09, 0x0D), (0x20, 0x20), (0x85, 0x85), (0xA0, 0xA0), (0x1680, 0x1680), (0x2000, 0x200A),
                (0x2028, 0x2029), (0x202F, 0x202F), (0x205F, 0x205F), (0x3000, 0x3000))  # fmt: skip
# Unicode's White_Space property. Letters and numbers live in planes 0-3 only (14 holds format
# characters and marks, 15-16 private use), so scanning these code points finds every one.
_SCANNED = (range(0x40000), range(0xE0000, 0xE1000))
_SPECIAL = re.compile(r"\\(p\{(\w+)\}|P\{(\w+)\}|[sS])|\\.|\[|\]", re.S)
_FORMAT = "companion.tokenize.BPETokenizer"


@cache
def _category_ranges() -> dict[str, tuple[tuple[int, int], ...]]:
    """``{general category: ((first, last), ...)}`` of the code points in Python's Unicode database."""
    import unicodedata

    runs: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for span in _SCANNED:
        current, start = None, span.start
        for code in span:
            category = unicodedata.category(chr(code))
            if category != current:
                if current is not None:
                    runs[current].append((start, code - 1))
                current, start = category, code
        runs[current].append((start, span.stop - 1))  # type: ignore[index]
    return {name: tuple(spans) for name, spans in runs.items()}


def _class_body(ranges: Iterable[tuple[int, int]]) -> str:
    """The inside of a ``[...]`` character class that holds exactly ``ranges``."""
    return "".join(f"\\U{lo:08x}" if lo == hi else f"\\U{lo:08x}-\\U{hi:08x}" for lo, hi in sorted(ranges))


def _category_body(name: str) -> str:
    categories = _category_ranges()
    chosen = [c for c in categories if c == name or (len(name) == 1 and c[0] == name)]
    if not chosen:
        raise ValueError(f"unknown Unicode general category \\p{{{name}}}; expected e.g. L, Lu, N, Nd, P, M")
    return _class_body(span for c in chosen for span in categories[c])


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """Compile a ``regex``-style split pattern with Python's standard ``re``.

    ``\\p{X}`` (a general category such as ``L``, ``N``, ``Lu``) becomes the
    category's explicit code-point ranges, inside or outside a character
    class; ``\\P{X}`` (outside a class) its complement; ``\\s`` and ``\\S``
    Unicode's ``White_Space`` set and its complement. The rest is passed to
    ``re`` unchanged, so possessive quantifiers and scoped flags
    (``(?i:...)``) work as in Python 3.11+.

    Raises:
        TypeError: ``pattern`` is not a str.
        ValueError: an unknown category, ``\\P`` or ``\\S`` inside a class, or a
            pattern that ``re`` rejects.
    """
    if not isinstance(pattern, str):
        raise TypeError(f"pattern must be a str; got {type(pattern).__name__}")
    out, depth, pos = [], 0, 0
    for match in _SPECIAL.finditer(pattern):
        out.append(pattern[pos : match.start()])
        pos = match.end()
        token = match[0]
        if token == "[":
            depth += 1
        elif token == "]" and depth:
            depth -= 1
        elif match[1] is None:  # another escape: keep as is
            pass
        else:
            inside = depth > 0
            if match[2] or match[1] == "s":
                body = _category_body(match[2]) if match[2] else _class_body(_WHITE_SPACE)
                token = body if inside else f"[{body}]"
            elif inside:
                raise ValueError(f"{token} inside a character class is not supported; write the class without it")
            else:
                token = f"[^{_category_body(match[3]) if match[3] else _class_body(_WHITE_SPACE)}]"
        out.append(token)
    out.append(pattern[pos:])
    try:
        return re.compile("".join(out))
    except re.error as err:
        raise ValueError(f"the split pattern does not compile with Python's re: {err}") from err


@cache
def _compiled(pattern: str) -> re.Pattern[str]:
    return compile_pattern(pattern)


def pre_split(text: str, pattern: str = GPT2_SPLIT_PATTERN) -> list[str]:
    """The pieces that ``pattern`` cuts ``text`` into; their concatenation is ``text``.

    >>> pre_split("Hello world, it's 2024!")
    ['Hello', ' world', ',', ' it', "'s", ' 2024', '!']
    """
    if not isinstance(text, str):
        raise TypeError(f"pre_split takes a str; got {type(text).__name__}")
    return _compiled(pattern).findall(text)


def _merge(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """``ids`` with every occurrence of ``pair``, left to right and without overlap, replaced by ``new_id``."""
    out, i, n = [], 0, len(ids)
    first, second = pair
    while i < n:
        if i + 1 < n and ids[i] == first and ids[i + 1] == second:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def _learn_merges(words: Counter[bytes], n_merges: int) -> list[tuple[int, int]]:
    """Up to ``n_merges`` merges learned on pieces ``{bytes: count}`` (see the module's tie-breaking rule).

    Each distinct piece is tokenized once and weighted by its count. The pair
    counts are kept up to date: a merge revisits only the pieces that hold its
    pair (``where``), and a heap of ``(-count, pair)`` entries, checked against
    the live count when popped, finds the next pair.
    """
    pieces = [list(piece) for piece in words]
    weights = list(words.values())
    counts: dict[tuple[int, int], int] = defaultdict(int)
    where: dict[tuple[int, int], set[int]] = defaultdict(set)
    for index, (ids, weight) in enumerate(zip(pieces, weights)):
        for pair in zip(ids, ids[1:]):
            counts[pair] += weight
            where[pair].add(index)
    heap = [(-count, pair) for pair, count in counts.items()]
    heapq.heapify(heap)
    merges: list[tuple[int, int]] = []
    while len(merges) < n_merges and heap:
        negative, pair = heapq.heappop(heap)
        if counts.get(pair, 0) != -negative or negative == 0:
            continue  # a stale entry: the pair's count changed after it was pushed
        new_id = 256 + len(merges)
        merges.append(pair)
        changed: set[tuple[int, int]] = set()
        for index in where.pop(pair):  # may list pieces that lost the pair since: they are skipped
            old = pieces[index]
            new = _merge(old, pair, new_id)
            if len(new) != len(old):
                _update_counts(old, new, new_id, weights[index], index, counts, where, changed)
                pieces[index] = new
        for p in changed:
            if counts[p] > 0:
                heapq.heappush(heap, (-counts[p], p))
            else:
                del counts[p]
    return merges


def _update_counts(
    old: list[int],
    new: list[int],
    new_id: int,
    weight: int,
    index: int,
    counts: dict[tuple[int, int], int],
    where: dict[tuple[int, int], set[int]],
    changed: set[tuple[int, int]],
) -> None:
    """Move the pair counts of one piece from ``old`` to ``new`` (``old`` with a pair merged into ``new_id``).

    Only pairs next to a merge change: in ``old``, the pairs at positions
    ``p - 1, p, p + 1`` of each merged occurrence at ``p``; in ``new``, the pairs
    at ``q - 1, q`` of each new token at ``q``. The others correspond one to one.
    """
    gone, made, p = set(), set(), 0
    for q, token in enumerate(new):
        if token == new_id:
            gone.update((p - 1, p, p + 1))
            made.update((q - 1, q))
            p += 2
        else:
            p += 1
    for i in gone:
        if 0 <= i < len(old) - 1:
            key = (old[i], old[i + 1])
            counts[key] -= weight
            changed.add(key)
    for j in made:
        if 0 <= j < len(new) - 1:
            key = (new[j], new[j + 1])
            counts[key] += weight
            changed.add(key)
            where[key].add(index)


def _check_special_names(tokens: object) -> list[str]:
    if isinstance(tokens, str) or not isinstance(tokens, Iterable):
        raise TypeError(f"special tokens must be a sequence of str, e.g. ['<|endoftext|>']; got {tokens!r}")
    names = list(tokens)
    for name in names:
        if not isinstance(name, str) or not name:
            raise TypeError(f"each special token must be a non-empty str; got {name!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"special tokens must be distinct; got {names}")
    return names


def _utf8(text: str, what: str = "text") -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ValueError(
            f"{what} holds a lone surrogate {text[err.start]!r} at position {err.start}, which is not a "
            "character and has no UTF-8 encoding"
        ) from err


class BPETokenizer:
    """A byte-level BPE tokenizer: its merges, vocabulary and special tokens.

    Build one with :meth:`train`, :meth:`load` or :meth:`from_gpt2_files`.

    Attributes:
        merges: the learned pairs in training order; merge ``i`` creates id ``256 + i``.
        vocab: ``{id: bytes}`` of every token, specials included.
        special_tokens: ``{name: id}``; ids follow the merges.
        pattern: the pre-split pattern (``regex`` syntax, see :func:`compile_pattern`).

    >>> tok = BPETokenizer.train("low lower lowest " * 50, vocab_size=260)
    >>> [tok.vocab[256 + i] for i in range(3)]
    [b'lo', b'low', b' low']
    >>> tok.encode("lowly"), tok.decode(tok.encode("lowly"))
    ([257, 108, 121], 'lowly')
    """

    def __init__(
        self,
        merges: Sequence[tuple[int, int]],
        special_tokens: Sequence[str] = (ENDOFTEXT,),
        pattern: str = GPT2_SPLIT_PATTERN,
        byte_ids: Sequence[int] | None = None,
    ) -> None:
        """A tokenizer from its parts.

        Args:
            merges: ``(left id, right id)`` pairs; pair ``i`` makes id ``256 + i``
                and may only use ids below that.
            special_tokens: their names, given ids ``256 + len(merges)`` on.
            pattern: the pre-split pattern.
            byte_ids: the id of each byte value (a permutation of ``0 … 255``);
                the default is the byte's value. GPT-2's own files number
                bytes in another order, which :meth:`from_gpt2_files` passes here.
        """
        byte_ids = list(range(256)) if byte_ids is None else list(byte_ids)
        if sorted(byte_ids) != list(range(256)):
            raise ValueError("byte_ids must be a permutation of 0 … 255")
        self.pattern = pattern
        self._split = _compiled(pattern)
        self._byte_ids = byte_ids
        self.vocab: dict[int, bytes] = {i: bytes([b]) for b, i in enumerate(byte_ids)}
        self.merges: list[tuple[int, int]] = []
        for i, pair in enumerate(merges):
            if (not isinstance(pair, (tuple, list)) or len(pair) != 2
                    or not all(isinstance(x, int) and not isinstance(x, bool) and 0 <= x < 256 + i for x in pair)):
                raise ValueError(f"merge {i} must be a pair of ids below {256 + i}; got {pair!r}")
            self.merges.append((pair[0], pair[1]))
            self.vocab[256 + i] = self.vocab[pair[0]] + self.vocab[pair[1]]
        self._ranks = {pair: 256 + i for i, pair in enumerate(self.merges)}
        self.special_tokens: dict[str, int] = {}
        self._cache: dict[str, list[int]] = {}
        self.add_special_tokens(special_tokens)

    # --- building ---------------------------------------------------------------------------

    @classmethod
    def train(
        cls,
        text: str,
        vocab_size: int,
        *,
        pattern: str = GPT2_SPLIT_PATTERN,
        special_tokens: Sequence[str] = (ENDOFTEXT,),
    ) -> BPETokenizer:
        """Learn ``vocab_size - 256 - len(special_tokens)`` merges on ``text``.

        The special tokens' strings are cut out of ``text`` first (no merge
        spans them), the rest is pre-split by ``pattern`` and merged as the
        module docstring says. Training stops early when no piece has two
        tokens left, so ``len(tok)`` can be below ``vocab_size`` on a tiny text.
        GPT-2's 50,257 = 256 bytes + 50,000 merges + ``<|endoftext|>``.

        Args:
            text: the training text.
            vocab_size: the vocabulary's size, specials included, ``>= 256 + len(special_tokens)``.
            pattern: the pre-split pattern.
            special_tokens: the special tokens' names.

        Returns:
            the trained :class:`BPETokenizer`.
        """
        if not isinstance(text, str):
            raise TypeError(f"train takes a str; got {type(text).__name__}")
        names = _check_special_names(special_tokens)
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int):
            raise TypeError(f"vocab_size must be an int; got {type(vocab_size).__name__}")
        if vocab_size < 256 + len(names):
            raise ValueError(
                f"vocab_size must be at least 256 bytes + {len(names)} special tokens = {256 + len(names)}; "
                f"got {vocab_size}"
            )
        split = _compiled(pattern)
        parts = re.split("|".join(map(re.escape, names)), text) if names else [text]
        words = Counter(_utf8(piece, "the training text") for part in parts for piece in split.findall(part))
        merges = _learn_merges(words, vocab_size - 256 - len(names))
        return cls(merges, names, pattern)

    def add_special_tokens(self, tokens: Sequence[str]) -> list[int]:
        """Give each new special token the next free id; return the ids of ``tokens`` (existing ones keep theirs).

        E.g. ``tok.add_special_tokens(["<|user|>", "<|assistant|>"])`` for a chat template.
        """
        names = _check_special_names(tokens)
        for name in names:
            if name not in self.special_tokens:
                _utf8(name, "a special token")
                new_id = len(self.vocab)
                self.special_tokens[name] = new_id
                self.vocab[new_id] = name.encode("utf-8")
        return [self.special_tokens[name] for name in names]

    # --- encoding ---------------------------------------------------------------------------

    def _encode_piece(self, piece: str) -> list[int]:
        """The ids of one pre-split piece: GPT-2's merge loop on its bytes (cached per piece)."""
        cached = self._cache.get(piece)
        if cached is not None:
            return cached
        ids = [self._byte_ids[b] for b in piece.encode("utf-8")]
        ranks = self._ranks
        while len(ids) > 1:
            best = min(zip(ids, ids[1:]), key=lambda p: ranks.get(p, 1 << 62))
            if best not in ranks:
                break
            ids = _merge(ids, best, ranks[best])
        if len(self._cache) < 100_000:
            self._cache[piece] = ids
        return ids

    def encode_ordinary(self, text: str) -> list[int]:
        """The ids of ``text`` with special-token strings treated as ordinary text."""
        if not isinstance(text, str):
            raise TypeError(f"encode takes a str; got {type(text).__name__}")
        _utf8(text)
        out: list[int] = []
        for piece in self._split.findall(text):
            out += self._encode_piece(piece)
        return out

    def encode(
        self,
        text: str,
        allowed_special: Literal["all"] | Collection[str] = frozenset(),
        disallowed_special: Literal["all"] | Collection[str] = "all",
    ) -> list[int]:
        """The token ids of ``text`` (tiktoken's rules for special tokens).

        Args:
            text: any str without lone surrogates.
            allowed_special: special tokens whose strings in ``text`` become their
                ids: ``"all"`` or a set of names. The default allows none.
            disallowed_special: special tokens whose strings in ``text`` are an
                error: ``"all"`` (the default: every special token not allowed)
                or a set of names. Specials in neither set are encoded as text.

        Returns:
            ``list[int]``; ``decode`` of it gives ``text`` back.

        Raises:
            ValueError: ``text`` holds a disallowed special token or a lone surrogate.
        """
        if not isinstance(text, str):
            raise TypeError(f"encode takes a str; got {type(text).__name__}")
        allowed = self._special_set(allowed_special, "allowed_special")
        disallowed = self._special_set(disallowed_special, "disallowed_special") - allowed
        for name in disallowed:
            if name in text:
                raise ValueError(
                    f"text contains the special token {name!r}; pass allowed_special={{{name!r}}} (or 'all') to "
                    "encode it as its id, or disallowed_special=() to encode it as ordinary text"
                )
        if not allowed:
            return self.encode_ordinary(text)
        out: list[int] = []
        pos = 0
        splitter = re.compile("|".join(re.escape(n) for n in sorted(allowed, key=len, reverse=True)))
        for match in splitter.finditer(text):
            out += self.encode_ordinary(text[pos : match.start()])
            out.append(self.special_tokens[match[0]])
            pos = match.end()
        return out + self.encode_ordinary(text[pos:])

    def _special_set(self, value: object, what: str) -> set[str]:
        if value == "all":
            return set(self.special_tokens)
        if isinstance(value, str) or not isinstance(value, Collection):
            raise TypeError(f"{what} must be 'all' or a collection of special-token names; got {value!r}")
        unknown = set(value) - set(self.special_tokens)
        if unknown:
            raise ValueError(f"{what} names unknown special tokens {sorted(unknown)}; known: {sorted(self.special_tokens)}")
        return set(value)

    # --- decoding ---------------------------------------------------------------------------

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """The bytes of the tokens ``ids`` (a list of ints or a 1-D integer tensor), concatenated."""
        if hasattr(ids, "tolist"):  # a torch tensor or a NumPy array
            if getattr(ids, "ndim", 1) != 1:
                raise ValueError(f"decode takes a 1-D sequence of ids; got shape {tuple(ids.shape)}")  # type: ignore[attr-defined]
            ids = ids.tolist()  # type: ignore[union-attr]
        if isinstance(ids, (str, bytes)) or not isinstance(ids, Iterable):
            raise TypeError(f"decode takes a sequence of int ids; got {type(ids).__name__}")
        parts = []
        for position, i in enumerate(ids):
            if isinstance(i, bool) or not isinstance(i, int):
                raise TypeError(f"decode takes int ids; got {i!r} at position {position}")
            token = self.vocab.get(i)
            if token is None:
                raise ValueError(f"id {i} at position {position} is not in the vocabulary 0 … {len(self) - 1}")
            parts.append(token)
        return b"".join(parts)

    def decode(self, ids: Iterable[int]) -> str:
        """The text of the tokens ``ids``; bytes that are not valid UTF-8 (a character cut between tokens) become U+FFFD."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    # --- views and files --------------------------------------------------------------------

    def __len__(self) -> int:
        """The vocabulary's size: 256 bytes + the merges + the special tokens."""
        return len(self.vocab)

    def __repr__(self) -> str:
        return f"BPETokenizer({len(self)} tokens: 256 bytes, {len(self.merges)} merges, specials {list(self.special_tokens)})"

    def mergeable_ranks(self) -> dict[bytes, int]:
        """``{token bytes: id}`` of the bytes and merges: what ``tiktoken.Encoding(mergeable_ranks=...)`` takes.

        Raises:
            ValueError: two merges made the same bytes (then no rank table can describe the tokenizer).
        """
        ranks = {self.vocab[i]: i for i in range(256 + len(self.merges))}
        if len(ranks) != 256 + len(self.merges):
            raise ValueError("two merges make the same bytes; the tokenizer has no equivalent rank table")
        return ranks

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the tokenizer to a JSON file (pattern, byte ids, merges, special tokens); :meth:`load` reads it."""
        state = {
            "format": _FORMAT,
            "version": 1,
            "pattern": self.pattern,
            "byte_ids": self._byte_ids,
            "merges": [list(pair) for pair in self.merges],
            "special_tokens": list(self.special_tokens),
        }
        Path(path).write_text(json.dumps(state, ensure_ascii=False), encoding="utf-8")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> BPETokenizer:
        """A tokenizer written by :meth:`save`."""
        try:
            state = json.loads(Path(path).read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not a tokenizer file (invalid JSON: {err})") from err
        if not isinstance(state, dict) or state.get("format") != _FORMAT or state.get("version") != 1:
            raise ValueError(f"{path} is not a file written by BPETokenizer.save (format {_FORMAT}, version 1)")
        merges = [tuple(pair) for pair in state["merges"]]
        return cls(merges, state["special_tokens"], state["pattern"], state["byte_ids"])  # type: ignore[arg-type]

    @classmethod
    def from_gpt2_files(
        cls, vocab_json: str | os.PathLike[str], merges_txt: str | os.PathLike[str], pattern: str = GPT2_SPLIT_PATTERN
    ) -> BPETokenizer:
        """A tokenizer from Hugging Face's GPT-2 files: ``vocab.json`` (``{token: id}``) and ``merges.txt``.

        In these files a token's bytes are written as printable characters
        (:func:`gpt2_byte_chars`: byte ``0x20``, a space, is ``"Ġ"``); ``merges.txt``
        lists one pair per line, ``"Ġ t"``, in training order, after a
        ``#version`` line. The files of the real GPT-2 give its 50,257 tokens
        (256 bytes, 50,000 merges, ``<|endoftext|>``). Entries of ``vocab.json``
        beyond the bytes and merges are special tokens, in id order.

        Raises:
            ValueError: the two files do not describe a byte-level BPE whose merge
                ``i`` has id ``256 + i`` (the message says which entry).
        """
        vocab = json.loads(Path(vocab_json).read_text(encoding="utf-8"))
        lines = Path(merges_txt).read_text(encoding="utf-8").split("\n")
        chars = gpt2_byte_chars()
        byte_ids = []
        for b in range(256):
            if chars[b] not in vocab:
                raise ValueError(f"{vocab_json} has no entry for byte {b} ({chars[b]!r})")
            byte_ids.append(vocab[chars[b]])
        if sorted(byte_ids) != list(range(256)):
            raise ValueError(f"{vocab_json}: the 256 byte tokens must have ids 0 … 255")
        merges = []
        for number, line in enumerate(lines, start=1):
            if not line or line.startswith("#version"):
                continue
            left, sep, right = line.partition(" ")
            if not sep or left not in vocab or right not in vocab or left + right not in vocab:
                raise ValueError(f"{merges_txt}, line {number}: {line!r} is not a merge of two tokens of {vocab_json}")
            if vocab[left + right] != 256 + len(merges):
                raise ValueError(
                    f"{merges_txt}, line {number}: merge {len(merges)} ({line!r}) has id {vocab[left + right]} "
                    f"in {vocab_json}; expected {256 + len(merges)}"
                )
            merges.append((vocab[left], vocab[right]))
        first_special = 256 + len(merges)
        specials = sorted((i, name) for name, i in vocab.items() if i >= first_special)
        if [i for i, _ in specials] != list(range(first_special, first_special + len(specials))):
            raise ValueError(f"{vocab_json}: ids beyond the merges must run on from {first_special} without gaps")
        return cls(merges, [name for _, name in specials], pattern, byte_ids)

    def save_gpt2_files(self, folder: str | os.PathLike[str]) -> tuple[Path, Path]:
        """Write ``vocab.json`` and ``merges.txt`` in Hugging Face's GPT-2 layout into ``folder``; return their paths.

        ``transformers.GPT2Tokenizer(vocab_file, merges_file)`` and :meth:`from_gpt2_files` read them.
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        chars = gpt2_byte_chars()

        def printable(token: bytes) -> str:
            return "".join(chars[b] for b in token)

        vocab = {printable(self.vocab[i]): i for i in range(256 + len(self.merges))}
        vocab |= self.special_tokens
        merges = ["#version: 0.2"] + [f"{printable(self.vocab[a])} {printable(self.vocab[b])}" for a, b in self.merges]
        vocab_path, merges_path = folder / "vocab.json", folder / "merges.txt"
        vocab_path.write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
        merges_path.write_text("\n".join(merges) + "\n", encoding="utf-8")
        return vocab_path, merges_path


@cache
def gpt2_byte_chars() -> tuple[str, ...]:
    """GPT-2's printable stand-in for each byte (``bytes_to_unicode``): ``chars[b]`` for byte ``b``.

    Printable Latin-1 bytes stand for themselves; the other 68 (controls,
    space, ``0x7f … 0xa0``, ``0xad``) map to ``chr(256 + k)`` in order, so the
    space ``0x20`` is ``"Ġ"`` and the newline ``0x0a`` is ``"Ċ"``.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return tuple(chars[b] for b in range(256))
