"""Instruction tuning: a task set made by code, a chat template with special tokens, and answer-only losses.

The tasks are small enough for a character- or BPE-level model to learn on a
CPU in minutes, and each is written out in several phrasings (*templates*):

============  ===========================================  ==========
task          e.g. the prompt                              the answer
============  ===========================================  ==========
reverse       ``reverse the word crown``                   ``nworc``
uppercase     ``uppercase ghost``                          ``GHOST``
first_letter  ``what is the first letter of sword?``       ``s``
repeat        ``say night twice``                          ``night night``
next_number   ``what comes after seven?``                  ``eight``
larger        ``which is larger, nine or four?``           ``nine``
first_char    ``李白的第一個字是什麼？``                   ``李``
last_char     ``杜甫的最後一個字是什麼？``                 ``甫``
repeat_zh     ``把王維說兩遍``                             ``王維王維``
reverse_zh    ``把白居易倒過來寫``                         ``易居白``
============  ===========================================  ==========

:func:`instruction_splits` holds some *items* (words, numbers, pairs) and the
last template of every task out of training, so that a held-out score can tell
"learned the instruction" (new templates) from "learned the task" (new items).
The English tasks' text uses only characters of Tiny Shakespeare, so a character
model of it can read every prompt. The Chinese tasks ask about names (the Tang
poets' of :func:`companion.data.tang_poems`, chosen by :func:`fit_names`) in
traditional characters, as the poems are written.

A conversation is laid out by a :class:`ChatTemplate` with three special tokens::

    <|user|>reverse the word crown<|assistant|>nworc<|end|>

Supervised fine-tuning (SFT) trains on the answer and its end token only
(:func:`answer_mask`, :func:`sft_loss`); :func:`exact_match` generates greedily
until the end token and compares.
"""

from __future__ import annotations

import dataclasses
import random
import re
from itertools import combinations
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

from companion.models.base import replace_module
from companion.preference import token_logprobs

USER, ASSISTANT, END = "<|user|>", "<|assistant|>", "<|end|>"
"""The special tokens of :class:`ChatTemplate`: where the user's turn starts, the assistant's, and where it ends."""

WORDS: tuple[str, ...] = tuple(
    "king queen lord lady duke prince crown sword ghost night love death heart blood grace tears storm witch fool "
    "knave rogue castle dagger poison letter friend enemy sorrow mercy virtue gentle noble sweet fair brave proud "
    "father mother daughter brother sister cousin nurse rome venice verona tower heaven moon rose lion horse wine "
    "bread gold silver ring dream fortune hamlet romeo juliet iago portia cassio plague lear macbeth banquo "
    "horatio".split()
)
"""Seventy words of Shakespeare's plays: lower-case, 3 to 8 letters, no palindrome, first letter ≠ last."""

NUMBERS: tuple[str, ...] = tuple(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split()
)
"""The numbers 0 … 20 in words (``NUMBERS[n]`` is ``n``)."""


@dataclass(frozen=True)
class Task:
    """One kind of instruction.

    Attributes:
        name: e.g. ``"reverse"``.
        templates: phrasings of the prompt with ``{x}`` (and ``{y}`` for a pair) in them;
            :func:`instruction_splits` holds the last one out of training. It is made of
            pieces of the others ("reverse {x}, please" after "reverse the word {x}" and
            "{x} backwards, please"), so a model that learned the instruction, not the
            phrasing, can answer it.
        answer: the right answer to an item.
        wrong: a plausible wrong answer to an item (the rejected answer of a preference pair).
        items: ``"word"``, ``"number"`` (all but the last of :data:`NUMBERS`) or ``"pair"`` (two different
            numbers, in either order).
    """

    name: str
    templates: tuple[str, ...]
    answer: Callable[[tuple[str, ...]], str]
    wrong: Callable[[tuple[str, ...]], str]
    items: str = "word"

    def prompt(self, template: int, item: tuple[str, ...]) -> str:
        """The prompt of ``item`` in the phrasing ``templates[template]``."""
        return self.templates[template].format(x=item[0], y=item[-1])


def _after(item: tuple[str, ...]) -> str:
    return NUMBERS[NUMBERS.index(item[0]) + 1]


def _before_or_two_after(item: tuple[str, ...]) -> str:
    n = NUMBERS.index(item[0])
    return NUMBERS[n - 1] if n > 0 else NUMBERS[n + 2]


def _larger(item: tuple[str, ...]) -> str:
    return max(item, key=NUMBERS.index)


def _smaller(item: tuple[str, ...]) -> str:
    return min(item, key=NUMBERS.index)


TASKS: dict[str, Task] = {
    task.name: task
    for task in [
        Task("reverse", ("reverse the word {x}", "spell {x} backwards", "{x} backwards, please",
                         "reverse {x}, please"),
             lambda w: w[0][::-1], lambda w: w[0]),
        Task("uppercase", ("uppercase {x}", "write the word {x} in capitals", "{x} in capitals, please",
                           "uppercase the word {x}"),
             lambda w: w[0].upper(), lambda w: w[0]),
        Task("first_letter", ("what is the first letter of {x}?", "{x} starts with which letter?",
                              "first letter of the word {x}, please", "which letter does {x} start with?"),
             lambda w: w[0][0], lambda w: w[0][-1]),
        Task("repeat", ("say {x} twice", "repeat the word {x} twice", "{x} twice, please", "say the word {x} twice"),
             lambda w: f"{w[0]} {w[0]}", lambda w: w[0]),
        Task("next_number", ("what comes after {x}?", "which number follows {x}?", "the number after {x}, please",
                             "what number comes after {x}?"),
             _after, _before_or_two_after, items="number"),
        Task("larger", ("which is larger, {x} or {y}?", "{x} or {y}: which is more?",
                        "the larger of {x} and {y}, please", "which is more, {x} or {y}?"),
             _larger, _smaller, items="pair"),
    ]
}  # fmt: skip
"""The course's English instruction tasks by name (see the table above)."""

CHINESE_TASKS: dict[str, Task] = {
    task.name: task
    for task in [
        Task("first_char", ("{x}的第一個字是什麼？", "{x}以哪個字開頭？", "請說出{x}的第一個字", "{x}開頭的字是什麼？"),
             lambda w: w[0][0], lambda w: w[0][-1]),
        Task("last_char", ("{x}的最後一個字是什麼？", "{x}以哪個字結尾？", "請說出{x}的最後一個字", "{x}結尾的字是什麼？"),
             lambda w: w[0][-1], lambda w: w[0][0]),
        Task("repeat_zh", ("把{x}說兩遍", "{x}重複兩遍", "請說兩遍{x}", "請把{x}重複兩遍"),
             lambda w: w[0] * 2, lambda w: w[0]),
        Task("reverse_zh", ("把{x}倒過來寫", "{x}倒著寫", "請倒著寫{x}", "請把{x}倒過來寫"),
             lambda w: w[0][::-1], lambda w: w[0]),
    ]
}  # fmt: skip
"""The course's Chinese instruction tasks by name, for names such as the Tang poets' (see the table above)."""


@dataclass(frozen=True)
class Example:
    """One instruction and its answer.

    Attributes:
        task: the task's name.
        template: which of the task's templates phrased the prompt.
        prompt: the instruction, e.g. ``"reverse the word crown"``.
        answer: the right answer, e.g. ``"nworc"``.
        rejected: a wrong answer to the same prompt, e.g. ``"crown"``.
        item: what the prompt asks about, e.g. ``("crown",)``, or a pair of numbers.
    """

    task: str
    template: int
    prompt: str
    answer: str
    rejected: str
    item: tuple[str, ...] = ()


def fit_words(text: str, shortest: int = 3, longest: int = 8) -> tuple[str, ...]:
    """The distinct words of ``text`` that suit every word task, in order of first appearance.

    Words are runs of ASCII letters (``"king's,"`` holds ``"king"``); one suits
    when it is lower-case only, ``shortest`` to ``longest``
    long, not a palindrome, and its first letter differs from its last (so every
    task's rejected answer differs from its right one). The 70 :data:`WORDS`
    teach the tasks' format; thousands of words from Tiny Shakespeare let a
    model learn to copy, reverse and capitalise words it has not been trained on.
    """
    if not isinstance(text, str):
        raise TypeError(f"fit_words takes a str; got {type(text).__name__}")
    found = dict.fromkeys(w for w in re.findall(r"[A-Za-z]+", text) if w.islower() and shortest <= len(w) <= longest)
    return tuple(w for w in found if w != w[::-1] and w[0] != w[-1])


NOT_NAMES = ("不詳", "無名氏")
"""What the Tang collection gives as the author of a poem nobody can name: 'unknown' and 'anonymous'."""


def fit_names(names: Iterable[str], shortest: int = 2, longest: int = 3) -> tuple[str, ...]:
    """The distinct names of ``names`` that suit every Chinese word task, in order of first appearance.

    A name suits when it is ``shortest`` to ``longest`` characters long and no character repeats (so its
    first character differs from its last, and reversed it is another string); :data:`NOT_NAMES` are left
    out. For the Tang poets' names of :func:`companion.data.tang_poems`.
    """
    if isinstance(names, str):
        raise TypeError("fit_names takes an iterable of names, not one str")
    found = dict.fromkeys(names)
    if not all(isinstance(n, str) for n in found):
        raise TypeError("every name must be a str")
    return tuple(n for n in found if shortest <= len(n) <= longest and len(set(n)) == len(n) and n not in NOT_NAMES)


def _items(task: Task, words: Sequence[str], rng: random.Random) -> list[tuple[str, ...]]:
    """The task's items in a random order; a pair of numbers comes in a random order of its two."""
    if task.items == "word":
        items = [(w,) for w in words]
    elif task.items == "number":
        items = [(n,) for n in NUMBERS[:-1]]
    else:
        items = [(a, b) if rng.random() < 0.5 else (b, a) for a, b in combinations(NUMBERS, 2)]
    rng.shuffle(items)
    return items


def instruction_splits(
    tasks: Sequence[str] | None = None,
    words: Sequence[str] = WORDS,
    held_out: float = 0.2,
    max_items: int | None = 70,
    seed: int = 0,
    same_words: bool = False,
) -> dict[str, list[Example]]:
    """The instruction data, split so that held-out scores can tell what was learned.

    Each task's items are shuffled (with ``seed``), cut to ``max_items``, and a
    fraction ``held_out`` of them set aside; each task's last template is set
    aside too. With ``same_words`` the word tasks share one shuffle, so they train
    on the same words and hold out the same words: a held-out word is new to the
    model, not only to the task.

    Args:
        tasks: names from :data:`TASKS` or :data:`CHINESE_TASKS`; None means all of :data:`TASKS`.
        words: the items of the word tasks: :data:`WORDS`, the words of a text
            chosen by :func:`fit_words`, or any non-empty strings whose right and
            wrong answers differ (e.g. Tang poets' names, chosen by :func:`fit_names`, for
            the Chinese tasks).
        held_out: the fraction of items held out, in ``(0, 1)``; at least one item is.
        max_items: the most items a task uses (``larger`` has 210 pairs, the word
            tasks one item per word); None means all.
        seed: the shuffle's seed.
        same_words: one shuffle of ``words`` for every word task (else one each).

    Returns:
        ``{"train": ..., "new_items": ..., "new_templates": ...}``: the training
        items in the training templates; the held-out items in the training
        templates; the training items in the held-out template. Each a list of
        :class:`Example` in a fixed order.
    """
    known = {**TASKS, **CHINESE_TASKS}
    names = list(TASKS) if tasks is None else list(tasks)
    unknown = [name for name in names if name not in known]
    if unknown or not names:
        raise ValueError(f"tasks must be names from {list(known)}; got {tasks!r}")
    if not isinstance(held_out, float) or not 0 < held_out < 1:
        raise ValueError(f"held_out must be a fraction strictly between 0 and 1; got {held_out!r}")
    if isinstance(words, str) or not words or not all(isinstance(w, str) and w for w in words):
        raise TypeError(f"words must be a sequence of non-empty strings; got {words!r}")
    if max_items is not None and (isinstance(max_items, bool) or not isinstance(max_items, int) or max_items < 2):
        raise ValueError(f"max_items must be an int >= 2 or None; got {max_items!r}")
    rng = random.Random(seed)
    shared = random.Random(seed).sample([(w,) for w in words], len(words)) if same_words else None
    splits: dict[str, list[Example]] = {"train": [], "new_items": [], "new_templates": []}
    for name in names:
        task = known[name]
        items = (shared if shared and task.items == "word" else _items(task, words, rng))[:max_items]
        cut = max(1, round(held_out * len(items)))
        last = len(task.templates) - 1
        for split, chosen, templates in [
            ("train", items[cut:], range(last)),
            ("new_items", items[:cut], range(last)),
            ("new_templates", items[cut:], [last]),
        ]:
            splits[split] += [
                Example(name, t, task.prompt(t, item), task.answer(item), task.wrong(item), item)
                for item in chosen
                for t in templates
            ]
    same = next((e for examples in splits.values() for e in examples if e.answer == e.rejected), None)
    if same is not None:
        raise ValueError(
            f"the {same.task} task cannot tell a right answer from a wrong one for {same.prompt!r} "
            f"(both are {same.answer!r}): choose words as fit_words does"
        )
    return splits


class Tokenizer(Protocol):
    """What :class:`ChatTemplate` needs of a tokenizer."""

    def encode(self, text: str) -> Sequence[int] | torch.Tensor:
        """The ids of ``text``."""

    def decode(self, ids: Sequence[int]) -> str:
        """The text of ``ids``."""

    def add_special_tokens(self, tokens: list[str]) -> list[int]:
        """Give each string of ``tokens`` one id of its own; return the ids."""


class WithSpecialTokens:
    """A tokenizer (``encode``, ``decode``, ``len``) with special tokens added after its own ids.

    For a tokenizer that cannot add special tokens itself, such as
    :class:`companion.data.CharVocab`: special token ``i`` gets id
    ``len(tokenizer) + i``. ``encode`` never produces them (text is encoded as
    the tokenizer does); ``decode`` writes them out.

    >>> tok = WithSpecialTokens(CharVocab("abc"))  # doctest: +SKIP
    >>> tok.add_special_tokens(["<|end|>"]), tok.decode([0, 3]), len(tok)  # doctest: +SKIP
    ([3], 'a<|end|>', 4)
    """

    def __init__(self, tokenizer: object) -> None:
        if not all(hasattr(tokenizer, a) for a in ("encode", "decode", "__len__")):
            raise TypeError(f"the tokenizer needs encode, decode and len(); got {type(tokenizer).__name__}")
        self.tokenizer = tokenizer
        self.special: list[str] = []

    def __len__(self) -> int:
        """The number of ids: the tokenizer's, and one per special token."""
        return len(self.tokenizer) + len(self.special)

    def add_special_tokens(self, tokens: list[str]) -> list[int]:
        """Add the tokens not yet known; return the ids of all of ``tokens``."""
        for token in tokens:
            if not isinstance(token, str) or not token:
                raise TypeError(f"a special token is a non-empty str; got {token!r}")
            if token not in self.special:
                self.special.append(token)
        return [len(self.tokenizer) + self.special.index(token) for token in tokens]

    def encode(self, text: str) -> list[int]:
        """The tokenizer's ids of ``text``."""
        return _id_list(self.tokenizer.encode(text))

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        """The text of ``ids``, special tokens written out."""
        base, text = len(self.tokenizer), []
        run: list[int] = []
        for i in _id_list(ids):
            if i < base:
                run.append(i)
                continue
            if run:
                text.append(self.tokenizer.decode(run))
                run = []
            if i - base >= len(self.special):
                raise ValueError(f"id {i} is outside this tokenizer's range 0 … {len(self) - 1}")
            text.append(self.special[i - base])
        if run:
            text.append(self.tokenizer.decode(run))
        return "".join(text)


def _id_list(ids: Sequence[int] | torch.Tensor) -> list[int]:
    return ids.tolist() if isinstance(ids, torch.Tensor) else [int(i) for i in ids]


def answer_mask(ids: torch.Tensor, start_id: int, end_id: int) -> torch.Tensor:
    """Where each row's answer is: ``bool [B, T]``, True from just after the first ``start_id`` up to and
    including the first ``end_id`` after it; False on the prompt and on any padding after the end.

    >>> answer_mask(torch.tensor([[7, 1, 2, 8, 3, 4, 9, 9]]), start_id=8, end_id=9)
    tensor([[False, False, False, False,  True,  True,  True, False]])
    """
    if not isinstance(ids, torch.Tensor) or ids.ndim != 2 or ids.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"ids must be an integer tensor [B, T]; got {ids!r:.80}")
    is_start = (ids == start_id).int()
    after_start = (is_start.cumsum(dim=1) - is_start) > 0  # a start token lies strictly before
    is_end = ((ids == end_id) & after_start).int()
    ended_before = (is_end.cumsum(dim=1) - is_end) > 0  # an end token after the start lies strictly before
    return after_start & ~ended_before


class ChatTemplate:
    """Lays out a conversation with special tokens: ``<|user|>{prompt}<|assistant|>{answer}<|end|>``.

    The three special tokens are added to ``tokenizer`` (so a model's embedding
    must grow to :attr:`vocab_size`: see :func:`resize_token_embeddings`).

    Args:
        tokenizer: has ``encode(text)``, ``decode(ids)`` and ``add_special_tokens(list[str]) -> list[int]``
            (wrap one that has not in :class:`WithSpecialTokens`).

    Attributes:
        user_id, assistant_id, end_id: the ids of :data:`USER`, :data:`ASSISTANT` and :data:`END`.
    """

    def __init__(self, tokenizer: Tokenizer) -> None:
        if not all(hasattr(tokenizer, a) for a in ("encode", "decode", "add_special_tokens")):
            raise TypeError(
                f"the tokenizer needs encode, decode and add_special_tokens; got {type(tokenizer).__name__} "
                "(WithSpecialTokens(tokenizer) adds the last)"
            )
        self.tokenizer = tokenizer
        self.user_id, self.assistant_id, self.end_id = tokenizer.add_special_tokens([USER, ASSISTANT, END])

    @property
    def vocab_size(self) -> int:
        """The number of ids the model must know: the tokenizer's (its len or vocab_size), special ones included."""
        known = len(self.tokenizer) if hasattr(self.tokenizer, "__len__") else getattr(self.tokenizer, "vocab_size", 0)
        return max(known, self.user_id + 1, self.assistant_id + 1, self.end_id + 1)

    def render(self, prompt: str, answer: str | None = None) -> str:
        """The conversation as text; without ``answer``, the prompt the model continues."""
        text = f"{USER}{prompt}{ASSISTANT}"
        return text if answer is None else f"{text}{answer}{END}"

    def encode(self, prompt: str, answer: str | None = None) -> list[int]:
        """The ids of :meth:`render`'s text, the special tokens as their own ids."""
        ids = [self.user_id, *_id_list(self.tokenizer.encode(prompt)), self.assistant_id]
        return ids if answer is None else [*ids, *_id_list(self.tokenizer.encode(answer)), self.end_id]

    def batch(self, examples: Sequence[Example | tuple[str, str]], rejected: bool = False) -> torch.Tensor:
        """The conversations of ``examples`` as one ``int64 [B, T]`` tensor, padded at the end with the end token.

        Args:
            examples: :class:`Example` s or ``(prompt, answer)`` pairs.
            rejected: take each example's rejected answer instead of its answer.
        """
        if not examples:
            raise ValueError("examples is empty")
        pairs = [(e.prompt, e.rejected if rejected else e.answer) if isinstance(e, Example) else e for e in examples]
        rows = [self.encode(prompt, answer) for prompt, answer in pairs]
        width = max(map(len, rows))
        return torch.tensor([row + [self.end_id] * (width - len(row)) for row in rows], dtype=torch.int64)

    def answer_mask(self, ids: torch.Tensor) -> torch.Tensor:
        """``bool [B, T]``: the answer tokens and the end token after them (see :func:`answer_mask`)."""
        return answer_mask(ids, self.assistant_id, self.end_id)

    def conversation_mask(self, ids: torch.Tensor) -> torch.Tensor:
        """``bool [B, T]``: each conversation's tokens up to its end token (prompt, answer, end), not the padding."""
        return answer_mask(ids, self.user_id, self.end_id) | (ids == self.user_id)


def sft_loss(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The mean next-token cross-entropy over the tokens that ``mask`` marks: a 0-d tensor.

    ``−Σ_t mask[t]·log π(ids[t] | ids[:t]) / Σ_t mask[t]`` over ``t >= 1`` (the first
    token is never predicted). With :meth:`ChatTemplate.answer_mask` the model
    learns to answer; with :meth:`ChatTemplate.conversation_mask` it also learns
    to write prompts, as in pretraining.

    Args:
        model: maps ``ids [B, T]`` to next-token logits ``[B, T, V]``.
        ids: ``int64 [B, T]``.
        mask: ``bool [B, T]``.
    """
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or mask.shape != getattr(ids, "shape", None):
        raise TypeError(f"mask must be a bool tensor of the ids' shape; got {mask!r:.80}")
    targets = mask[:, 1:]
    if not targets.any():
        raise ValueError("the mask marks no token after the first: there is nothing to learn from")
    logprobs = token_logprobs(model, ids)
    return -(logprobs * targets.to(logprobs.device, logprobs.dtype)).sum() / targets.sum()


def _context(model: nn.Module) -> int | None:
    return getattr(getattr(model, "config", None), "context", None)


@torch.no_grad()
def generate_answers(
    model: nn.Module, chat: ChatTemplate, prompts: Sequence[str], max_new_tokens: int = 24
) -> list[str]:
    """The model's answer to each prompt: greedy decoding until the end token (or ``max_new_tokens``).

    Prompts of the same length run as one batch. The model reads at most its
    ``config.context`` last tokens when it has one. Its train/eval mode is left
    as it was (it runs in eval mode).

    Returns:
        the decoded answers, without the end token, in the order of ``prompts``.
    """
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be a positive int; got {max_new_tokens!r}")
    encoded = [chat.encode(prompt) for prompt in prompts]
    device = next(model.parameters()).device
    context, answers = _context(model), [""] * len(prompts)
    was_training = model.training
    model.eval()
    try:
        for length in sorted({len(row) for row in encoded}):
            rows = [i for i, row in enumerate(encoded) if len(row) == length]
            ids = torch.tensor([encoded[i] for i in rows], dtype=torch.int64, device=device)
            new = _greedy(model, ids, chat.end_id, max_new_tokens, context)
            for i, tokens in zip(rows, new):
                answers[i] = chat.tokenizer.decode(tokens)
    finally:
        model.train(was_training)
    return answers


def _greedy(model: nn.Module, ids: torch.Tensor, end_id: int, steps: int, context: int | None) -> list[list[int]]:
    """Each row's greedy continuation up to (not including) its first ``end_id``."""
    start, done = ids.shape[1], torch.zeros(len(ids), dtype=torch.bool, device=ids.device)
    for _ in range(steps):
        window = ids if context is None else ids[:, -context:]
        logits = model(window)
        logits = logits if isinstance(logits, torch.Tensor) else logits.logits
        following = logits[:, -1].argmax(dim=-1, keepdim=True)
        ids = torch.cat([ids, following], dim=1)
        done |= following[:, 0] == end_id
        if done.all():
            break
    rows = ids[:, start:].tolist()
    return [row[: row.index(end_id)] if end_id in row else row for row in rows]


def exact_match(model: nn.Module, chat: ChatTemplate, examples: Sequence[Example], max_new_tokens: int = 24) -> float:
    """The fraction of ``examples`` whose greedy answer (see :func:`generate_answers`) is exactly the right one."""
    if not examples:
        raise ValueError("examples is empty")
    answers = generate_answers(model, chat, [e.prompt for e in examples], max_new_tokens)
    return sum(a == e.answer for a, e in zip(answers, examples)) / len(examples)


def resize_token_embeddings(
    model: nn.Module, vocab_size: int, embedding: str = "token_embedding", head: str | None = "head"
) -> nn.Module:
    """Grow a language model's vocabulary to ``vocab_size`` ids, e.g. for new special tokens; return ``model``.

    The input embedding (an ``nn.Embedding``) and the output layer (an
    ``nn.Linear`` with one row per token) get new rows; each new row is the mean
    of the existing rows (and a new bias the mean bias), so a new token starts
    as an average token: its logit is about the average logit, and the model's
    predictions over the old tokens barely move (Hewitt 2021). The old rows are
    kept exactly, so the old tokens' logits do not change at all. A head tied to
    the embedding stays tied. ``model.config.vocab_size`` follows when there is one.

    Args:
        model: e.g. a :class:`~companion.models.gpt.TinyGPT`.
        vocab_size: the new number of ids, ``>=`` the current one.
        embedding: the name of the input embedding module.
        head: the name of the output layer, or None for a model without one.
    """
    table = model.get_submodule(embedding)
    if not isinstance(table, nn.Embedding):
        raise TypeError(f"{embedding!r} must be an nn.Embedding; got {type(table).__name__}")
    old = table.num_embeddings
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < old:
        raise ValueError(f"vocab_size must be an int >= the current {old}; got {vocab_size!r}")
    out = model.get_submodule(head) if head is not None else None
    if out is not None and (not isinstance(out, nn.Linear) or out.out_features != old):
        raise TypeError(
            f"{head!r} must be an nn.Linear with {old} outputs (resize before wrapping with LoRA); got {out!r}"
        )
    tied = out is not None and out.weight is table.weight
    new_table = nn.Embedding(vocab_size, table.embedding_dim, device=table.weight.device, dtype=table.weight.dtype)
    _grow(new_table.weight, table.weight)
    new_table.requires_grad_(table.weight.requires_grad)
    replace_module(model, embedding, new_table)
    if out is not None:
        kwargs = dict(bias=out.bias is not None, device=out.weight.device, dtype=out.weight.dtype)
        new_out = nn.Linear(out.in_features, vocab_size, **kwargs)
        if tied:
            new_out.weight = new_table.weight
        else:
            _grow(new_out.weight, out.weight)
        if out.bias is not None:
            _grow(new_out.bias, out.bias)
        new_out.requires_grad_(out.weight.requires_grad)
        replace_module(model, head, new_out)
    config = getattr(model, "config", None)
    if dataclasses.is_dataclass(config) and hasattr(config, "vocab_size"):
        model.config = dataclasses.replace(config, vocab_size=vocab_size)
    elif hasattr(config, "vocab_size"):
        config.vocab_size = vocab_size
    return model


@torch.no_grad()
def _grow(new: torch.Tensor, old: torch.Tensor) -> None:
    new[: len(old)] = old
    new[len(old) :] = old.mean(dim=0)

