"""Tests of the diagnostics: gradient checks against finite differences,
per-layer statistics recorded during fit, model summaries, and where a
divergence began (epoch, batch and layer).
"""

from __future__ import annotations

import logging
import re

import bprop
import numpy as np
import pytest
from bprop import _core, diagnostics

# ----------------------------------------------------------------------
# gradcheck
# ----------------------------------------------------------------------


def _targets(loss, rng, n, units):
    if loss == "cross_entropy":
        return rng.integers(0, units, n)
    if loss == "binary_cross_entropy":
        return (rng.random((n, units)) > 0.5).astype(float)
    if loss == "poisson":
        return rng.poisson(2.0, size=(n, units)).astype(float)
    return rng.normal(size=(n, units))


LOSSES = [name for name in ("mse", "cross_entropy", "binary_cross_entropy", "mae", "huber",
                            "poisson") if name in _core.LOSSES]


@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "relu"])
@pytest.mark.parametrize("loss", LOSSES)
def test_gradcheck_passes_on_correct_models(loss, activation):
    rng = np.random.default_rng(5)
    X = rng.normal(size=(96, 5))
    y = _targets(loss, rng, 96, 3)
    for seed in range(2):
        model = bprop.Sequential(
            [bprop.Dense(7, activation=activation), bprop.Dense(6, activation=activation),
             bprop.Dense(3)], n_inputs=5, seed=seed,
        )
        model.build(5, loss)
        errors = bprop.gradcheck(model, X, y, details=True)
        assert sorted(errors) == [0, 1, 2]
        for layer, result in errors.items():
            assert result["error"] < 1e-3, (loss, activation, seed, layer, result)
            assert result["checked"] >= 0.9 * (result["checked"] + result["skipped"])


def test_gradcheck_samples_large_layers_and_leaves_the_model_alone():
    X, y = bprop.datasets.load_digits()
    X = (X - X.mean(axis=0)) / (X.std(axis=0) + 1e-9)
    model = bprop.Sequential([bprop.Dense(64, activation="relu"), bprop.Dense(10)], seed=0)
    model.fit(X, y, loss="cross_entropy", epochs=2, seed=0)
    before = model.get_weights()
    errors = bprop.gradcheck(model, X, y, max_params=40, details=True)
    assert [e["checked"] + e["skipped"] for e in errors.values()] == [40, 40]
    assert max(e["error"] for e in errors.values()) < 1e-3
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


def test_gradcheck_builds_an_unbuilt_model():
    rng = np.random.default_rng(0)
    model = bprop.Sequential([bprop.Dense(4, activation="tanh"), bprop.Dense(1)], seed=3)
    errors = bprop.gradcheck(model, rng.normal(size=(20, 2)), rng.normal(size=20))
    assert model.built and model.n_inputs == 2 and max(errors.values()) < 1e-3


@pytest.mark.parametrize("wrong", ["scaled layer", "one entry", "transposed"])
def test_gradcheck_detects_a_wrong_gradient(monkeypatch, wrong):
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(64, 4)), rng.integers(0, 3, 64)
    model = bprop.Sequential([bprop.Dense(5, activation="tanh"), bprop.Dense(3)], seed=2)
    model.build(4, "cross_entropy")
    (_, _, w0, _), (units, _, w1, b1) = model._net.layers()
    right = diagnostics.backprop_gradient

    def broken(net, x, targets):
        grads = right(net, x, targets)
        if wrong == "scaled layer":
            grads[w1:b1 + units] *= 1.01
        elif wrong == "one entry":
            grads[w1 + 7] += 0.05 * np.abs(grads[w1:b1 + units]).max()
        else:
            block = grads[w0:w0 + 4 * 5].reshape(4, 5)
            grads[w0:w0 + 20] = block[::-1].ravel()
        return grads

    monkeypatch.setattr(diagnostics, "backprop_gradient", broken)
    errors = bprop.gradcheck(model, X, y)
    bad = 0 if wrong == "transposed" else 1
    assert errors[bad] > 5e-3
    assert errors[1 - bad] < 1e-3


def test_gradcheck_rejects_bad_arguments():
    model = bprop.Sequential([bprop.Dense(2)], n_inputs=3)
    with pytest.raises(ValueError, match=r"eps must be a number in \(0, 1\)"):
        bprop.gradcheck(model, np.zeros((4, 3)), np.zeros((4, 2)), eps=2.0)
    with pytest.raises(ValueError, match="X has 4 rows but y has 3"):
        bprop.gradcheck(model, np.zeros((4, 3)), np.zeros((3, 2)))


# ----------------------------------------------------------------------
# Per-layer statistics
# ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits():
    X, y = bprop.datasets.load_digits()
    return (X - X.mean(axis=0)) / (X.std(axis=0) + 1e-9), y


def test_fit_records_per_layer_diagnostics(digits):
    X, y = digits
    model = bprop.Sequential(
        [bprop.Dense(32, activation="relu"), bprop.Dense(16, activation="tanh"),
         bprop.Dense(10)], seed=0,
    )
    history = model.fit(X, y, loss="cross_entropy", epochs=4, seed=0, diagnostics=True,
                        optimizer=bprop.SGD(lr=0.05, momentum=0.9))
    assert sorted(history.diagnostics) == sorted(diagnostics.LAYER_STATS)
    for name, rows in history.diagnostics.items():
        assert np.array(rows).shape == (4, 3), name
    grad = np.array(history.diagnostics["grad_norm"])
    ratio = np.array(history.diagnostics["update_ratio"])
    assert np.all(np.isfinite(grad)) and np.all(grad > 0)
    assert np.all((ratio > 1e-5) & (ratio < 1.0))
    # Weight norms are those of the final weights.
    weights = model.get_weights()[::2]
    np.testing.assert_allclose(history.diagnostics["weight_norm"][-1],
                               [np.linalg.norm(w.astype(np.float64)) for w in weights],
                               rtol=1e-6)
    dead = np.array(history.diagnostics["dead_relu"])
    assert np.all((dead[:, 0] >= 0) & (dead[:, 0] <= 1)) and np.all(np.isnan(dead[:, 1:]))
    # The history keys are unchanged by diagnostics.
    assert sorted(history.history) == ["accuracy", "loss", "lr"]


def test_update_ratio_and_gradient_norm_of_plain_gradient_descent():
    """One batch per epoch and no momentum: each update is lr times the
    gradient, so update_ratio = lr * grad_norm / |W before|."""
    rng = np.random.default_rng(4)
    X, y = rng.normal(size=(50, 3)), rng.normal(size=(50, 2))
    model = bprop.Sequential([bprop.Dense(4, activation="tanh"), bprop.Dense(2)], seed=1)
    model.build(3, "mse")
    before = model.get_weights()[::2]
    start = model._net.clone()
    history = model.fit(X, y, epochs=1, batch_size=None, optimizer=bprop.SGD(lr=0.1),
                        diagnostics=True)

    grads = diagnostics.backprop_gradient(start, model._check_x(X),
                                          model._check_y(y, model.loss))
    n_in, expected = 3, []
    for units, _, w_off, _ in model._net.layers():
        expected.append(np.linalg.norm(grads[w_off:w_off + n_in * units]))
        n_in = units
    np.testing.assert_allclose(history.diagnostics["grad_norm"][0], expected, rtol=1e-6)
    w_norms = [np.linalg.norm(w.astype(np.float64)) for w in before]
    np.testing.assert_allclose(history.diagnostics["update_ratio"][0],
                               0.1 * np.array(expected) / w_norms, rtol=1e-4)


def test_gradient_monitor_reports_dead_relus_and_vanishing_gradients(digits, caplog):
    X, y = digits
    model = bprop.Sequential([bprop.Dense(16, activation="relu"), bprop.Dense(10)], seed=0)
    model.build(64, "cross_entropy")
    weights = model.get_weights()
    weights[1][:] = -1000.0  # every hidden unit outputs 0 for every row
    model.set_weights(weights)

    monitor = bprop.GradientMonitor(vanishing=1e-7)
    with caplog.at_level(logging.WARNING, logger="bprop"):
        model.fit(X, y, epochs=2, seed=0, callbacks=[monitor])
    assert monitor.history["dead_relu"] == [[1.0, pytest.approx(np.nan, nan_ok=True)]] * 2
    assert monitor.history["grad_norm"][0][0] == 0.0
    assert "epoch 1, layer 1: gradient norm 0 is below 1e-07: it vanishes" in monitor.warnings
    assert any("it vanishes" in record.message for record in caplog.records)
    # The History holds them too.
    assert model.history.diagnostics == monitor.history

    exploding = bprop.GradientMonitor(vanishing=0.0, exploding=1e-9)
    bprop.Sequential([bprop.Dense(4, activation="tanh"), bprop.Dense(10)], seed=0).fit(
        X, y, loss="cross_entropy", epochs=1, callbacks=[exploding])
    assert len(exploding.warnings) == 2 and all("explodes" in w for w in exploding.warnings)
    with pytest.raises(ValueError, match="need 0 <= vanishing < exploding"):
        bprop.GradientMonitor(vanishing=1.0, exploding=0.5)


# ----------------------------------------------------------------------
# summary
# ----------------------------------------------------------------------


def test_summary_lists_layers_shapes_and_parameter_counts():
    model = bprop.Sequential(
        [bprop.Dense(64, activation="relu"), bprop.Dense(10, activation="softmax")],
        n_inputs=20,
    )
    printed = []
    text = model.summary(print_fn=printed.append)
    assert printed == [text]
    lines = text.splitlines()
    assert lines[0] == "Sequential: inputs (None, 20), loss cross_entropy"
    assert re.search(r"1: Dense\(64, activation='relu'\)\s+\(None, 64\)\s+1344$", text, re.M)
    assert re.search(r"2: Dense\(10, activation='softmax'\)\s+\(None, 10\)\s+650$", text, re.M)
    assert lines[-1] == f"total parameters: {model.n_params}" == "total parameters: 1994"


def test_summary_of_an_unbuilt_model_shows_unknown_counts(capsys):
    model = bprop.Sequential([bprop.Dense(8, activation="tanh"), bprop.Dense(1)])
    text = model.summary()
    assert capsys.readouterr().out == text + "\n"
    assert "inputs unknown until built, loss chosen at fit" in text
    assert len(re.findall(r"\(None, \d+\)\s+\?$", text, re.M)) == 2
    assert text.endswith("total parameters: ?")
    assert model.summary(print_fn=None) == text


# ----------------------------------------------------------------------
# Where training diverged
# ----------------------------------------------------------------------

_SITE = re.compile(
    r"training diverged in epoch (\d+), (?:after its last )?batch (?:\()?(\d+) of (\d+)\)?, "
    r"layer (\d+) of (\d+) \((Dense\([^)]*\))\)"
)


def _divergence(model, X, y, **fit):
    with pytest.raises(bprop.DivergenceError) as info:
        model.fit(X, y, **fit)
    message = str(info.value)
    match = _SITE.search(message)
    assert match, message
    epoch, batch, batches, layer, layers = (int(g) for g in match.groups()[:5])
    exc = info.value
    assert (exc.epoch, exc.batch, exc.layer) == (epoch - 1, batch - 1, layer - 1)
    assert layers == len(model.layers) and match.group(6) == repr(model.layers[layer - 1])
    assert all(np.isfinite(w).all() for w in model.get_weights())
    return exc, message, batches


def test_a_non_finite_loss_names_its_epoch_batch_and_layer():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 3))
    y = 1000.0 * X @ np.array([1.0, -2.0, 0.5]) + 500.0
    model = bprop.Sequential(
        [bprop.Dense(16, activation="relu"), bprop.Dense(8, activation="relu"), bprop.Dense(1)],
        seed=0,
    )
    exc, message, batches = _divergence(model, X, y, loss="mse",
                                        optimizer=bprop.SGD(lr=0.1), batch_size=8, epochs=10,
                                        seed=0)
    assert batches == 8
    assert "the update made its weights or momentum NaN or infinite" in message
    assert "the loss was nan in the next batch" in message

    # Stopping right after that update leaves bad weights behind, which
    # the check after the epoch sees and a replay of the epoch names alike.
    assert exc.epoch == 0
    twin = bprop.Sequential(
        [bprop.Dense(16, activation="relu"), bprop.Dense(8, activation="relu"), bprop.Dense(1)],
        seed=0,
    )
    again, replayed, _ = _divergence(twin, X, y, loss="mse", optimizer=bprop.SGD(lr=0.1),
                                     batch_size=8, epochs=1, seed=0,
                                     callbacks=[_StopAfter(exc.batch)])
    assert (again.epoch, again.batch, again.layer) == (exc.epoch, exc.batch, exc.layer)
    assert "the loss was" not in replayed


class _StopAfter(bprop.Callback):
    def __init__(self, batch):
        self.batch = batch

    def on_batch_end(self, batch, logs=None):
        if batch == self.batch:
            self.model.stop_training = True


def test_an_output_overflow_with_finite_weights_names_the_layer():
    # Weights fine, one huge input row: the first layer's outputs overflow.
    rng = np.random.default_rng(0)
    X = rng.normal(size=(32, 3))
    X[21] = 3e38
    model = bprop.Sequential([bprop.Dense(4, activation="relu"), bprop.Dense(2)], seed=0)
    exc, message, batches = _divergence(model, X, rng.normal(size=(32, 2)), loss="mse",
                                        batch_size=8, shuffle=False, epochs=2, seed=0)
    assert (exc.epoch, exc.batch, exc.layer, batches) == (0, 2, 0, 4)
    assert "its output was the first to overflow to NaN or infinity" in message


def test_weights_that_overflow_under_a_finite_loss_are_found_by_replaying_the_epoch():
    # An L2 step of lr * l2 = 10 flips and grows the weights ninefold per
    # update until they overflow, while saturated tanh units keep the
    # loss finite: only the check after the epoch sees it.
    rng = np.random.default_rng(0)
    X = rng.uniform(0.5, 1.0, size=(64, 1))
    y = rng.uniform(-0.5, 0.5, size=64)
    model = bprop.Sequential(
        [bprop.Dense(3, activation="tanh"), bprop.Dense(1, activation="tanh")], seed=0
    )
    exc, message, batches = _divergence(model, X, y, loss="mse",
                                        optimizer=bprop.SGD(lr=1.0, l2=10.0), batch_size=None,
                                        epochs=100, seed=0)
    assert batches == 1 and exc.layer == 0
    assert "its gradient was finite, so the step was too large" in message
    assert model._epochs_done == exc.epoch


def test_outputs_that_overflow_on_the_validation_rows_name_the_layer():
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(40, 3)), rng.normal(size=40)
    model = bprop.Sequential([bprop.Dense(4, activation="relu"), bprop.Dense(1)], seed=0)
    exc, message, batches = _divergence(
        model, X, y, loss="mse", epochs=2, batch_size=20,
        validation_data=(np.full((5, 3), 3e38), y[:5]),
    )
    assert (exc.epoch, exc.batch, exc.layer, batches) == (0, 1, 0, 2)
    assert "after its last batch (2 of 2)" in message
    assert "the outputs on the validation rows overflowed" in message
