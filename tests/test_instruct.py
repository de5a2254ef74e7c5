"""companion.instruct: the generated tasks and their splits, the chat template and its masks, the answer-only
loss against PyTorch's cross-entropy, greedy answers against TinyGPT.generate, and the embedding resize."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn import functional as F

from companion import instruct
from companion.data import CharVocab
from companion.instruct import END, ChatTemplate, WithSpecialTokens
from companion.models import GPTConfig, TinyGPT

SHAKESPEARE_CHARS = "\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
fast = settings(max_examples=30, deadline=None)


class ByteTokenizer:
    """A byte-level stand-in for a BPE tokenizer that adds its own special tokens after its 256 ids."""

    def __init__(self) -> None:
        self.special: list[str] = []

    def __len__(self) -> int:
        return 256 + len(self.special)

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: list[int]) -> str:
        out, run = [], []
        for i in ids:
            if i < 256:
                run.append(i)
            else:
                out += [bytes(run).decode("utf-8"), self.special[i - 256]]
                run = []
        return "".join(out) + bytes(run).decode("utf-8")

    def add_special_tokens(self, tokens: list[str]) -> list[int]:
        self.special += [t for t in tokens if t not in self.special]
        return [256 + self.special.index(t) for t in tokens]


def char_chat() -> ChatTemplate:
    return ChatTemplate(WithSpecialTokens(CharVocab(SHAKESPEARE_CHARS)))


# --------------------------------------------------------------------------------------------
# the tasks and their splits
# --------------------------------------------------------------------------------------------


def test_each_task_answers_right_and_its_rejected_answer_is_wrong():
    cases = {
        "reverse": (("crown",), "nworc"),
        "uppercase": (("ghost",), "GHOST"),
        "first_letter": (("sword",), "s"),
        "repeat": (("night",), "night night"),
        "next_number": (("seven",), "eight"),
        "larger": (("nine", "four"), "nine"),
    }
    assert set(cases) == set(instruct.TASKS)
    for name, (item, answer) in cases.items():
        task = instruct.TASKS[name]
        assert task.answer(item) == answer
        assert task.wrong(item) != answer
    assert instruct.TASKS["larger"].answer(("four", "twelve")) == "twelve"
    assert instruct.TASKS["next_number"].wrong(("zero",)) == "two"


def test_each_chinese_task_answers_right_and_its_rejected_answer_is_wrong():
    cases = {"first_char": "李", "last_char": "易", "repeat_zh": "李白易李白易", "reverse_zh": "易白李"}
    assert set(cases) == set(instruct.CHINESE_TASKS)
    for name, answer in cases.items():
        task = instruct.CHINESE_TASKS[name]
        assert task.answer(("李白易",)) == answer and task.wrong(("李白易",)) != answer
        assert all(t.count("{x}") == 1 for t in task.templates) and len(task.templates) == 4


def test_chinese_splits_carry_their_items_and_hold_out_names_per_task():
    names = instruct.fit_names(["白居易", "杜甫", "李白", "不詳", "無名氏", "杜甫", "王維", "韋應物", "孟郊", "岑參"])
    splits = instruct.instruction_splits(list(instruct.CHINESE_TASKS), words=names, held_out=0.25)
    for e in (e for split in splits.values() for e in split):
        assert e.item[0] in names and e.item[0] in e.prompt and e.answer != e.rejected
    for task in instruct.CHINESE_TASKS:
        trained = {e.item for e in splits["train"] if e.task == task}
        held = {e.item for e in splits["new_items"] if e.task == task}
        assert len(held) == 2 and not trained & held
    assert instruct.instruction_splits(["larger"])["train"][0].item[1] in instruct.NUMBERS


def test_with_same_words_every_word_task_trains_and_holds_out_the_same_words():
    names = instruct.fit_names(["白居易", "杜甫", "李白", "王維", "韋應物", "孟郊", "岑參", "賈島", "韓愈", "張籍"])
    tasks = [*instruct.CHINESE_TASKS, "next_number"]
    splits = instruct.instruction_splits(tasks, words=names, held_out=0.3, same_words=True, seed=4)
    for split in ("train", "new_items"):
        items = [{e.item for e in splits[split] if e.task == task} for task in instruct.CHINESE_TASKS]
        assert all(i == items[0] for i in items) and len(items[0]) == (7 if split == "train" else 3)
    held = {e.item for e in splits["new_items"]}
    assert not held & {e.item for e in splits["train"] if e.task != "next_number"}
    assert {e.item[0] for e in splits["train"] if e.task == "next_number"} <= set(instruct.NUMBERS)
    apart = instruct.instruction_splits(list(instruct.CHINESE_TASKS), words=names, held_out=0.3, seed=4)
    assert len({frozenset(e.item for e in apart["new_items"] if e.task == t) for t in instruct.CHINESE_TASKS}) > 1


def test_fit_names_keeps_names_of_two_or_three_distinct_characters_once_each():
    names = ["白居易", "杜甫", "不詳", "李白", "杜甫", "無名氏", "上官昭容", "王", "元元", "杜甫"]
    assert instruct.fit_names(names) == ("白居易", "杜甫", "李白")
    assert instruct.fit_names(iter(names), shortest=3, longest=4) == ("白居易", "上官昭容")
    with pytest.raises(TypeError, match="not one str"):
        instruct.fit_names("李白")
    with pytest.raises(TypeError, match="must be a str"):
        instruct.fit_names(["李白", 7])


def test_the_words_suit_every_task():
    words = instruct.WORDS
    assert len(set(words)) == len(words) == 70
    assert all(w.isalpha() and w.islower() and w != w[::-1] and w[0] != w[-1] for w in words)


def test_the_splits_hold_out_items_and_templates():
    splits = instruct.instruction_splits(seed=3)
    train, new_items, new_templates = splits["train"], splits["new_items"], splits["new_templates"]
    last = {name: len(task.templates) - 1 for name, task in instruct.TASKS.items()}
    assert all(e.template < last[e.task] for e in train + new_items)
    assert all(e.template == last[e.task] for e in new_templates)
    # an item is known by its task and its two answers (first_letter's answers repeat across words)
    item = lambda e: (e.task, e.answer, e.rejected)  # noqa: E731
    seen = {item(e) for e in train}
    assert {item(e) for e in new_templates} == seen
    assert not {item(e) for e in new_items if e.task != "first_letter"} & seen
    assert not {e.prompt for e in new_items} & {e.prompt for e in train}
    assert {e.task for e in new_items} == set(instruct.TASKS)
    for name, task in instruct.TASKS.items():
        counts = [sum(e.task == name for e in split) / (len(task.templates) - 1) for split in (train, new_items)]
        assert counts[1] == max(1, round(0.2 * (counts[0] + counts[1])))


def test_every_example_is_right_and_written_in_tiny_shakespeares_characters():
    for split in instruct.instruction_splits().values():
        for e in split:
            assert set(e.prompt + e.answer + e.rejected) <= set(SHAKESPEARE_CHARS)
            assert e.answer != e.rejected


def test_the_splits_repeat_with_the_seed_and_change_with_it():
    assert instruct.instruction_splits(seed=1) == instruct.instruction_splits(seed=1)
    assert instruct.instruction_splits(seed=1)["new_items"] != instruct.instruction_splits(seed=2)["new_items"]


def test_other_words_and_a_subset_of_tasks():
    splits = instruct.instruction_splits(["reverse", "repeat"], words=["李白", "杜甫", "王維", "白居易"], held_out=0.25)
    assert {e.task for e in splits["train"]} == {"reverse", "repeat"}
    assert len(splits["new_items"]) == 2 * 3 * 1
    assert any(e.answer == "易居白" for s in splits.values() for e in s)


def test_bad_split_arguments():
    with pytest.raises(ValueError, match="tasks must be names"):
        instruct.instruction_splits(["translate"])
    with pytest.raises(ValueError, match="held_out"):
        instruct.instruction_splits(held_out=1.0)
    with pytest.raises(TypeError, match="words"):
        instruct.instruction_splits(words="king")
    with pytest.raises(ValueError, match="max_items"):
        instruct.instruction_splits(max_items=1)


# --------------------------------------------------------------------------------------------
# the chat template and its masks
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tokenizer", [ByteTokenizer(), WithSpecialTokens(CharVocab(SHAKESPEARE_CHARS))])
def test_the_template_renders_and_encodes_the_same_conversation(tokenizer):
    chat = ChatTemplate(tokenizer)
    assert chat.render("uppercase king") == "<|user|>uppercase king<|assistant|>"
    assert chat.render("uppercase king", "KING") == "<|user|>uppercase king<|assistant|>KING<|end|>"
    ids = chat.encode("uppercase king", "KING")
    assert tokenizer.decode(ids) == chat.render("uppercase king", "KING")
    assert ids[0] == chat.user_id and ids[-1] == chat.end_id and ids.count(chat.assistant_id) == 1
    assert chat.vocab_size == len(tokenizer) == max(ids) + 1
    assert ChatTemplate(tokenizer).end_id == chat.end_id, "adding the tokens again keeps their ids"


def test_the_vocabulary_size_is_read_from_vocab_size_when_the_tokenizer_has_no_len():
    class Sized:
        vocab_size = 300

        def __init__(self) -> None:
            self.inner = ByteTokenizer()

        def encode(self, text: str) -> list[int]:
            return self.inner.encode(text)

        def decode(self, ids: list[int]) -> str:
            return self.inner.decode(ids)

        def add_special_tokens(self, tokens: list[str]) -> list[int]:
            return self.inner.add_special_tokens(tokens)

    assert ChatTemplate(Sized()).vocab_size == 300


def test_a_batch_masks_the_answer_and_its_end_token_only():
    chat = char_chat()
    examples = instruct.instruction_splits()["train"][::50]
    ids = chat.batch(examples)
    answers, conversations = chat.answer_mask(ids), chat.conversation_mask(ids)
    for row, e in zip(range(len(ids)), examples):
        assert chat.tokenizer.decode(ids[row][answers[row]]) == e.answer + END
        assert chat.tokenizer.decode(ids[row][conversations[row]]) == chat.render(e.prompt, e.answer)
        assert (ids[row][~conversations[row]] == chat.end_id).all(), "padding is end tokens"
    rejected = chat.batch(examples, rejected=True)
    assert chat.tokenizer.decode(rejected[0][chat.answer_mask(rejected)[0]]) == examples[0].rejected + END


def answer_mask_by_loop(row: list[int], start: int, end: int) -> list[bool]:
    mask, inside, done = [], False, False
    for token in row:
        mask.append(inside and not done)
        if inside and token == end:
            done = True
        if token == start:
            inside = True
    return mask


@fast
@given(st.lists(st.lists(st.integers(0, 4), min_size=7, max_size=7), min_size=1, max_size=4))
def test_answer_mask_equals_a_plain_loop(rows):
    ids = torch.tensor(rows)
    expected = [answer_mask_by_loop(row, start=3, end=4) for row in rows]
    assert instruct.answer_mask(ids, start_id=3, end_id=4).tolist() == expected


def tiny_gpt(vocab: int, seed: int = 0, context: int = 64) -> TinyGPT:
    torch.manual_seed(seed)
    return TinyGPT(GPTConfig(vocab_size=vocab, context=context, dim=16, heads=2, layers=1))


def test_sft_loss_equals_torchs_cross_entropy_on_the_masked_tokens():
    chat = char_chat()
    model = tiny_gpt(chat.vocab_size).double()
    ids = chat.batch(instruct.instruction_splits()["train"][:5])
    logits = model(ids)[:, :-1]
    for mask in (chat.answer_mask(ids), chat.conversation_mask(ids)):
        targets = ids[:, 1:].masked_fill(~mask[:, 1:], -100)
        expected = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100)
        torch.testing.assert_close(instruct.sft_loss(model, ids, mask), expected, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="nothing to learn"):
        instruct.sft_loss(model, ids, torch.zeros_like(ids, dtype=torch.bool))
    with pytest.raises(TypeError, match="bool tensor"):
        instruct.sft_loss(model, ids, chat.answer_mask(ids).long())


# --------------------------------------------------------------------------------------------
# greedy answers and exact match
# --------------------------------------------------------------------------------------------


class Oracle(nn.Module):
    """Answers each prompt it knows with ``answers[prompt]`` and then the end token, by one-hot logits."""

    def __init__(self, chat: ChatTemplate, answers: dict[str, str], end: bool = True) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))
        self.vocab = chat.vocab_size
        self.next = {}
        for prompt, answer in answers.items():
            full = chat.encode(prompt, answer) if end else chat.encode(prompt) + chat.tokenizer.encode(answer * 9)
            for t in range(len(chat.encode(prompt)), len(full)):
                self.next[tuple(full[:t])] = full[t]

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(*ids.shape, self.vocab)
        for row in range(len(ids)):
            logits[row, -1, self.next.get(tuple(ids[row].tolist()), 0)] = 1.0
        return logits * self.scale


def test_greedy_answers_stop_at_the_end_token_and_keep_the_prompts_order():
    chat = char_chat()
    examples = instruct.instruction_splits()["new_items"][::7]
    right = {e.prompt: e.answer for e in examples}
    assert instruct.generate_answers(Oracle(chat, right), chat, [e.prompt for e in examples]) == [e.answer for e in examples]
    assert instruct.exact_match(Oracle(chat, right), chat, examples) == 1.0
    half = {e.prompt: (e.answer if i % 2 else e.rejected) for i, e in enumerate(examples)}
    assert instruct.exact_match(Oracle(chat, half), chat, examples) == (len(examples) // 2) / len(examples)
    assert instruct.exact_match(Oracle(chat, right, end=False), chat, examples, max_new_tokens=30) == 0.0


def test_greedy_answers_equal_tinygpts_own_greedy_generation():
    chat = char_chat()
    model = tiny_gpt(chat.vocab_size, seed=4, context=16).train()
    prompts = ["uppercase king", "say love twice", "reverse the word rome"]
    answers = instruct.generate_answers(model, chat, prompts, max_new_tokens=12)
    assert model.training, "the model's mode is restored"
    for prompt, answer in zip(prompts, answers):
        generated = model.generate(torch.tensor(chat.encode(prompt)), 12, temperature=0)[len(chat.encode(prompt)) :]
        tokens = generated.tolist()
        expected = tokens[: tokens.index(chat.end_id)] if chat.end_id in tokens else tokens
        assert answer == chat.tokenizer.decode(expected)


# --------------------------------------------------------------------------------------------
# resizing the embedding
# --------------------------------------------------------------------------------------------


def test_resizing_keeps_the_old_tokens_logits_and_starts_new_rows_at_the_mean():
    model = tiny_gpt(20, seed=2).double()
    with torch.no_grad():
        model.head.bias.normal_()
    ids = torch.randint(0, 20, (3, 9), generator=torch.Generator().manual_seed(0))
    before = model(ids)
    old_rows, old_head = model.token_embedding.weight.detach().clone(), model.head.weight.detach().clone()
    instruct.resize_token_embeddings(model, 23)
    assert model.config.vocab_size == 23 and model.token_embedding.num_embeddings == 23
    after = model(ids)
    assert after.shape == (3, 9, 23) and torch.equal(after[..., :20], before)
    torch.testing.assert_close(model.token_embedding.weight[20:], old_rows.mean(0).expand(3, -1))
    torch.testing.assert_close(model.head.weight[20:], old_head.mean(0).expand(3, -1))
    model(torch.tensor([[22, 21, 20]]))  # the new ids are accepted
    assert model.token_embedding.weight.dtype == torch.float64 and model.head.weight.requires_grad


def test_a_tied_head_stays_tied_and_a_smaller_vocabulary_is_refused():
    model = tiny_gpt(10)
    model.head.weight = model.token_embedding.weight
    instruct.resize_token_embeddings(model, 12)
    assert model.head.weight is model.token_embedding.weight
    with pytest.raises(ValueError, match="vocab_size must be an int >= the current 12"):
        instruct.resize_token_embeddings(model, 11)
    with pytest.raises(TypeError, match="must be an nn.Embedding"):
        instruct.resize_token_embeddings(model, 13, embedding="head")


def test_with_special_tokens_appends_ids_after_the_tokenizers_own():
    tokenizer = WithSpecialTokens(CharVocab("abc"))
    assert tokenizer.add_special_tokens(["<|x|>", "<|y|>"]) == [3, 4]
    assert tokenizer.add_special_tokens(["<|y|>"]) == [4] and len(tokenizer) == 5
    assert tokenizer.encode("cab") == [2, 0, 1]
    assert tokenizer.decode([4, 0, 1, 3, 2]) == "<|y|>ab<|x|>c"
    with pytest.raises(ValueError, match="outside"):
        tokenizer.decode([5])
    with pytest.raises(TypeError, match="add_special_tokens"):
        ChatTemplate(CharVocab("abc"))


def test_fit_words_picks_words_that_suit_every_task():
    text = "Noon came. the king, the king's fool saw a level road and sees stars; dagger DAGGER otter kingdoms"
    assert instruct.fit_words(text) == ("came", "the", "king", "fool", "saw", "road", "and", "dagger", "otter", "kingdoms")
    assert instruct.fit_words(text, shortest=4, longest=5) == ("came", "king", "fool", "road", "otter")
    splits = instruct.instruction_splits(["reverse", "uppercase", "first_letter", "repeat"], words=instruct.fit_words(text))
    assert all(e.answer != e.rejected for split in splits.values() for e in split)


def test_words_whose_answers_cannot_be_told_apart_are_refused():
    with pytest.raises(ValueError, match="reverse task.*'noon'"):
        instruct.instruction_splits(["reverse"], words=["king", "noon", "lord"], held_out=0.5)
