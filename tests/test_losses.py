"""Losses: every loss and option against a float64 NumPy reference at
every SIMD level, gradients against the analytic form and central
differences, per-sample weights, extreme inputs, the Python API by name
and as objects, what models keep of them, and a small training run per
loss on bundled data.
"""

from __future__ import annotations

import pickle

import bprop
import numpy as np
import pytest
from bprop import _core
from bprop import kernels as K
from bprop import losses as L

BEST = _core.simd_best()
LEVELS = _core.SIMD_LEVELS[: _core.SIMD_LEVELS.index(BEST) + 1]


@pytest.fixture(params=LEVELS)
def simd(request):
    previous = _core.simd_level()
    _core.simd_set(request.param)
    yield request.param
    _core.simd_set(previous)


def _softplus(z):
    return np.logaddexp(0.0, z)


def loss64(loss: L.Loss, z, target, weights=None):
    """(mean loss, gradient) in float64, as bprop.losses documents them."""
    z = np.asarray(z, np.float64)
    rows, cols = z.shape
    w = np.ones(rows) if weights is None else np.asarray(weights, np.float64)
    if isinstance(loss, L.CrossEntropy):
        target = np.asarray(target)
        p = np.eye(cols)[target] if target.ndim == 1 else target.astype(np.float64)
        # The options as the C core keeps them, in float32.
        s = float(np.float32(loss.label_smoothing))
        c = loss.class_weights(cols)
        q = ((1 - s) * p + s / cols) * (1.0 if c is None else c.astype(np.float64))
        shifted = z - z.max(axis=1, keepdims=True)
        log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        row = -(q * log_p).sum(axis=1)
        grad = q.sum(axis=1, keepdims=True) * np.exp(log_p) - q
        return (w * row).sum() / rows, w[:, None] * grad / rows
    t = np.asarray(target, np.float64).reshape(rows, cols)
    d = z - t
    if isinstance(loss, L.MeanSquaredError):
        value, grad = d * d, 2 * d
    elif isinstance(loss, L.MeanAbsoluteError):
        value, grad = np.abs(d), np.sign(d)
    elif isinstance(loss, L.Huber):
        delta = float(np.float32(loss.delta))
        small = np.abs(d) <= delta
        value = np.where(small, 0.5 * d * d, delta * (np.abs(d) - 0.5 * delta))
        grad = np.where(small, d, delta * np.sign(d))
    elif isinstance(loss, L.Poisson):
        value, grad = np.exp(z) - t * z, np.exp(z) - t
    else:
        pw = float(np.float32(loss.pos_weight))
        value = pw * t * _softplus(-z) + (1 - t) * _softplus(z)
        sig = np.exp(-_softplus(-z))
        grad = sig * (pw * t + 1 - t) - pw * t
    count = rows * cols
    return (w[:, None] * value).sum() / count, w[:, None] * grad / count


#: Every loss, with options where it takes them.
CASES = {
    "mse": L.MeanSquaredError(),
    "mae": L.MeanAbsoluteError(),
    "huber": L.Huber(0.7),
    "huber_default": L.Huber(),
    "poisson": L.Poisson(),
    "bce": L.BinaryCrossEntropy(),
    "bce_pos_weight": L.BinaryCrossEntropy(pos_weight=3.0),
    "ce": L.CrossEntropy(),
    "ce_smoothing": L.CrossEntropy(label_smoothing=0.1),
    "ce_class_weight": L.CrossEntropy(class_weight=[0.5, 2.0, 1.0, 0.0, 3.0]),
    "ce_both": L.CrossEntropy(label_smoothing=0.2, class_weight={1: 4.0}),
}
ROWS, COLS = 9, 5


def _data(name: str, probabilities: bool = False, seed: int = 0):
    rng = np.random.default_rng([seed, len(name)])
    z = (3.0 * rng.standard_normal((ROWS, COLS))).astype(np.float32)
    loss = CASES[name]
    if isinstance(loss, L.CrossEntropy):
        if probabilities:
            p = rng.random((ROWS, COLS))
            return z, (p / p.sum(axis=1, keepdims=True)).astype(np.float32)
        return z, rng.integers(0, COLS, ROWS)
    if isinstance(loss, L.Poisson):
        return z / 3, rng.poisson(1.5, (ROWS, COLS)).astype(np.float32)
    if isinstance(loss, L.BinaryCrossEntropy):
        return z, rng.random((ROWS, COLS)).astype(np.float32)
    return z, rng.standard_normal((ROWS, COLS)).astype(np.float32)


PROBABILITY_CASES = [(name, False) for name in CASES] + [
    (name, True) for name in CASES if name.startswith("ce")
]


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("name, probabilities", PROBABILITY_CASES)
def test_value_and_gradient_match_float64_at_every_level(simd, name, probabilities, weighted):
    z, t = _data(name, probabilities)
    weights = np.linspace(0.0, 2.5, ROWS) if weighted else None
    value, grad = K.loss(z, t, CASES[name], grad=True, sample_weight=weights)
    ref_value, ref_grad = loss64(CASES[name], z, t, weights)
    assert value == pytest.approx(ref_value, rel=1e-6, abs=1e-12)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-5, atol=1e-8)
    # The loss alone is the same number.
    assert K.loss(z, t, CASES[name], sample_weight=weights) == value


@pytest.mark.parametrize("name", list(CASES))
def test_gradient_matches_central_differences(name):
    z, t = _data(name, seed=1)
    weights = np.linspace(0.5, 2.0, ROWS)
    _, grad = K.loss(z, t, CASES[name], grad=True, sample_weight=weights)
    z64, h = z.astype(np.float64), 1e-6
    numeric = np.zeros_like(z64)
    for index in np.ndindex(z.shape):
        up, down = z64.copy(), z64.copy()
        up[index] += h
        down[index] -= h
        numeric[index] = (
            loss64(CASES[name], up, t, weights)[0] - loss64(CASES[name], down, t, weights)[0]
        ) / (2 * h)
    np.testing.assert_allclose(grad, numeric, rtol=1e-4, atol=1e-8)


def test_the_plain_kernels_take_options_and_weights():
    z, t = _data("bce_pos_weight")
    w = np.arange(1, ROWS + 1, dtype=np.float64)
    assert K.binary_cross_entropy(z, t, pos_weight=3.0, sample_weight=w) == pytest.approx(
        loss64(L.BinaryCrossEntropy(3.0), z, t, w)[0], rel=1e-6
    )
    z, labels = _data("ce_both")
    assert K.cross_entropy(z, labels, label_smoothing=0.2, class_weight={1: 4.0}) == (
        pytest.approx(loss64(CASES["ce_both"], z, labels)[0], rel=1e-6)
    )
    z, t = _data("huber")
    assert K.huber(z, t, delta=0.7) == pytest.approx(loss64(L.Huber(0.7), z, t)[0], rel=1e-6)
    assert K.mae(z, t, sample_weight=w) == pytest.approx(loss64(L.MeanAbsoluteError(), z, t, w)[0])
    assert K.mse(z, t, sample_weight=w) == pytest.approx(loss64(L.MeanSquaredError(), z, t, w)[0])
    z, counts = _data("poisson")
    assert K.poisson(z, counts) == pytest.approx(loss64(L.Poisson(), z, counts)[0], rel=1e-6)


def test_one_hot_probabilities_equal_labels_and_unit_weights_equal_none():
    z, labels = _data("ce")
    one_hot = np.eye(COLS, dtype=np.float32)[labels]
    v1, g1 = K.cross_entropy(z, labels, grad=True)
    v2, g2 = K.cross_entropy(z, one_hot, grad=True)
    assert v2 == pytest.approx(v1, rel=1e-12)
    np.testing.assert_allclose(g2, g1, rtol=1e-6, atol=1e-9)
    for name in CASES:
        z, t = _data(name)
        a = K.loss(z, t, CASES[name], grad=True)
        b = K.loss(z, t, CASES[name], grad=True, sample_weight=np.ones(ROWS))
        assert a[0] == b[0] and np.array_equal(a[1], b[1]), name


def test_extreme_logits_give_finite_losses_and_gradients(simd):
    z = np.array([[-1e4, 1e4, -80.0, 80.0, 0.0]], np.float32)
    t = np.array([[1.0, 0.0, 1.0, 0.0, 0.5]], np.float32)
    for loss in (L.BinaryCrossEntropy(), L.BinaryCrossEntropy(pos_weight=4.0)):
        value, grad = K.loss(z, t, loss, grad=True)
        assert np.isfinite(value) and np.isfinite(grad).all()
        assert value == pytest.approx(loss64(loss, z, t)[0], rel=1e-9)
    for loss in (L.CrossEntropy(label_smoothing=0.3), L.CrossEntropy(class_weight=[1, 2, 3, 4, 5])):
        value, grad = K.loss(z, np.array([0]), loss, grad=True)
        assert np.isfinite(value) and np.isfinite(grad).all()
        assert value == pytest.approx(loss64(loss, z, np.array([0]))[0], rel=1e-9)
    t = np.float32([[1, 2, 3, 4, 5]])
    value, grad = K.loss(z, t, "huber", grad=True)
    assert value == pytest.approx(loss64(L.Huber(), z, t)[0], rel=1e-9)
    assert value == pytest.approx((10000.5 + 9997.5 + 82.5 + 75.5 + 4.5) / 5, rel=1e-12)
    np.testing.assert_array_equal(np.abs(grad), np.full((1, 5), 0.2, np.float32))
    # The Poisson loss of a log-rate of 80 is e^80, finite in double.
    value = K.poisson(np.float32([[80.0, -1e4]]), np.float32([[0.0, 0.0]]))
    assert value == pytest.approx(np.exp(80.0) / 2, rel=1e-6)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: L.Huber(0.0), "delta must be finite and > 0"),
        (lambda: L.Huber(float("inf")), "delta must be finite and > 0"),
        (lambda: L.BinaryCrossEntropy(pos_weight=-1), "pos_weight must be finite and > 0"),
        (lambda: L.CrossEntropy(label_smoothing=1.0), r"label_smoothing must be in \[0, 1\)"),
        (lambda: L.CrossEntropy(class_weight=[1.0, -2.0]), "class weights must be finite and >= 0"),
        (lambda: L.CrossEntropy(class_weight={-1: 2.0}), "negative class index"),
        (lambda: L.get("hinge"), "unknown loss 'hinge'"),
        (lambda: K.poisson(np.zeros((2, 1)), [1.0, -1.0]), "counts >= 0"),
        (lambda: K.mae(np.zeros((2, 1)), [1.0, 2.0], sample_weight=[1.0, -1.0]), "values >= 0"),
        (lambda: K.mae(np.zeros((2, 1)), [1.0, 2.0], sample_weight=[1.0]), "1 values for 2 rows"),
        (
            lambda: K.loss(np.zeros((2, 3)), [0, 1], L.CrossEntropy(class_weight=[1.0, 2.0])),
            "class_weight has 2 values, but the model has 3 classes",
        ),
    ],
)
def test_bad_options_are_refused(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_losses_by_name_and_as_objects():
    assert L.get("mae") == L.MeanAbsoluteError() and L.get("mean_absolute_error") == L.get("mae")
    assert L.get("huber") == L.Huber(1.0) != L.Huber(2.0)
    assert L.get("poisson") == L.Poisson()
    assert L.CrossEntropy(class_weight={1: 2.0}) == L.CrossEntropy(class_weight=[1.0, 2.0])
    assert L.CrossEntropy(class_weight={1: 2.0}) != L.CrossEntropy(class_weight=[1.0, 3.0])
    assert L.CrossEntropy() != L.CrossEntropy(label_smoothing=0.1)
    assert len({L.Huber(1.0), L.get("huber")}) == 1
    assert repr(L.CrossEntropy(label_smoothing=0.1)) == "CrossEntropy(label_smoothing=0.1)"
    assert repr(L.BinaryCrossEntropy(pos_weight=2.0)) == "BinaryCrossEntropy(pos_weight=2.0)"
    assert bprop.Huber is L.Huber and bprop.Poisson is L.Poisson


# ---------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------


def _diabetes():
    X, y = bprop.datasets.load_diabetes()
    return (X - X.mean(axis=0)) / X.std(axis=0), y


def _digits():
    X, y = bprop.datasets.load_digits()
    return (X - X.mean(axis=0)) / (X.std(axis=0) + 1e-9), y


@pytest.mark.parametrize("loss", [L.MeanAbsoluteError(), L.Huber(0.5)])
def test_robust_regression_losses_learn_the_diabetes_targets(loss):
    X, y = _diabetes()
    t = (y - y.mean()) / y.std()
    model = bprop.Sequential([bprop.Dense(16, activation="relu"), bprop.Dense(1)], seed=0)
    history = model.fit(X, t, loss=loss, optimizer=bprop.SGD(0.02, momentum=0.9), epochs=40, seed=0)
    assert history.history["loss"][-1] < 0.75 * history.history["loss"][0]
    assert model.evaluate(X, t)["r2"] > 0.4


def test_poisson_learns_counts_and_predicts_rates():
    X, y = _diabetes()
    counts = np.round(y / 25.0)  # disease progression as counts, 1 to 14
    model = bprop.Sequential([bprop.Dense(16, activation="tanh"), bprop.Dense(1)], seed=0)
    model.fit(X, counts, loss="poisson", optimizer=bprop.SGD(0.01, momentum=0.9), epochs=40, seed=0)
    rate = model.predict(X)
    assert rate.shape == (len(X),) and (rate > 0).all()
    # The rate is exp of the network's output, the log-rate.
    log_rate = bprop.Sequential([bprop.Dense(16, "tanh"), bprop.Dense(1)], seed=0).build(10, "mse")
    log_rate.set_weights(model.get_weights())
    np.testing.assert_allclose(rate, np.exp(log_rate.predict(X)), rtol=1e-6)
    assert model.evaluate(X, counts)["r2"] > 0.35
    # A log-rate past float's exponent range is an error, not an infinite rate.
    weights = model.get_weights()
    weights[3][:] = 100.0
    model.set_weights(weights)
    with pytest.raises(ValueError, match="the output of row 0 is inf, not finite"):
        model.predict(X[:2])
    with pytest.raises(ValueError, match="counts >= 0 for the poisson loss"):
        model.fit(X[:3], [1.0, -1.0, 2.0], epochs=1)
    with pytest.raises(ValueError, match="predict_proba needs a classification loss"):
        model.predict_proba(X)


def test_cross_entropy_options_and_probability_targets_learn_the_digits():
    X, y = _digits()
    smoothed = np.full((len(y), 10), 0.01, np.float32)
    smoothed[np.arange(len(y)), y] = 0.91
    for targets, loss in [
        (smoothed, "cross_entropy"),
        (y, L.CrossEntropy(label_smoothing=0.1, class_weight={3: 2.0})),
    ]:
        model = bprop.Sequential([bprop.Dense(32, activation="relu"), bprop.Dense(10)], seed=1)
        history = model.fit(
            X[:1400], targets[:1400], loss=loss, optimizer=bprop.SGD(0.05, momentum=0.9),
            epochs=8, seed=0, validation_data=(X[1400:], targets[1400:]),
        )
        assert history.history["val_accuracy"][-1] > 0.85
        # Smoothed targets keep the probabilities away from 0 and 1.
        assert model.predict_proba(X[:200]).max() < 0.999
    with pytest.raises(ValueError, match="rows must sum to 1; row 0 sums to 1.9"):
        model.fit(X[:2], smoothed[:2] * 2 - 0.01, epochs=1)


def test_class_weights_raise_the_recall_of_a_rare_class():
    X, y = _digits()
    rare = (y == 9).astype(int)  # about 10% positives

    def recall(loss):
        model = bprop.Sequential([bprop.Dense(8, activation="relu"), bprop.Dense(2)], seed=2)
        model.fit(X, rare, loss=loss, optimizer=bprop.SGD(0.01), epochs=3, seed=0)
        return (model.predict(X)[rare == 1] == 1).mean()

    assert recall(L.CrossEntropy(class_weight=[1.0, 8.0])) > recall(L.CrossEntropy()) + 0.05


def test_binary_cross_entropy_learns_multi_label_targets_and_pos_weight_favours_recall():
    X, y = _digits()
    labels = np.stack([y >= 5, y % 2 == 0, y == 0], axis=1).astype(np.float32)

    def fit(pos_weight):
        model = bprop.Sequential([bprop.Dense(32, activation="silu"), bprop.Dense(3)], seed=3)
        model.fit(
            X[:1400], labels[:1400], loss=L.BinaryCrossEntropy(pos_weight=pos_weight),
            optimizer=bprop.SGD(0.1, momentum=0.9), epochs=10, seed=0,
        )
        return model.predict(X[1400:])

    plain, heavy = fit(1.0), fit(10.0)
    truth = labels[1400:] == 1
    assert (plain == truth).mean() > 0.85
    assert heavy[truth].mean() > plain[truth].mean()
    assert heavy.sum() > plain.sum()


def test_sample_weights_are_gathered_with_their_rows():
    # Full-batch gradients do not depend on the order of the rows, so
    # shuffling must not change the result unless weights lose their rows.
    X, y = _digits()
    weights = np.random.default_rng(4).uniform(0.0, 3.0, len(y))

    def fit(shuffle):
        model = bprop.Sequential([bprop.Dense(16, activation="elu"), bprop.Dense(10)], seed=5)
        history = model.fit(
            X, y, loss="cross_entropy", batch_size=None, shuffle=shuffle, epochs=3, seed=0,
            sample_weight=weights, optimizer=bprop.SGD(0.1),
        )
        return model, history

    (a, ha), (b, hb) = fit(False), fit(True)
    assert ha.history["loss"] == pytest.approx(hb.history["loss"], rel=1e-5)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_allclose(wa, wb, rtol=1e-4, atol=1e-6)
    # ...and the weights do change the result.
    weights = np.ones(len(y))
    c, _ = fit(True)
    assert not np.allclose(c.get_weights()[0], a.get_weights()[0], rtol=1e-2)


def test_sample_weights_scale_the_loss_and_the_steps():
    X, y = _diabetes()
    t = (y - y.mean()) / y.std()

    def fit(lr, weights):
        model = bprop.Sequential([bprop.Dense(8, activation="gelu"), bprop.Dense(1)], seed=6)
        history = model.fit(
            X, t, loss="huber", optimizer=bprop.SGD(lr), epochs=2, seed=0, sample_weight=weights
        )
        return model, history.history["loss"][0]

    ones, loss_ones = fit(0.02, np.ones(len(t)))
    plain, loss_plain = fit(0.02, None)
    assert loss_ones == loss_plain
    assert all(np.array_equal(a, b) for a, b in zip(ones.get_weights(), plain.get_weights()))
    twos, loss_twos = fit(0.01, np.full(len(t), 2.0))
    assert loss_twos == pytest.approx(2 * loss_plain, rel=1e-6)
    for a, b in zip(twos.get_weights(), fit(0.02, None)[0].get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # evaluate weighs the loss the same way.
    assert plain.evaluate(X, t, sample_weight=np.full(len(t), 3.0))["loss"] == pytest.approx(
        3 * plain.evaluate(X, t)["loss"], rel=1e-6
    )


def test_sample_weight_is_checked():
    X, y = _diabetes()
    model = bprop.Sequential([bprop.Dense(1)], seed=0)
    with pytest.raises(ValueError, match="sample_weight has 3 values but X has 442 rows"):
        model.fit(X, y, epochs=1, sample_weight=[1, 2, 3])
    with pytest.raises(ValueError, match="sample_weight must be >= 0"):
        model.fit(X, y, epochs=1, sample_weight=-np.ones(len(y)))
    with pytest.raises(ValueError, match="sample_weight contains NaN"):
        model.fit(X, y, epochs=1, sample_weight=np.full(len(y), np.nan))
    with pytest.raises(ValueError, match="not available with distributed training or L-BFGS"):
        model.fit(X, y, epochs=1, optimizer="lbfgs", sample_weight=np.ones(len(y)))


def test_validation_split_keeps_the_weights_of_the_training_rows():
    X, y = _digits()
    weights = np.where(y == 0, 5.0, 1.0)
    model = bprop.Sequential([bprop.Dense(10)], seed=0)
    history = model.fit(
        X, y, loss="cross_entropy", validation_split=0.25, sample_weight=weights, epochs=2, seed=0
    )
    assert len(history.history["val_loss"]) == 2 and history.history["loss"][-1] > 0


@pytest.mark.parametrize(
    "loss",
    [
        L.Huber(0.25),
        L.Poisson(),
        L.MeanAbsoluteError(),
        L.BinaryCrossEntropy(pos_weight=2.5),
        L.CrossEntropy(label_smoothing=0.05, class_weight=[2.0, 1.0, 0.5]),
    ],
)
def test_loss_options_survive_files_and_pickles(tmp_path, loss):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((30, 4))
    if isinstance(loss, L.CrossEntropy):
        y = rng.integers(0, 3, 30)
    elif isinstance(loss, (L.BinaryCrossEntropy, L.Poisson)):
        y = rng.integers(0, 2, (30, 3)).astype(float)
    else:
        y = rng.standard_normal((30, 3))
    model = bprop.Sequential([bprop.Dense(5, "tanh"), bprop.Dense(3)], seed=1)
    model.fit(X, y, loss=loss, epochs=2, seed=0)
    model.save(tmp_path / "m.bpm")
    for loaded in (bprop.load(tmp_path / "m.bpm"), pickle.loads(pickle.dumps(model))):
        assert loaded.loss == loss
        assert repr(loaded.loss) == repr(loss)
        assert loaded.evaluate(X, y)["loss"] == model.evaluate(X, y)["loss"]
        # Training resumes with the same loss, bit for bit.
        loaded.fit(X, y, epochs=1, seed=0)
    model.fit(X, y, epochs=1, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), loaded.get_weights()))
