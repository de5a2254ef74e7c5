"""companion.tokenize: byte-level BPE against its oracles.

- the pre-split equals the ``regex`` module's on GPT-2's pattern;
- the encoder equals tiktoken's, built from the same ranks, token for token;
- the trainer equals a brute-force trainer with the same tie-breaking rule, and
  tiktoken's educational trainer up to the first tie: that trainer takes, among
  pairs of equal count, the one it met first in the text (the order of a
  ``Counter``), a rule that an incremental trainer cannot follow cheaply; so
  the two agree until a step where several pairs share the largest count, and
  the test checks that the first difference is at such a step;
- files in GPT-2's layout give the same tokens in ``transformers``' GPT2Tokenizer.
"""

from __future__ import annotations

import subprocess
import sys
import unicodedata
from collections import Counter
from pathlib import Path

import pytest
import regex
import tiktoken
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tiktoken import _educational

from bpe_reference import merge_pair
from companion import data
from companion.tokenize import ENDOFTEXT, GPT2_SPLIT_PATTERN, BPETokenizer, compile_pattern, gpt2_byte_chars, pre_split

ROOT = Path(__file__).resolve().parent.parent
# Characters Python's Unicode database knows (tiktoken's and regex's may be newer; see the module docstring).
KNOWN = st.characters(exclude_categories=("Cs", "Cn"))
ENGLISH = st.text(st.sampled_from("abcdefghij ABC,.'!?\n\t 0123 the and  "), max_size=80)
CHINESE = st.text(st.sampled_from("床前明月光，疑是地上霜。舉頭望山低思故鄉\n 的一不人"), max_size=60)
ANY_TEXT = st.one_of(ENGLISH, CHINESE, st.text(KNOWN, max_size=60), st.text(max_size=40))
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def shakespeare() -> str:
    return data.tiny_shakespeare()


@pytest.fixture(scope="module")
def tang_lines() -> list[str]:
    return [line for poem in data.tang_poems()[:4000] for line in poem.lines]


@pytest.fixture(scope="module")
def english_tok(shakespeare) -> BPETokenizer:
    return BPETokenizer.train(shakespeare, 2000)


@pytest.fixture(scope="module")
def mixed_tok(shakespeare, tang_lines) -> BPETokenizer:
    return BPETokenizer.train(shakespeare[:200_000] + "\n".join(tang_lines[:6000]), 1200)


def tiktoken_of(tok: BPETokenizer) -> tiktoken.Encoding:
    return tiktoken.Encoding(
        name="course-bpe", pat_str=tok.pattern, mergeable_ranks=tok.mergeable_ranks(),
        special_tokens=tok.special_tokens,
    )  # fmt: skip


# --- the pre-split -----------------------------------------------------------------------------


@SETTINGS
@given(text=st.one_of(ENGLISH, CHINESE, st.text(KNOWN, max_size=60)))
def test_pre_split_equals_the_regex_module(text):
    assert pre_split(text) == regex.findall(GPT2_SPLIT_PATTERN, text)


def test_pre_split_of_known_cases():
    assert pre_split("Hello world, it's 2024!") == ["Hello", " world", ",", " it", "'s", " 2024", "!"]
    assert pre_split("  two  spaces\n\nend ") == [" ", " two", " ", " spaces", "\n", "\n", "end", " "]
    assert pre_split("床前明月光，疑是地上霜。") == ["床前明月光", "，", "疑是地上霜", "。"]
    # Python's own \s counts U+001C … U+001F as space; Unicode's White_Space (GPT-2's \s) does not
    assert pre_split("a\x1cb") == regex.findall(GPT2_SPLIT_PATTERN, "a\x1cb") == ["a", "\x1c", "b"]
    assert "".join(pre_split("e\u0301 ²³ Ⅻ 五")) == "e\u0301 ²³ Ⅻ 五"


def test_compile_pattern_handles_categories_and_rejects_what_it_cannot():
    assert compile_pattern(r"\p{Lu}+").findall("ABcDÉ") == ["AB", "DÉ"]
    assert compile_pattern(r"\P{L}+").findall("ab12cd!") == ["12", "!"]
    with pytest.raises(ValueError, match=r"unknown Unicode general category \\p\{Xx\}"):
        compile_pattern(r"\p{Xx}")
    with pytest.raises(ValueError, match="inside a character class"):
        compile_pattern(r"[\S]")
    with pytest.raises(TypeError, match="pattern must be a str"):
        compile_pattern(b"x")


# --- the encoder against tiktoken ---------------------------------------------------------------


@SETTINGS
@given(text=ANY_TEXT)
def test_encoder_equals_tiktoken_on_random_text(mixed_tok, text):
    assert mixed_tok.encode(text) == tiktoken_of(mixed_tok).encode(text)


def test_encoder_equals_tiktoken_on_real_lines(english_tok, mixed_tok, shakespeare, tang_lines):
    lines = shakespeare.split("\n")[::7] + tang_lines[::5]
    for tok in (english_tok, mixed_tok):
        reference = tiktoken_of(tok)
        for line in lines:
            assert tok.encode(line) == reference.encode(line), line
        assert tok.encode(shakespeare[:50_000]) == reference.encode(shakespeare[:50_000])


@SETTINGS
@given(text=st.text(max_size=80))
def test_decode_inverts_encode_for_every_string(mixed_tok, text):
    ids = mixed_tok.encode(text)
    assert mixed_tok.decode(ids) == text and mixed_tok.decode_bytes(ids) == text.encode("utf-8")


def test_round_trip_of_hard_cases(english_tok):
    for text in ["", "\x00\x01\x7f", "e\u0301\u0301", "👩‍👩‍👧 🇨🇳", "床前明月光", "\r\n\t\u3000", "a" * 5000]:
        assert english_tok.decode(english_tok.encode(text)) == text


def test_lone_surrogates_are_refused_by_position(english_tok):
    with pytest.raises(ValueError, match=r"lone surrogate '\\ud800' at position 2"):
        english_tok.encode("ab\ud800c")


def test_a_cut_character_decodes_to_the_replacement_character(english_tok):
    ids = english_tok.encode("霜")  # 3 bytes, no Chinese merges in a Shakespeare tokenizer
    assert len(ids) == 3 and english_tok.decode(ids[:2]) == "\ufffd" and english_tok.decode_bytes(ids[:2]) == "霜".encode()[:2]


# --- special tokens --------------------------------------------------------------------------


def test_special_tokens_follow_tiktoken_rules(english_tok):
    eot = english_tok.special_tokens[ENDOFTEXT]
    assert eot == 2000 - 1 == len(english_tok) - 1
    text = f"To be{ENDOFTEXT}or not"
    ids = english_tok.encode(text, allowed_special="all")
    assert ids == tiktoken_of(english_tok).encode(text, allowed_special="all") and ids.count(eot) == 1
    assert english_tok.decode(ids) == text
    with pytest.raises(ValueError, match="text contains the special token"):
        english_tok.encode(text)
    as_text = english_tok.encode(text, disallowed_special=())
    assert eot not in as_text and english_tok.decode(as_text) == text


def test_added_special_tokens_get_the_next_ids(shakespeare):
    tok = BPETokenizer.train(shakespeare[:20_000], 300)
    assert tok.add_special_tokens(["<|user|>", "<|assistant|>", ENDOFTEXT]) == [300, 301, 299]
    assert len(tok) == 302 and tok.vocab[300] == b"<|user|>"
    ids = tok.encode("<|user|>hi<|assistant|>", allowed_special={"<|user|>", "<|assistant|>"})
    assert ids[0] == 300 and ids[-1] == 301 and tok.decode(ids) == "<|user|>hi<|assistant|>"
    with pytest.raises(ValueError, match="unknown special tokens"):
        tok.encode("x", allowed_special={"<|nope|>"})


def test_special_strings_are_cut_out_before_training():
    tok = BPETokenizer.train(f"ab{ENDOFTEXT}" * 100, 270)
    merged = [tok.vocab[256 + i] for i in range(len(tok.merges))]
    assert merged == [b"ab"] and b"<|" not in merged  # training stops: nothing left to merge


# --- the trainer ------------------------------------------------------------------------------


def brute_force_merges(text: str, n: int) -> list[tuple[int, int]]:
    """Recount every pair before each merge; take the largest count, then the smallest (left, right)."""
    words = [list(piece.encode("utf-8")) for piece in regex.findall(GPT2_SPLIT_PATTERN, text)]
    merges = []
    for k in range(n):
        counts = Counter(pair for w in words for pair in zip(w, w[1:]))
        if not counts:
            break
        best = min(counts, key=lambda p: (-counts[p], p))
        merges.append(best)
        words = [merge_pair(w, best, 256 + k) for w in words]
    return merges


@settings(max_examples=60, deadline=None)
@given(text=st.one_of(ENGLISH, CHINESE, st.text(KNOWN, max_size=50)), n=st.integers(1, 40))
def test_trainer_equals_the_brute_force_trainer(text, n):
    tok = BPETokenizer.train(text, 256 + n, special_tokens=())
    assert tok.merges == brute_force_merges(text, n)


def pair_counts(text: str, merges: list[tuple[int, int]], vocab: dict[int, bytes]) -> Counter[bytes]:
    """After applying ``merges``: the largest count of a pair, per merged bytes."""
    words = [list(piece.encode("utf-8")) for piece in regex.findall(GPT2_SPLIT_PATTERN, text)]
    for k, pair in enumerate(merges):
        words = [merge_pair(w, pair, 256 + k) for w in words]
    counts = Counter(pair for w in words for pair in zip(w, w[1:]))
    by_bytes: Counter[bytes] = Counter()
    for (a, b), count in counts.items():
        key = vocab[a] + vocab[b]
        by_bytes[key] = max(by_bytes[key], count)
    return by_bytes


@pytest.mark.parametrize(("source", "agree"), [("shakespeare", 10), ("tang", 0)])
def test_trainer_equals_tiktoken_educational_until_a_tie(source, agree, shakespeare, tang_lines):
    """In the poems every line holds one '，' and one '。', so their bytes tie from the first merge."""
    text = shakespeare[:6_000] if source == "shakespeare" else "\n".join(tang_lines[:150])
    n = 80
    tok = BPETokenizer.train(text, 256 + n, special_tokens=())
    ranks = _educational.bpe_train(text, 256 + n, GPT2_SPLIT_PATTERN, visualise=None)
    theirs = sorted((rank, token) for token, rank in ranks.items() if rank >= 256)
    ours = [tok.vocab[256 + i] for i in range(n)]
    diverge = next((k for k, (_, token) in enumerate(theirs) if token != ours[k]), None)
    assert diverge is None or diverge >= agree
    if diverge is not None:
        counts = pair_counts(text, tok.merges[:diverge], tok.vocab)
        top = max(counts.values())
        assert counts[ours[diverge]] == counts[theirs[diverge][1]] == top  # a tie: both took a most frequent pair


def test_training_shakespeare_is_incremental_and_sane(english_tok):
    assert len(english_tok) == 2000 and len(english_tok.merges) == 2000 - 256 - 1
    assert english_tok.vocab[256] == b" t" and english_tok.decode([256 + 11]) == " the"
    counts = [len(english_tok.vocab[256 + i]) for i in range(len(english_tok.merges))]
    assert max(counts) >= 8  # long words become single tokens


# --- files ------------------------------------------------------------------------------------


def test_save_and_load_round_trip(mixed_tok, tmp_path):
    mixed_tok.save(tmp_path / "tok.json")
    again = BPETokenizer.load(tmp_path / "tok.json")
    assert again.merges == mixed_tok.merges and again.vocab == mixed_tok.vocab
    assert again.special_tokens == mixed_tok.special_tokens and again.pattern == mixed_tok.pattern
    (tmp_path / "bad.json").write_text('{"format": "something else"}')
    with pytest.raises(ValueError, match="not a file written by BPETokenizer.save"):
        BPETokenizer.load(tmp_path / "bad.json")


def gpt2_tokenizer(folder: Path):
    from transformers import GPT2Tokenizer

    return GPT2Tokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))  # (vocab, merges) files


def test_gpt2_files_give_the_same_tokens_in_transformers(mixed_tok, tmp_path, shakespeare, tang_lines, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    mixed_tok.save_gpt2_files(tmp_path)
    loaded = BPETokenizer.from_gpt2_files(tmp_path / "vocab.json", tmp_path / "merges.txt")
    assert loaded.merges == mixed_tok.merges and loaded.vocab == mixed_tok.vocab
    assert loaded.special_tokens == mixed_tok.special_tokens
    hf = gpt2_tokenizer(tmp_path)
    for line in shakespeare.split("\n")[:400:3] + tang_lines[:300:3] + ["a  b\n\n c 😀 e\u0301"]:
        assert hf.encode(line) == loaded.encode(line) == mixed_tok.encode(line), line


def test_gpt2_files_with_gpt2_byte_order(mixed_tok, tmp_path):
    """GPT-2's own vocab.json numbers bytes in the order of its printable stand-ins, '!' first."""
    import json

    mixed_tok.save_gpt2_files(tmp_path)
    chars = gpt2_byte_chars()
    order = sorted(range(256), key=lambda b: ord(chars[b]))  # byte order[k] has id k
    new_id = {b: k for k, b in enumerate(order)} | {i: i for i in range(256, len(mixed_tok))}
    vocab = json.loads((tmp_path / "vocab.json").read_text(encoding="utf-8"))
    (tmp_path / "vocab.json").write_text(json.dumps({t: new_id[i] for t, i in vocab.items()}), encoding="utf-8")
    loaded = BPETokenizer.from_gpt2_files(tmp_path / "vocab.json", tmp_path / "merges.txt")
    assert loaded.vocab[0] == b"!" and loaded.vocab[188] == b"\x00"
    hf = gpt2_tokenizer(tmp_path)
    for text in ["To be, or not to be", "床前明月光，疑是地上霜。", "\x00\n\t~"]:
        expected = [new_id[i] for i in mixed_tok.encode(text)]
        assert loaded.encode(text) == hf.encode(text) == expected
        assert loaded.decode(expected) == text


def test_bad_gpt2_files_name_the_entry(mixed_tok, tmp_path):
    mixed_tok.save_gpt2_files(tmp_path)
    merges = (tmp_path / "merges.txt").read_text(encoding="utf-8").split("\n")
    (tmp_path / "merges.txt").write_text("\n".join([merges[0], merges[2], merges[1], *merges[3:]]), encoding="utf-8")
    with pytest.raises(ValueError, match=r"merges.txt, line 2: .* expected 256"):
        BPETokenizer.from_gpt2_files(tmp_path / "vocab.json", tmp_path / "merges.txt")


# --- bad calls and a light import ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: BPETokenizer.train(b"bytes", 300), TypeError, "train takes a str; got bytes"),
        (lambda: BPETokenizer.train("x", 256), ValueError, r"at least 256 bytes \+ 1 special tokens = 257; got 256"),
        (lambda: BPETokenizer.train("x", 300.0), TypeError, "vocab_size must be an int; got float"),
        (lambda: BPETokenizer.train("x", 300, special_tokens="<|x|>"), TypeError, "sequence of str"),
        (lambda: BPETokenizer.train("x", 300, special_tokens=["a", "a"]), ValueError, "must be distinct"),
        (lambda: BPETokenizer([(1, 300)]), ValueError, r"merge 0 must be a pair of ids below 256; got \(1, 300\)"),
    ],
)
def test_bad_calls_are_clear_errors(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_bad_ids_and_texts(english_tok):
    with pytest.raises(TypeError, match="encode takes a str; got list"):
        english_tok.encode(["a"])
    with pytest.raises(ValueError, match=r"id 5000 at position 1 is not in the vocabulary 0 … 1999"):
        english_tok.decode([1, 5000])
    with pytest.raises(TypeError, match=r"decode takes int ids; got 1.5 at position 0"):
        english_tok.decode([1.5])
    with pytest.raises(TypeError, match="decode takes a sequence of int ids; got str"):
        english_tok.decode("abc")


def test_decode_takes_a_tensor(english_tok):
    import torch

    ids = english_tok.encode("To be, or not to be")
    assert english_tok.decode(torch.tensor(ids)) == "To be, or not to be"
    with pytest.raises(ValueError, match="1-D sequence"):
        english_tok.decode(torch.tensor([ids]))


def test_import_is_light():
    code = "import sys, companion.tokenize; print(sorted({'torch', 'numpy', 'regex', 'tiktoken'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"


def test_every_known_character_is_in_one_class():
    """The ranges cover Python's database: each known letter or number is matched by \\p{L} or \\p{N}."""
    letters, numbers = compile_pattern(r"\p{L}"), compile_pattern(r"\p{N}")
    for code in range(0, 0x32000, 7):
        char = chr(code)
        category = unicodedata.category(char)
        assert bool(letters.fullmatch(char)) == (category[0] == "L")
        assert bool(numbers.fullmatch(char)) == (category[0] == "N")


CL100K_PATTERN = r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+"""


@pytest.mark.skipif(sys.version_info < (3, 11), reason="possessive quantifiers need Python 3.11's re")
@SETTINGS
@given(text=st.one_of(ENGLISH, CHINESE, st.text(KNOWN, max_size=60)))
def test_gpt4_pattern_splits_as_the_regex_module(text):
    """GPT-4's pattern (cl100k) too: scoped case-insensitive flags, possessive quantifiers, counted repeats."""
    assert pre_split(text, CL100K_PATTERN) == regex.findall(CL100K_PATTERN, text)
