"""The self-checks of chapters 5 and 6: each passes a right answer and explains a plausible wrong one."""

import pytest
import torch
from torch import nn

from companion import check, metrics, train


def stable_softmax(z):
    e = (z - z.max(dim=1, keepdim=True).values).exp()
    return e / e.sum(dim=1, keepdim=True)


def naive_softmax(z):
    return z.exp() / z.exp().sum(dim=1, keepdim=True)


def test_softmax():
    assert check.softmax(stable_softmax)
    wrong = check.softmax(naive_softmax)
    assert not wrong and "NaN or infinity" in wrong.message and "maximum" in wrong.message
    by_column = check.softmax(lambda z: z.softmax(dim=0))
    assert not by_column and "case 1" in by_column.message and "dim=1" in by_column.message


def test_cross_entropy():
    assert check.cross_entropy(lambda z, y: -z.log_softmax(dim=1)[torch.arange(len(y)), y].mean())
    summed = check.cross_entropy(lambda z, y: -z.log_softmax(dim=1)[torch.arange(len(y)), y].sum())
    assert not summed and "average over the batch" in summed.message
    unstable = check.cross_entropy(lambda z, y: -naive_softmax(z).log()[torch.arange(len(y)), y].mean())
    assert not unstable and "case 5" in unstable.message and "logsumexp" in unstable.message


def confusion_by_loop(predictions, targets, num_classes):
    counts = torch.zeros(num_classes, num_classes, dtype=torch.long)
    for true, predicted in zip(targets.tolist(), predictions.tolist()):
        counts[true, predicted] += 1
    return counts


def test_confusion_matrix():
    assert check.confusion_matrix(confusion_by_loop)
    transposed = check.confusion_matrix(lambda p, t, c: confusion_by_loop(p, t, c).T)
    assert not transposed and "rows are the true classes" in transposed.message
    too_small = check.confusion_matrix(lambda p, t, c: metrics.confusion_matrix(p, t))
    assert not too_small and "expected shape (4, 4), got shape (1, 1)" in too_small.message


def precision_recall_by_counting(predictions, targets, k):
    hits = ((predictions == k) & (targets == k)).sum().item()
    predicted, actual = (predictions == k).sum().item(), (targets == k).sum().item()
    return (hits / predicted if predicted else 0.0, hits / actual if actual else 0.0)


def test_precision_recall_matches_companion_metrics():
    gen = torch.Generator().manual_seed(0)
    predictions, targets = torch.randint(0, 5, (300,), generator=gen), torch.randint(0, 5, (300,), generator=gen)
    report = metrics.precision_recall_f1(predictions, targets)
    for k in range(5):
        assert check.precision_recall_of_class(predictions, targets, k) == pytest.approx(
            (report.precision[k].item(), report.recall[k].item())
        )


def test_precision_recall():
    assert check.precision_recall(precision_recall_by_counting)
    swapped = check.precision_recall(lambda p, t, k: precision_recall_by_counting(p, t, k)[::-1])
    assert not swapped and "expected 0.5, got 1" in swapped.message

    def crashes_on_empty(p, t, k):
        return (((p == k) & (t == k)).sum() / (p == k).sum()).item(), 1.0

    no_rule = check.precision_recall(crashes_on_empty)
    assert not no_rule and "Return 0.0 when nothing is predicted" in no_rule.message


def test_l2_penalty_is_what_weight_decay_adds_to_the_gradient():
    torch.manual_seed(0)
    layer = nn.Linear(4, 3)
    lam = 0.1
    params = list(layer.parameters())
    penalty = lam / 2 * sum((p**2).sum() for p in params)
    assert check.l2_penalty(lambda ps, lam_: lam_ / 2 * sum((p**2).sum() for p in ps))
    grads = torch.autograd.grad(penalty, params)
    for p, g in zip(params, grads):
        torch.testing.assert_close(g, lam * p)
    no_half = check.l2_penalty(lambda ps, lam_: lam_ * sum((p**2).sum() for p in ps))
    assert not no_half and "expected 0.2625, got 0.525" in no_half.message and "λ/2" in no_half.message


def test_l1_penalty():
    assert check.l1_penalty(lambda ps, lam: lam * sum(p.abs().sum() for p in ps))
    signed = check.l1_penalty(lambda ps, lam: lam * sum(p.sum() for p in ps))
    assert not signed and "absolute values" in signed.message


def test_shifted_moves_pixels_and_fills_zeros():
    x = torch.arange(1.0, 10.0).reshape(1, 3, 3)
    assert check.shifted(x, 1, 0).tolist() == [[[0, 1, 2], [0, 4, 5], [0, 7, 8]]]
    assert check.shifted(x, 0, -1).tolist() == [[[4, 5, 6], [7, 8, 9], [0, 0, 0]]]
    assert check.shifted(x, -1, 1).tolist() == [[[0, 0, 0], [2, 3, 0], [5, 6, 0]]]
    assert check.shifted(x, 3, 0).sum() == 0 and torch.equal(check.shifted(x, 0, 0), x)


def test_shift_images():
    assert check.shift_images(check.shifted)
    rolled = check.shift_images(lambda x, dx, dy: torch.roll(x, shifts=(dy, dx), dims=(1, 2)))
    assert not rolled and "torch.roll wraps" in rolled.message
    mirrored = check.shift_images(lambda x, dx, dy: check.shifted(x, -dx, -dy))
    assert not mirrored and "case 1" in mirrored.message


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
        assert check.early_stopping_epochs(losses, patience) == (stopper.best_epoch, len(history))


def test_early_stopping():
    assert check.early_stopping(check.early_stopping_epochs)

    def ties_improve(losses, patience):
        best, best_epoch = float("inf"), 0
        for epoch, loss in enumerate(losses, start=1):
            if loss <= best:
                best, best_epoch = loss, epoch
            elif epoch - best_epoch >= patience:
                return best_epoch, epoch
        return best_epoch, len(losses)

    wrong = check.early_stopping(ties_improve)
    assert not wrong and "case 4" in wrong.message and "equal to the best is not an improvement" in wrong.message
