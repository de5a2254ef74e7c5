"""Encode throughput of the course's BPE tokenizer against tiktoken's, on the same merges, in one process.

It trains :class:`companion.tokenize.BPETokenizer` on Tiny Shakespeare (and,
for Chinese, on the Tang poems), builds ``tiktoken.Encoding`` from the same
ranks, checks that both give the same tokens, and prints characters per second
of each and their ratio:

- *cold*: a fresh tokenizer, so every distinct piece goes through the merge
  loop once;
- *warm*: the same tokenizer again, when every piece comes from its cache.

Where the gap comes from: both cut the text with a regular expression (the
standard library's ``re`` here, compiled C, against tiktoken's Rust engine),
but the course's tokenizer then runs, per piece, a Python loop — find the
adjacent pair with the lowest merge rank, merge it everywhere, repeat — in
which each step costs Python bytecode and new lists; tiktoken runs the same
loop compiled, on byte slices and a hash map of ranks. A piece met before
costs one dictionary lookup (the cache), so the warm ratio shows mostly the
per-piece cost of the Python ``for`` loop and list concatenation.

    python bench/bpe.py [--vocab 2000] [--chars 400000]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import tiktoken

from companion import data
from companion.tokenize import BPETokenizer


def seconds(work: Callable[[], object], repeats: int = 3) -> float:
    """The best wall-clock time of ``repeats`` calls of ``work()``."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - start)
    return best


def compare(name: str, train_text: str, text: str, vocab: int) -> None:
    tok = BPETokenizer.train(train_text, vocab)
    reference = tiktoken.Encoding(
        name=name, pat_str=tok.pattern, mergeable_ranks=tok.mergeable_ranks(), special_tokens=tok.special_tokens
    )
    ids = tok.encode(text)
    assert ids == reference.encode(text), "the two encoders disagree"
    cold = seconds(lambda: BPETokenizer(tok.merges, list(tok.special_tokens), tok.pattern).encode(text))
    warm = seconds(lambda: tok.encode(text))
    theirs = seconds(lambda: reference.encode(text))
    print(f"{name}: {len(text):,} characters -> {len(ids):,} tokens ({len(ids) / len(text):.3f} per character)")
    for label, mine in (("cold", cold), ("warm", warm)):
        print(f"  {label}: course {len(text) / mine / 1e6:.2f} M chars/s, tiktoken {len(text) / theirs / 1e6:.2f} "
              f"M chars/s: tiktoken is {mine / theirs:.1f}x faster")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab", type=int, default=2000)
    parser.add_argument("--chars", type=int, default=400_000, help="characters of each text to encode")
    args = parser.parse_args()
    shakespeare = data.tiny_shakespeare()
    poems = "\n".join(poem.text for poem in data.tang_poems()[:20_000])
    print(f"tiktoken {tiktoken.__version__}, one thread each, vocabulary {args.vocab}")
    compare("shakespeare", shakespeare, shakespeare[: args.chars], args.vocab)
    compare("tang", poems, poems[-args.chars :], args.vocab)


if __name__ == "__main__":
    main()
