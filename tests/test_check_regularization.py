"""companion.check, chapter 6: the self-checks of the L1 and L2 penalties, an image shift and early stopping.

Each check passes a right answer, fails realistic wrong ones with a message that says which case and
how, never prints the expected value, and keeps the method for ``check.hint``.
"""

import re
import types

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from companion import check, train

def _student_copy(reference, name: str, defaults=None):
    """The check's reference copied into a file of its own: a right answer (the check blocks the reference
    and its copies in its own file)."""
    code = reference.__code__.replace(co_name=name, co_filename="student.py")
    return types.FunctionType(code, vars(check.regularization), None, defaults)


shifted = _student_copy(check.regularization._shifted, "shifted")
stopping = _student_copy(check.regularization._stopping, "stopping", ("",))


def numbers_in(text: str) -> set[str]:
    return set(re.findall(r"\d+\.\d+", text))


def l2_by_hand(ps, lam):
    return lam / 2 * sum((p**2).sum() for p in ps)


def l1_by_hand(ps, lam):
    return lam * sum(p.abs().sum() for p in ps)


def test_l2_penalty_is_what_weight_decay_adds_to_the_gradient():
    torch.manual_seed(0)
    layer = nn.Linear(4, 3)
    lam = 0.1
    params = list(layer.parameters())
    grads = torch.autograd.grad(l2_by_hand(params, lam), params)
    for p, g in zip(params, grads):
        torch.testing.assert_close(g, lam * p)
    assert check.l2_penalty(l2_by_hand)


def test_l2_penalty_names_the_common_mistakes_without_the_expected_value():
    wrong = {
        "the ½ is missing": lambda ps, lam: lam * sum((p**2).sum() for p in ps),
        "a norm": lambda ps, lam: lam / 2 * sum((p**2).sum() for p in ps).sqrt(),
        "a mean over the entries": lambda ps, lam: lam / 2 * sum((p**2).mean() for p in ps),
        "only the first tensor": lambda ps, lam: lam / 2 * (ps[0] ** 2).sum(),
    }
    for words, answer in wrong.items():
        result = check.l2_penalty(answer)
        assert not result and words in result.message, result.message
        assert not numbers_in(result.message.split("): ", 1)[-1]), result.message
    no_half = check.l2_penalty(wrong["the ½ is missing"])
    assert no_half.message.startswith("case 1 (tensors of shapes (2, 2); lam = 0.1): the penalty: it is 2 times too large.")
    assert "0.2625" not in no_half.message and "0.525" not in no_half.message


def test_l2_penalty_wants_one_differentiable_number():
    per_tensor = check.l2_penalty(lambda ps, lam: torch.stack([lam / 2 * (p**2).sum() for p in ps]))
    assert not per_tensor and "expected one number (a 0-d tensor), got shape (1,)" in per_tensor.message
    as_float = check.l2_penalty(lambda ps, lam: l2_by_hand(ps, lam).detach().item())
    assert not as_float and "autograd can differentiate" in as_float.message
    detached = check.l2_penalty(lambda ps, lam: l2_by_hand([p.detach() for p in ps], lam))
    assert not detached and "autograd can differentiate" in detached.message
    assert check.l2_penalty(...).message == check.PLACEHOLDER_MESSAGE
    crash = check.l2_penalty(lambda ps, lam: ps @ ps)
    assert not crash and "raised TypeError" in crash.message


def test_l1_penalty():
    assert check.l1_penalty(l1_by_hand)
    signed = check.l1_penalty(lambda ps, lam: lam * sum(p.sum() for p in ps))
    assert not signed and "positive and negative entries cancel" in signed.message
    halved = check.l1_penalty(lambda ps, lam: lam / 2 * sum(p.abs().sum() for p in ps))
    assert not halved and "2 times too small" in halved.message and "belongs to the L2 penalty" in halved.message
    squared = check.l1_penalty(lambda ps, lam: lam * sum((p**2).sum() for p in ps))
    assert not squared and "squares instead of absolute values" in squared.message
    assert not numbers_in(signed.message.split("): ", 1)[-1])
    assert "absolute values" in check.hint("l1_penalty").text


def test_shifted_moves_pixels_and_fills_zeros():
    x = torch.arange(1.0, 10.0).reshape(1, 3, 3)
    assert shifted(x, 1, 0).tolist() == [[[0, 1, 2], [0, 4, 5], [0, 7, 8]]]
    assert shifted(x, 0, -1).tolist() == [[[4, 5, 6], [7, 8, 9], [0, 0, 0]]]
    assert shifted(x, -1, 1).tolist() == [[[0, 0, 0], [2, 3, 0], [5, 6, 0]]]
    assert shifted(x, 3, 0).sum() == 0 and torch.equal(shifted(x, 0, 0), x)
    wide = torch.rand(2, 4, 6)
    assert torch.equal(shifted(wide, 2, 1)[:, 1:, 2:], wide[:, :-1, :-2])


def shift_by_padding(images, dx, dy):
    n, h, w = images.shape
    padded = F.pad(images, (abs(dx), abs(dx), abs(dy), abs(dy)))
    top, left = abs(dy) - dy, abs(dx) - dx
    return padded[:, top : top + h, left : left + w]


def test_shift_images_passes_two_solutions_and_names_the_common_mistakes():
    assert check.shift_images(shifted)
    assert check.shift_images(shift_by_padding)
    rolled = check.shift_images(lambda x, dx, dy: torch.roll(x, shifts=(dy, dx), dims=(1, 2)))
    assert not rolled and "case 1" in rolled.message and "wrap-around" in rolled.message
    assert "zeros_like" not in rolled.message and "zeros_like" in check.hint("shift_images").text
    mirrored = check.shift_images(lambda x, dx, dy: shifted(x, -dx, -dy))
    assert not mirrored and "case 1" in mirrored.message and "opposite way" in mirrored.message
    swapped = check.shift_images(lambda x, dx, dy: shifted(x, dy, dx))
    assert not swapped and "swapped" in swapped.message


def test_shift_images_says_which_pixels_differ():
    def forgets_negative_shifts(images, dx, dy):
        return shifted(images, max(dx, 0), max(dy, 0))

    result = check.shift_images(forgets_negative_shifts)
    assert not result and result.message.startswith("case 2 (images of shape (1, 3, 3), dx = 0, dy = -1):")
    assert "entries differ; at index (0, 0, 0)" in result.message
    cropped = check.shift_images(lambda x, dx, dy: x[:, 1:, :])
    assert not cropped and "A shift keeps the image size" in cropped.message

    def overshoots(images, dx, dy):
        if abs(dx) >= images.shape[2]:
            return images
        return shifted(images, dx, dy)

    whole_width = check.shift_images(overshoots)
    assert not whole_width and "dx = 28" in whole_width.message


@pytest.mark.parametrize("patience", [1, 2, 3])
def test_early_stopping_reference_agrees_with_companion_train(patience):
    gen = torch.Generator().manual_seed(patience)
    for _ in range(20):
        losses = (torch.rand(12, generator=gen) + torch.linspace(1.0, 0.0, 12)).tolist()
        stopper, history = train.EarlyStopping(patience=patience, restore_best=False), train.History()
        stopper.on_train_begin(nn.Linear(1, 1))
        for epoch, loss in enumerate(losses, start=1):
            history.append({"val_loss": loss})
            if stopper.on_epoch_end(epoch, history, nn.Linear(1, 1)):
                break
        assert stopping(losses, patience) == (stopper.best_epoch, len(history))


def ties_improve(losses, patience):
    best, best_epoch = float("inf"), 0
    for epoch, loss in enumerate(losses, start=1):
        if loss <= best:
            best, best_epoch = loss, epoch
        elif epoch - best_epoch >= patience:
            return best_epoch, epoch
    return best_epoch, len(losses)


def test_early_stopping_names_the_common_mistakes():
    assert check.early_stopping(stopping)
    wrong = check.early_stopping(ties_improve)
    assert not wrong and "case 4" in wrong.message and "equal to the best one counts as an improvement" in (
        wrong.message
    )

    def looks_into_the_future(losses, patience):
        best_epoch = losses.index(min(losses)) + 1
        return best_epoch, min(best_epoch + patience, len(losses))

    future = check.early_stopping(looks_into_the_future)
    assert not future and "seen the future" in future.message

    def from_zero(losses, patience):
        return tuple(e - 1 for e in stopping(losses, patience))

    zero = check.early_stopping(from_zero)
    assert not zero and "counted from 0" in zero.message


def test_early_stopping_says_too_early_or_too_late_without_the_epochs():
    def one_late(losses, patience):
        best, last = stopping(losses, patience)
        return best, min(last + 1, len(losses))

    late = check.early_stopping(one_late)
    assert late.message == (
        "case 1 (losses [0.9, 0.7, 0.6, 0.65, 0.7, 0.8], patience 2): last_epoch: it is too high, by 10–50 %. "
        "It looks like this mistake: training stops one epoch too late."
    )

    def two_late(losses, patience):
        best, last = stopping(losses, patience)
        return best, last + 2

    result = check.early_stopping(two_late)
    assert result.message == "case 1 (losses [0.9, 0.7, 0.6, 0.65, 0.7, 0.8], patience 2): last_epoch: it is too high, by 10–50 %."

    def stops_too_soon(losses, patience):
        best, last = stopping(losses, patience)
        return best, max(best, last - 2)

    early = check.early_stopping(stops_too_soon)
    assert not early and "last_epoch: it is too low" in early.message
    assert not check.early_stopping(lambda losses, patience: 3)
    assert "expected 2 results (best_epoch, last_epoch), got int" in check.early_stopping(lambda losses, patience: 3).message
    assert check.early_stopping(...).message == check.PLACEHOLDER_MESSAGE


@pytest.mark.parametrize("name", ["l2_penalty", "l1_penalty", "shift_images", "early_stopping"])
def test_every_check_has_a_hint(name):
    assert len(check.hint(name).text) > 40
