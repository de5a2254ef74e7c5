"""A BPE merge written out for the tests: the reference that the trainer's brute-force oracle
(tests/test_tokenize.py) and the right answer to chapter 11's merge exercise (tests/test_check_llm.py)
share, independent of `companion.tokenize`."""

from __future__ import annotations


def merge_pair(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """``ids`` with each occurrence of ``pair``, left to right and without overlap, replaced by ``new_id``."""
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == tuple(pair):
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out
