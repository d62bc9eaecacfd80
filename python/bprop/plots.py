"""Training curves: loss, metric, learning rate and per-layer gradient
statistics over the epochs of a fit, as an image file.

Needs matplotlib (``pip install "bprop[plot]"``).

Design decisions:
- Figures are drawn on matplotlib's Agg canvas directly, without pyplot,
  so plotting never changes the caller's backend or global state and
  works without a display.
- One panel per quantity, each drawn only when the history holds it:
  the learning rate only when it changed, the gradient panels only after
  ``fit(..., diagnostics=True)``.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from .callbacks import History


def _matplotlib() -> tuple[Any, Any]:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError(
            'plots need matplotlib: pip install "bprop[plot]" (or pip install matplotlib)'
        ) from exc
    return Figure, FigureCanvasAgg


def _curves(ax: Any, epochs: np.ndarray, history: History, names: list[str]) -> None:
    for name in names:
        if name in history.history:
            ax.plot(epochs, history.history[name], marker="." if len(epochs) < 30 else None,
                    label=name)
    ax.legend(loc="best", fontsize="small")
    ax.grid(True, alpha=0.3)


def _per_layer(ax: Any, epochs: np.ndarray, rows: list[list[float]], title: str) -> None:
    values = np.array(rows, dtype=np.float64)
    for layer in range(values.shape[1]):
        ax.plot(epochs, values[:, layer], label=f"layer {layer + 1}")
    if np.all(values[np.isfinite(values)] > 0):
        ax.set_yscale("log")
    ax.set_title(title, fontsize="medium")
    ax.legend(loc="best", fontsize="small")
    ax.grid(True, alpha=0.3)


def plot_history(
    history: History, path: str | os.PathLike[str] | None = None, title: str | None = None
) -> Any:
    """Draws the curves of a fit's History and returns the matplotlib Figure.

    Panels: the training and validation loss; the training and
    validation metric (accuracy or R^2); the learning rate, when it
    changed; and, when the history has diagnostics, each layer's gradient
    norm and update-to-weight ratio on log scales. With `path` the figure
    is saved there, in the format its extension names (.png, .svg, .pdf).

    Raises ValueError for a history without epochs and ImportError
    without matplotlib.
    """
    if not isinstance(history, History):
        raise ValueError(f"expected a bprop.History, got {type(history).__name__}")
    if len(history) == 0:
        raise ValueError("the history has no epochs to plot")
    Figure, FigureCanvasAgg = _matplotlib()

    epochs = np.arange(1, len(history) + 1)
    metric = next((m for m in ("accuracy", "r2") if m in history or f"val_{m}" in history),
                  None)
    lr = history.history.get("lr", [])
    panels = ["loss"]
    if metric is not None:
        panels.append("metric")
    if len(set(lr)) > 1:
        panels.append("lr")
    if "grad_norm" in history.diagnostics:
        panels += ["grad_norm", "update_ratio"]

    columns = 2 if len(panels) > 1 else 1
    rows = (len(panels) + columns - 1) // columns
    figure = Figure(figsize=(6.0 * columns, 3.6 * rows), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for ax, panel in zip(axes, panels):
        if panel == "loss":
            _curves(ax, epochs, history, ["loss", "val_loss"])
            ax.set_title("loss", fontsize="medium")
            losses = [v for k in ("loss", "val_loss") for v in history.history.get(k, [])]
            if min(losses) > 0 and max(losses) > 50 * min(losses):
                ax.set_yscale("log")
        elif panel == "metric":
            _curves(ax, epochs, history, [metric, f"val_{metric}"])
            ax.set_title(metric, fontsize="medium")
        elif panel == "lr":
            _curves(ax, epochs, history, ["lr"])
            ax.set_title("learning rate", fontsize="medium")
        else:
            label = "gradient norm" if panel == "grad_norm" else "update / weight ratio"
            _per_layer(ax, epochs, history.diagnostics[panel], label)
        ax.set_xlabel("epoch")
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    if title:
        figure.suptitle(title)
    if path is not None:
        figure.savefig(os.fspath(path), dpi=100)
    return figure
