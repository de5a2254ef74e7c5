"""Figures of the course: training curves, image grids, confusion matrices, ROC curves.

Each function draws one new pyplot figure and returns it (a
``matplotlib.figure.Figure``), so a chapter cell ends with ``plt.show()`` as
for any other plot, and a script can call ``fig.savefig(path)``.

This module draws data and knows nothing of training: :func:`history` takes
any :class:`Records` (a dict, or the :class:`companion.train.History` of a
run), and :mod:`companion.train` builds ``History.plot()`` on it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Protocol, runtime_checkable

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from companion import metrics

WRONG = "tab:red"
"""The colour of what is wrong in a figure, such as a misclassified image's title."""
RIGHT = "black"
"""The colour of what is right in a figure."""


def _new_figure(width: float, height: float) -> Figure:
    """A new, empty pyplot figure of ``width × height`` inches."""
    return plt.figure(figsize=(width, height))


@runtime_checkable
class Records(Protocol):
    """Per-epoch values by name, as :func:`history` reads them.

    A ``dict`` such as ``{"loss": [...], "val_loss": [...]}`` is one; so is
    the :class:`companion.train.History` of a run. ``records[name][e - 1]`` is
    the value after epoch ``e``.
    """

    def keys(self) -> Iterable[str]:
        """The names of the recorded quantities."""

    def __getitem__(self, name: str) -> Sequence[float]: ...


def history(records: Records, names: Sequence[str] | None = None, width: float = 4.5) -> Figure:
    """Training curves: one panel per quantity, the training and (dashed) validation values per epoch.

    Args:
        records: names → per-epoch values (:class:`Records`): a mapping such as
            ``{"loss": [...], "val_loss": [...], "accuracy": [...]}``, or a
            :class:`companion.train.History`.
        names: the quantities to draw (without ``val_``); default: every one recorded.
        width: width of one panel in inches.

    Returns:
        a figure with one axes per quantity, titled by its name, x-axis "epoch".
    """
    if not isinstance(records, Records):
        raise TypeError(f"records must be a non-empty mapping name → values; got {type(records).__name__}")
    table = {key: list(records[key]) for key in records.keys()}
    if not table:
        raise TypeError("records must be a non-empty mapping name → values; got one with no names")
    recorded = list(dict.fromkeys(k.removeprefix("val_") for k in table))
    names = recorded if names is None else list(names)
    missing = [n for n in names if n not in table and f"val_{n}" not in table]
    if missing or not names:
        raise ValueError(f"names must be among {recorded}; got {names}")
    fig = _new_figure(width * len(names), 3.2)
    for i, name in enumerate(names, start=1):
        ax = fig.add_subplot(1, len(names), i)
        for key, label, style in ((name, "train", "-"), (f"val_{name}", "validation", "--")):
            if key in table:
                values = list(table[key])
                ax.plot(range(1, len(values) + 1), values, style, marker=".", label=label)
        ax.set(title=name, xlabel="epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    return fig


def _as_images(images: torch.Tensor) -> torch.Tensor:
    """``[N, H, W]`` or ``[N, H, W, 3]`` images for ``imshow`` from ``[N, H, W]``, ``[N, C, H, W]`` or square ``[N, H·W]``."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch tensor; got {type(images).__name__}")
    images = images.detach().cpu()
    if images.ndim == 2 and math.isqrt(images.shape[1]) ** 2 == images.shape[1]:
        side = math.isqrt(images.shape[1])
        return images.reshape(-1, side, side)
    if images.ndim == 4 and images.shape[1] in (1, 3):
        return images[:, 0] if images.shape[1] == 1 else images.permute(0, 2, 3, 1)
    if images.ndim == 3:
        return images
    raise ValueError(
        f"images must be [N, H, W], [N, 1 or 3, H, W] or flattened square [N, H·W]; got {tuple(images.shape)}"
    )


def image_grid(
    images: torch.Tensor,
    labels: torch.Tensor | Sequence[int] | None = None,
    preds: torch.Tensor | Sequence[int] | None = None,
    ncols: int = 8,
    class_names: Sequence[str] | None = None,
    notes: Sequence[str] | None = None,
) -> Figure:
    """A grid of images, each titled by its label or by the prediction.

    With ``preds``, a title shows the prediction; a wrong one is drawn in red
    (:data:`WRONG`) and adds the true label: ``"7 (true 2)"``.

    Args:
        images: ``[N, H, W]``, ``[N, 1, H, W]``, ``[N, 3, H, W]`` or square ``[N, H·W]``, any real dtype.
        labels: N true class indices, or None.
        preds: N predicted class indices (needs ``labels``), or None.
        ncols: images per row.
        class_names: a name per class index, used in the titles.
        notes: N extra lines, one under each title (e.g. a confidence).

    Returns:
        a figure with exactly N axes, in reading order.
    """
    shown = _as_images(images)
    n = len(shown)
    for name, seq in (("labels", labels), ("preds", preds), ("notes", notes)):
        if seq is not None and len(seq) != n:
            raise ValueError(f"{name} must have one entry per image ({n}); got {len(seq)}")
    if preds is not None and labels is None:
        raise ValueError("preds need labels to tell right from wrong")
    if n == 0:
        raise ValueError("images is empty: nothing to draw")
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    name = (lambda c: class_names[c]) if class_names is not None else str
    fig = _new_figure(1.3 * ncols, 1.5 * nrows + (0.25 * nrows if notes is not None else 0))
    for i in range(n):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        ax.imshow(shown[i].float().numpy(), cmap="gray")
        ax.set_xticks([])
        ax.set_yticks([])
        if labels is None:
            continue
        true = int(labels[i])
        title, colour = name(true), RIGHT
        if preds is not None and int(preds[i]) != true:
            title, colour = f"{name(int(preds[i]))} (true {name(true)})", WRONG
        elif preds is not None:
            title = name(int(preds[i]))
        if notes is not None:
            title += f"\n{notes[i]}"
        ax.set_title(title, color=colour, fontsize=9)
    fig.tight_layout()
    return fig


def confusion_matrix(
    counts: torch.Tensor, class_names: Sequence[str] | None = None, normalize: bool = False, title: str = "confusion matrix"
) -> Figure:
    """A confusion matrix as a heat map with the number (or row share) written in each cell.

    Args:
        counts: ``[C, C]`` counts, true classes in rows and predictions in columns
            (:func:`companion.metrics.confusion_matrix`).
        class_names: C tick labels; default ``0..C-1``.
        normalize: show each row as shares of the true class (the diagonal is then the per-class recall).
        title: the axes title.
    """
    if not isinstance(counts, torch.Tensor) or counts.ndim != 2 or counts.shape[0] != counts.shape[1]:
        shape = tuple(counts.shape) if isinstance(counts, torch.Tensor) else type(counts).__name__
        raise ValueError(f"counts must be a square tensor [C, C]; got {shape}")
    c = counts.shape[0]
    names = list(class_names) if class_names is not None else [str(i) for i in range(c)]
    if len(names) != c:
        raise ValueError(f"class_names must have {c} entries; got {len(names)}")
    values = counts.detach().cpu().double()
    if normalize:
        values = values / values.sum(dim=1, keepdim=True).clamp(min=1)
    fig = _new_figure(0.55 * c + 2.0, 0.5 * c + 1.8)
    ax = fig.add_subplot()
    ax.imshow(values.numpy(), cmap="Blues")
    top = values.max().item() or 1.0
    for i in range(c):
        for j in range(c):
            v = values[i, j].item()
            text = f"{v:.0%}" if normalize else f"{int(v)}"
            ax.text(j, i, text, ha="center", va="center", fontsize=7, color="white" if v > top / 2 else "black")
    ax.set(xticks=range(c), yticks=range(c), xlabel="predicted", ylabel="true", title=title)
    ax.set_xticklabels(names, rotation=45 if max(map(len, names)) > 2 else 0)
    ax.set_yticklabels(names)
    fig.tight_layout()
    return fig


def roc(
    scores: torch.Tensor, targets: torch.Tensor, class_names: Sequence[str] | None = None, title: str = "ROC curve"
) -> Figure:
    """ROC curves with their AUC in the legend, and the diagonal of guessing.

    Args:
        scores: ``[N]`` scores of a binary problem, or ``[N, C]`` class
            probabilities for one-vs-rest curves, one per class.
        targets: ``[N]`` bool/0-1 answers (binary) or class indices (``[N, C]`` scores).
        class_names: C legend names (one-vs-rest); default ``0..C-1``.
        title: the axes title.
    """
    if isinstance(scores, torch.Tensor) and scores.ndim == 1:
        curves, names = [metrics.roc_curve(scores, targets)], ["positive class"]
    else:
        curves = metrics.roc_curves_ovr(scores, targets)
        names = list(class_names) if class_names is not None else [str(c) for c in range(len(curves))]
        if len(names) != len(curves):
            raise ValueError(f"class_names must have {len(curves)} entries; got {len(names)}")
    fig = _new_figure(5.0, 4.5)
    ax = fig.add_subplot()
    for name, curve in zip(names, curves):
        area = metrics.auc(curve.fpr, curve.tpr)
        ax.plot(curve.fpr.numpy(), curve.tpr.numpy(), label=f"{name} (AUC {area:.4f})")
    ax.plot([0, 1], [0, 1], ":", color="grey", label="guessing (AUC 0.5)")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=title, xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


# --- Diagrams of ideas: boxes and arrows ---------------------------------------------------------


def diagram(
    width: float, height: float, panels: int = 1, xlim: tuple[float, float] = (0, 10), ylim: tuple[float, float] = (0, 10)
) -> tuple[Figure, list]:
    """An empty canvas for a drawing: ``panels`` side by side, no axes, equal units in x and y.

    Args:
        width, height: the figure's size in inches.
        panels: how many drawings side by side.
        xlim, ylim: the coordinates each panel spans; :func:`box` and :func:`arrow` draw in them.

    Returns:
        the figure and the list of its ``panels`` axes (``matplotlib.axes.Axes``).
    """
    if not isinstance(panels, int) or panels < 1:
        raise ValueError(f"panels must be a positive integer; got {panels!r}")
    if xlim[1] <= xlim[0] or ylim[1] <= ylim[0]:
        raise ValueError(f"xlim and ylim must be increasing pairs; got {xlim} and {ylim}")
    fig = _new_figure(width, height)
    axes = fig.subplots(1, panels, squeeze=False)[0].tolist()
    for ax in axes:
        ax.set(xlim=xlim, ylim=ylim, aspect="equal")
        ax.axis("off")
    return fig, axes


def box(
    ax,
    center: tuple[float, float],
    text: str,
    size: tuple[float, float] = (2.0, 0.8),
    color: str = "white",
    fontsize: float = 9,
):
    """A rounded box of ``size = (width, height)`` centred at ``center``, with ``text`` in its middle.

    Returns:
        the box, a ``matplotlib.patches.FancyBboxPatch`` whose ``get_x()``, ``get_y()``,
        ``get_width()`` and ``get_height()`` give its lower-left corner and size.
    """
    from matplotlib.patches import FancyBboxPatch

    (x, y), (w, h) = center, size
    if w <= 0 or h <= 0:
        raise ValueError(f"a box needs a positive width and height; got {size}")
    patch = FancyBboxPatch(
        (x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0,rounding_size=0.1", facecolor=color, edgecolor="black"
    )
    ax.add_patch(patch)
    ax.text(x, y, text, ha="center", va="center", fontsize=fontsize)
    return patch


def arrow(
    ax,
    start: tuple[float, float],
    end: tuple[float, float],
    text: str = "",
    color: str = "black",
    width: float = 1.2,
    both: bool = False,
    fontsize: float = 8,
):
    """An arrow from ``start`` to ``end`` (both ends when ``both``), of line ``width`` points,
    with ``text`` written beside its middle.

    Returns:
        the arrow, a ``matplotlib.text.Annotation``.
    """
    if width <= 0:
        raise ValueError(f"an arrow needs a positive width; got {width}")
    style = "<|-|>" if both else "-|>"
    props = dict(arrowstyle=style, color=color, lw=width, shrinkA=0, shrinkB=0, mutation_scale=8 + 2 * width)
    note = ax.annotate("", xy=end, xytext=start, arrowprops=props)
    if text:
        middle = ((start[0] + end[0]) / 2, (start[1] + end[1]) / 2)
        ax.annotate(text, middle, xytext=(4, 0), textcoords="offset points", fontsize=fontsize, va="center", color=color)
    return note
