"""companion.plot: what each figure draws (Agg backend, no display)."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.colors import to_rgba  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from companion import metrics, plot  # noqa: E402
from companion.train import History  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_history_draws_one_panel_per_quantity_with_train_and_val():
    records = {"loss": [1.0, 0.5, 0.25], "accuracy": [0.5, 0.7, 0.9], "val_loss": [1.1, 0.7, 0.8], "val_accuracy": [0.4, 0.6, 0.7]}
    fig = plot.history(records)
    assert isinstance(fig, Figure)
    assert [ax.get_title() for ax in fig.axes] == ["loss", "accuracy"]
    loss_ax = fig.axes[0]
    assert [line.get_label() for line in loss_ax.get_lines()] == ["train", "validation"]
    train, val = loss_ax.get_lines()
    assert list(train.get_xdata()) == [1, 2, 3] and list(train.get_ydata()) == [1.0, 0.5, 0.25]
    assert list(val.get_ydata()) == [1.1, 0.7, 0.8] and val.get_linestyle() == "--"
    assert loss_ax.get_xlabel() == "epoch"


def test_history_accepts_a_history_and_a_selection():
    history = History()
    history.append({"loss": 2.0, "accuracy": 0.1})
    history.append({"loss": 1.0, "accuracy": 0.3})
    fig = plot.history(history, names=["accuracy"])
    assert len(fig.axes) == 1 and fig.axes[0].get_title() == "accuracy"
    assert len(fig.axes[0].get_lines()) == 1  # no validation data: one curve
    with pytest.raises(ValueError, match="names must be among"):
        plot.history(history, names=["f1"])
    with pytest.raises(TypeError, match="non-empty mapping"):
        plot.history({})


def test_history_reads_anything_with_keys_and_getitem():
    class Log:  # neither a dict nor a History: only the two methods plot.history reads
        def keys(self):
            return ["loss"]

        def __getitem__(self, name):
            return [3.0, 2.0, 1.0]

    fig = plot.history(Log())
    assert list(fig.axes[0].get_lines()[0].get_ydata()) == [3.0, 2.0, 1.0]
    with pytest.raises(TypeError, match="non-empty mapping"):
        plot.history([1.0, 2.0])


def test_plot_depends_on_nothing_of_train_and_train_draws_with_plot():
    """One-way: companion.train uses companion.plot; companion.plot imports nothing of train."""
    import ast
    import subprocess
    import sys
    from pathlib import Path

    import companion.train

    tree = ast.parse(Path(plot.__file__).read_text(encoding="utf-8"))
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {
        f"{n.module}.{a.name}" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names
    }
    assert not any(name.startswith("companion.train") for name in imported), imported
    assert companion.train.plot is plot  # imported at module level
    code = "import sys, companion.plot; print('companion.train' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "False", done.stderr


def test_each_call_makes_a_new_current_pyplot_figure():
    before = len(plt.get_fignums())
    fig = plot.history({"loss": [1.0, 0.5]})
    assert plt.gcf() is fig  # so that plt.show() displays it
    grid = plot.image_grid(torch.rand(2, 5, 5))
    assert plt.gcf() is grid and len(plt.get_fignums()) == before + 2


def test_image_grid_has_one_axes_per_image_titled_by_label():
    images = torch.randint(0, 256, (10, 28, 28), dtype=torch.uint8)
    labels = torch.arange(10)
    fig = plot.image_grid(images, labels, ncols=4)
    assert len(fig.axes) == 10
    assert [ax.get_title() for ax in fig.axes] == [str(i) for i in range(10)]
    assert fig.axes[0].get_images()[0].get_array().shape == (28, 28)
    assert fig.axes[4].get_subplotspec().rowspan.start == 1  # the fifth image starts row 2


def test_image_grid_marks_wrong_predictions_in_red():
    labels = torch.tensor([3, 1, 4, 1])
    preds = torch.tensor([3, 7, 4, 2])
    fig = plot.image_grid(torch.rand(4, 784), labels, preds, notes=["99%", "51%", "80%", "60%"])
    titles = [ax.title for ax in fig.axes]
    assert [t.get_text() for t in titles] == ["3\n99%", "7 (true 1)\n51%", "4\n80%", "2 (true 1)\n60%"]
    colours = [to_rgba(t.get_color()) for t in titles]
    assert colours == [to_rgba(c) for c in (plot.RIGHT, plot.WRONG, plot.RIGHT, plot.WRONG)]


def test_image_grid_shapes_and_class_names():
    fig = plot.image_grid(torch.rand(3, 3, 8, 8), [0, 1, 0], class_names=["cat", "dog"])
    assert [ax.get_title() for ax in fig.axes] == ["cat", "dog", "cat"]
    assert fig.axes[0].get_images()[0].get_array().shape == (8, 8, 3)
    assert len(plot.image_grid(torch.rand(2, 1, 8, 8)).axes) == 2


@pytest.mark.parametrize(
    "args, kwargs, error, message",
    [
        ((torch.rand(3, 10),), {}, ValueError, "flattened square"),
        ((torch.rand(3, 8, 8), [0, 1]), {}, ValueError, "one entry per image"),
        ((torch.rand(3, 8, 8),), {"preds": [0, 1, 2]}, ValueError, "need labels"),
        ((torch.rand(0, 8, 8),), {}, ValueError, "empty"),
        (([[0.0]],), {}, TypeError, "torch tensor"),
    ],
)
def test_image_grid_bad_input(args, kwargs, error, message):
    with pytest.raises(error, match=message):
        plot.image_grid(*args, **kwargs)


def test_confusion_matrix_writes_every_count():
    counts = metrics.confusion_matrix(torch.tensor([0, 1, 1, 2, 2, 2]), torch.tensor([0, 1, 2, 2, 2, 1]))
    fig = plot.confusion_matrix(counts, class_names=["a", "b", "c"])
    (ax,) = fig.axes
    cells = [t.get_text() for t in ax.texts]
    assert cells == [str(int(v)) for v in counts.flatten()]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "c"]
    assert ax.get_xlabel() == "predicted" and ax.get_ylabel() == "true"
    shares = plot.confusion_matrix(counts, normalize=True).axes[0].texts
    assert [t.get_text() for t in shares[3:6]] == ["0%", "50%", "50%"]  # row of class 1: 2 samples
    with pytest.raises(ValueError, match=r"square tensor \[C, C\]"):
        plot.confusion_matrix(torch.zeros(2, 3))


def test_roc_draws_a_curve_per_class_with_its_auc():
    gen = torch.Generator().manual_seed(0)
    targets = torch.arange(60) % 3
    scores = (torch.nn.functional.one_hot(targets, 3) + torch.rand(60, 3, generator=gen)).softmax(dim=1)
    fig = plot.roc(scores, targets, class_names=["x", "y", "z"])
    (ax,) = fig.axes
    lines = ax.get_lines()
    assert len(lines) == 4  # three classes and the diagonal
    areas = metrics.roc_auc_ovr(scores, targets)
    assert [line.get_label() for line in lines[:3]] == [f"{n} (AUC {a:.4f})" for n, a in zip("xyz", areas.tolist())]
    curve = metrics.roc_curves_ovr(scores, targets)[1]
    assert list(lines[1].get_xdata()) == curve.fpr.tolist()


def test_roc_of_a_binary_score_draws_one_curve():
    fig = plot.roc(torch.tensor([0.1, 0.4, 0.35, 0.8]), torch.tensor([0, 0, 1, 1]))
    lines = fig.axes[0].get_lines()
    assert len(lines) == 2 and lines[0].get_label() == "positive class (AUC 0.7500)"


def test_diagram_gives_empty_panels_of_the_asked_coordinates():
    fig, axes = plot.diagram(6, 2, panels=3, xlim=(0, 4), ylim=(0, 2))
    assert isinstance(fig, Figure) and len(axes) == 3 == len(fig.axes)
    assert all(ax.get_xlim() == (0, 4) and ax.get_ylim() == (0, 2) and not ax.axison for ax in axes)
    with pytest.raises(ValueError, match="panels"):
        plot.diagram(6, 2, panels=0)
    with pytest.raises(ValueError, match="increasing"):
        plot.diagram(6, 2, xlim=(1, 0))


def test_box_is_centred_on_its_point_and_holds_its_text():
    _, (ax,) = plot.diagram(4, 4)
    patch = plot.box(ax, (5, 3), "attention", size=(2, 1), color="tab:blue")
    assert (patch.get_x(), patch.get_y(), patch.get_width(), patch.get_height()) == (4, 2.5, 2, 1)
    assert patch.get_facecolor() == to_rgba("tab:blue")
    assert [t.get_text() for t in ax.texts] == ["attention"] and ax.texts[0].get_position() == (5, 3)
    with pytest.raises(ValueError, match="positive"):
        plot.box(ax, (0, 0), "x", size=(0, 1))


def test_arrow_runs_from_start_to_end_with_its_label_beside_the_middle():
    _, (ax,) = plot.diagram(4, 4)
    note = plot.arrow(ax, (1, 1), (3, 5), text="all-reduce", both=True)
    assert note.xy == (3, 5) and note.xyann == (1, 1)
    assert type(note.arrow_patch.get_arrowstyle()).__name__ == "CurveFilledAB"  # a head at each end
    label = ax.texts[-1]
    assert label.get_text() == "all-reduce" and label.xy == (2, 3)
    one_way = plot.arrow(ax, (0, 0), (1, 0))
    assert type(one_way.arrow_patch.get_arrowstyle()).__name__ == "CurveFilledB"
    assert ax.texts[-1] is one_way  # no label: only the arrow
    with pytest.raises(ValueError, match="positive"):
        plot.arrow(ax, (0, 0), (1, 1), width=0)
