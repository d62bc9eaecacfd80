"""Tests of the training curves (bprop.plots) and ``bprop train --plot``."""

from __future__ import annotations

import bprop
import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")

from bprop import plots  # noqa: E402
from bprop.cli import main  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_size(path):
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, "not a PNG file"
    # The IHDR chunk holds the width and height, big-endian.
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def _visible_titles(figure):
    return [ax.get_title() for ax in figure.axes if ax.get_visible()]


@pytest.fixture(scope="module")
def digits_history():
    X, y = bprop.datasets.load_digits()
    X = (X - X.mean(axis=0)) / (X.std(axis=0) + 1e-9)
    model = bprop.Sequential(
        [bprop.Dense(32, activation="relu"), bprop.Dense(16, activation="tanh"),
         bprop.Dense(10)], seed=0,
    )
    return model.fit(X, y, loss="cross_entropy", epochs=6, seed=0, validation_split=0.2,
                     diagnostics=True)


def test_plot_history_writes_a_png_with_every_panel(digits_history, tmp_path):
    path = tmp_path / "curves.png"
    figure = plots.plot_history(digits_history, path, title="digits")
    assert path.stat().st_size > 20_000
    width, height = _png_size(path)
    assert (width, height) == (1200, 720)
    assert _visible_titles(figure) == [
        "loss", "accuracy", "gradient norm", "update / weight ratio",
    ]
    loss_axis = figure.axes[0]
    labels = [line.get_label() for line in loss_axis.get_lines()]
    assert labels == ["loss", "val_loss"]
    np.testing.assert_allclose(loss_axis.get_lines()[0].get_ydata(), digits_history["loss"])
    gradient_axis = figure.axes[2]
    assert len(gradient_axis.get_lines()) == 3 and gradient_axis.get_yscale() == "log"


def test_plot_history_without_diagnostics_or_validation(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, 3))
    history = bprop.Sequential([bprop.Dense(1)], seed=0).fit(X, X @ [1.0, 2.0, 3.0],
                                                              loss="mse", epochs=5)
    figure = plots.plot_history(history, tmp_path / "r2.svg")
    assert (tmp_path / "r2.svg").read_text().lstrip().startswith("<?xml")
    assert _visible_titles(figure) == ["loss", "r2"]
    assert [line.get_label() for line in figure.axes[1].get_lines()] == ["r2"]


def test_a_changing_learning_rate_gets_its_own_panel():
    history = bprop.History()
    for epoch, lr in enumerate([0.1, 0.05, 0.025]):
        history.record(epoch, {"loss": 1.0 / (epoch + 1), "lr": lr})
    figure = plots.plot_history(history)
    assert _visible_titles(figure) == ["loss", "learning rate"]


def test_plot_history_rejects_what_it_cannot_draw():
    with pytest.raises(ValueError, match="the history has no epochs to plot"):
        plots.plot_history(bprop.History())
    with pytest.raises(ValueError, match="expected a bprop.History, got dict"):
        plots.plot_history({"loss": [1.0]})


def test_cli_train_writes_the_plot(tmp_path, capsys):
    path = tmp_path / "train.png"
    assert main(["train", "--epochs", "4", "--quiet", "--plot", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"curves written to {path}" in out
    assert path.stat().st_size > 20_000 and _png_size(path)[0] == 1200


def test_cli_plot_to_a_missing_folder_fails_cleanly(tmp_path, capsys):
    path = tmp_path / "missing" / "train.png"
    with pytest.raises(SystemExit, match="--plot: cannot write"):
        main(["train", "--epochs", "1", "--quiet", "--plot", str(path)])
