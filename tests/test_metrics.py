"""companion.metrics against scikit-learn on random predictions, and its errors."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from companion import metrics

skm = pytest.importorskip("sklearn.metrics")


@st.composite
def classification(draw, min_classes=2, max_classes=7, min_per_class=0):
    """Random (scores [N, C], predicted labels [N], true labels [N], C) with some ties in the scores."""
    c = draw(st.integers(min_classes, max_classes))
    n = draw(st.integers(max(1, min_per_class * c), 80))
    seed = draw(st.integers(0, 2**31 - 1))
    gen = torch.Generator().manual_seed(seed)
    levels = draw(st.sampled_from([3, 10, 1000]))  # few levels → many ties
    scores = torch.randint(0, levels, (n, c), generator=gen).double() / levels
    true = torch.randint(0, c, (n,), generator=gen)
    predicted = torch.randint(0, c, (n,), generator=gen)
    return scores, predicted, true, c


@settings(max_examples=150, deadline=None)
@given(classification())
def test_accuracy_matches_sklearn(case):
    scores, predicted, true, _ = case
    assert metrics.accuracy(predicted, true) == pytest.approx(skm.accuracy_score(true, predicted), abs=1e-12)
    by_scores = scores.argmax(dim=1)
    assert metrics.accuracy(scores, true) == pytest.approx(skm.accuracy_score(true, by_scores), abs=1e-12)


def test_accuracy_of_logits_equals_accuracy_of_their_softmax():
    gen = torch.Generator().manual_seed(1)
    logits, true = torch.randn(500, 10, generator=gen), torch.randint(0, 10, (500,), generator=gen)
    assert metrics.accuracy(logits, true) == metrics.accuracy(logits.softmax(dim=1), true)
    assert metrics.accuracy(true, true) == 1.0


@settings(max_examples=150, deadline=None)
@given(classification())
def test_confusion_matrix_matches_sklearn(case):
    _, predicted, true, c = case
    got = metrics.confusion_matrix(predicted, true, num_classes=c)
    assert got.dtype == torch.int64 and got.shape == (c, c)
    np.testing.assert_array_equal(got.numpy(), skm.confusion_matrix(true, predicted, labels=range(c)))
    assert int(got.sum()) == len(true)


def test_confusion_matrix_size_from_scores_and_labels():
    true = torch.tensor([0, 1, 1])
    assert metrics.confusion_matrix(torch.tensor([0, 1, 0]), true).shape == (2, 2)
    assert metrics.confusion_matrix(torch.zeros(3, 5), true).shape == (5, 5)
    assert metrics.confusion_matrix(torch.tensor([0, 1, 0]), true, num_classes=4).shape == (4, 4)
    with pytest.raises(ValueError, match="num_classes"):
        metrics.confusion_matrix(torch.tensor([0, 3, 0]), true, num_classes=2)


@settings(max_examples=150, deadline=None)
@given(classification())
def test_precision_recall_f1_match_sklearn(case):
    _, predicted, true, c = case
    got = metrics.precision_recall_f1(predicted, true, num_classes=c)
    want = skm.precision_recall_fscore_support(true, predicted, labels=range(c), zero_division=0)
    for mine, theirs in zip(got[:3], want[:3]):
        assert mine.dtype == torch.float64
        np.testing.assert_allclose(mine.numpy(), theirs, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(got.support.numpy(), want[3])


def test_precision_of_a_class_never_predicted_is_zero():
    true = torch.tensor([0, 0, 1, 2])
    predicted = torch.tensor([0, 0, 0, 2])  # class 1 is never predicted
    report = metrics.precision_recall_f1(predicted, true, num_classes=4)  # class 3: neither present nor predicted
    assert report.precision.tolist() == pytest.approx([2 / 3, 0.0, 1.0, 0.0])
    assert report.recall.tolist() == pytest.approx([1.0, 0.0, 1.0, 0.0])
    assert report.f1.tolist() == pytest.approx([0.8, 0.0, 1.0, 0.0])
    assert report.support.tolist() == [2, 1, 1, 0]


@st.composite
def binary(draw):
    """Random (scores [N], positives [N]) with both classes present, with and without ties."""
    n = draw(st.integers(2, 120))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    levels = draw(st.sampled_from([2, 5, 50, 10**6]))
    scores = torch.randint(0, levels, (n,), generator=gen).double() / levels - 0.5
    positives = torch.randint(0, 2, (n,), generator=gen).bool()
    positives[0], positives[1] = True, False
    return scores, positives


@settings(max_examples=200, deadline=None)
@given(binary(), st.booleans())
def test_roc_curve_matches_sklearn_exactly(case, drop_intermediate):
    scores, positives = case
    got = metrics.roc_curve(scores, positives, drop_intermediate=drop_intermediate)
    fpr, tpr, thresholds = skm.roc_curve(positives.numpy(), scores.numpy(), drop_intermediate=drop_intermediate)
    np.testing.assert_array_equal(got.fpr.numpy(), fpr)
    np.testing.assert_array_equal(got.tpr.numpy(), tpr)
    np.testing.assert_array_equal(got.thresholds.numpy(), thresholds)


@settings(max_examples=200, deadline=None)
@given(binary())
def test_roc_auc_matches_sklearn_and_the_pairwise_definition(case):
    scores, positives = case
    got = metrics.roc_auc(scores, positives)
    assert got == pytest.approx(skm.roc_auc_score(positives.numpy(), scores.numpy()), abs=1e-12)
    pos, neg = scores[positives], scores[~positives]
    wins = (pos[:, None] > neg[None, :]).double() + 0.5 * (pos[:, None] == neg[None, :]).double()
    assert got == pytest.approx(wins.mean().item(), abs=1e-12)


def test_roc_auc_extremes_and_ties():
    positives = torch.tensor([1, 1, 0, 0])
    assert metrics.roc_auc(torch.tensor([0.9, 0.8, 0.2, 0.1]), positives) == 1.0
    assert metrics.roc_auc(torch.tensor([0.1, 0.2, 0.8, 0.9]), positives) == 0.0
    assert metrics.roc_auc(torch.full((4,), 0.5), positives) == 0.5  # all tied: one diagonal step


@settings(max_examples=60, deadline=None)
@given(classification(min_classes=3, min_per_class=2))
def test_roc_auc_ovr_matches_sklearn(case):
    scores, _, true, c = case
    true[:c] = torch.arange(c)  # every class present
    true[c : 2 * c] = torch.arange(c)  # ... and every class has rest samples
    probabilities = (scores + 0.01) / (scores + 0.01).sum(dim=1, keepdim=True)
    per_class = metrics.roc_auc_ovr(probabilities, true)
    assert per_class.shape == (c,)
    for k in range(c):
        assert per_class[k].item() == pytest.approx(
            skm.roc_auc_score((true == k).numpy(), probabilities[:, k].numpy()), abs=1e-12
        )
    macro = skm.roc_auc_score(true.numpy(), probabilities.numpy(), multi_class="ovr", labels=range(c))
    assert per_class.mean().item() == pytest.approx(macro, abs=1e-12)


def test_auc_of_known_shapes():
    x = torch.tensor([0.0, 0.5, 1.0])
    assert metrics.auc(x, torch.tensor([0.0, 0.5, 1.0])) == 0.5
    assert metrics.auc(x, torch.tensor([1.0, 1.0, 1.0])) == 1.0
    assert metrics.auc(x.flip(0), torch.tensor([1.0, 1.0, 1.0])) == 1.0
    with pytest.raises(ValueError, match="monotonic"):
        metrics.auc(torch.tensor([0.0, 1.0, 0.5]), torch.tensor([0.0, 1.0, 1.0]))


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda: metrics.accuracy([0, 1], torch.tensor([0, 1])), TypeError, "torch tensor"),
        (lambda: metrics.accuracy(torch.tensor([0, 1]), torch.tensor([0.0, 1.0])), TypeError, "integer class"),
        (lambda: metrics.accuracy(torch.tensor([0, 1, 1]), torch.tensor([0, 1])), ValueError, "same length"),
        (lambda: metrics.accuracy(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long)), ValueError, "empty"),
        (lambda: metrics.accuracy(torch.zeros(2, 3, 4), torch.tensor([0, 1])), ValueError, r"\[N, C\]"),
        (lambda: metrics.accuracy(torch.tensor([0, 1]), torch.tensor([[0], [1]])), ValueError, r"shape \[N\]"),
        (lambda: metrics.confusion_matrix(torch.tensor([0, -1]), torch.tensor([0, 1])), ValueError, ">= 0"),
        (lambda: metrics.roc_curve(torch.rand(4), torch.tensor([1, 1, 1, 1])), ValueError, "both positive"),
        (lambda: metrics.roc_curve(torch.rand(4), torch.tensor([0, 1, 2, 1])), ValueError, "only 0 and 1"),
        (lambda: metrics.roc_curve(torch.rand(4, 2), torch.tensor([0, 1, 0, 1])), ValueError, r"shape \[N\]"),
        (lambda: metrics.roc_auc_ovr(torch.rand(4), torch.tensor([0, 1, 0, 1])), ValueError, r"\[N, C\]"),
        (lambda: metrics.roc_auc_ovr(torch.rand(4, 2), torch.tensor([0, 1, 2, 1])), ValueError, "only 2 columns"),
        (lambda: metrics.roc_auc_ovr(torch.rand(4, 3), torch.tensor([0, 1, 0, 1])), ValueError, "class 2 has 0 of 4"),
    ],
)
def test_bad_input_is_explained(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_accuracy_on_device_equals_accuracy_and_stays_a_tensor():
    gen = torch.Generator().manual_seed(3)
    scores, true = torch.randn(257, 5, generator=gen), torch.randint(0, 5, (257,), generator=gen)
    on_device = metrics.accuracy.on_device(scores, true)
    assert isinstance(on_device, torch.Tensor) and on_device.ndim == 0
    assert on_device.item() == metrics.accuracy(scores, true)
    assert metrics.accuracy_on_device(true, true).item() == 1.0
    with pytest.raises(ValueError, match="targets \\[N\\]; got shapes \\(4, 5\\) and \\(3,\\)"):
        metrics.accuracy_on_device(scores[:4], true[:3])
