"""Numerics at the edges and bad input, through bprop.kernels and the model.

Numerics: softmax and the fused losses stay finite and shift-invariant
for huge logits, one row never affects another, saturating activations
neither overflow nor warn, a one-column prediction never broadcasts
against a flat target, and a mean over millions of elements matches a
float64 reference. Input: every numeric dtype and layout gives the
float32 result, the caller's arrays are never written, and bad data is
refused before any update.

The rule for NaN and infinity is split on purpose: bprop.kernels lets
them propagate as NumPy does, while the model API raises ValueError for
non-finite inputs, targets and logits (a diverging fit raises
bprop.DivergenceError, itself a ValueError).
"""

from __future__ import annotations

import warnings

import bprop
import numpy as np
import pytest
from bprop import _core
from bprop import kernels as K

BEST = _core.simd_best()
LEVELS = _core.SIMD_LEVELS[: _core.SIMD_LEVELS.index(BEST) + 1]
LOSSES = ["mse", "cross_entropy", "binary_cross_entropy"]


@pytest.fixture(params=LEVELS)
def simd(request):
    """Runs the test with the kernels forced to one SIMD level."""
    previous = _core.simd_level()
    _core.simd_set(request.param)
    yield request.param
    _core.simd_set(previous)


@pytest.fixture
def strict():
    """Turns every warning, and every NumPy floating-point error, into an
    exception for the duration of the test."""
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        yield


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng([7319, *key])


def _grid(rng: np.random.Generator, *shape: int) -> np.ndarray:
    """Multiples of 1/16 in [-8, 8]: adding 1000 to them is exact in float32."""
    return (rng.integers(-128, 129, shape) / 16.0).astype(np.float32)


def _logsumexp64(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, np.float64)
    m = z.max(axis=1, keepdims=True)
    return (m + np.log(np.exp(z - m).sum(axis=1, keepdims=True)))[:, 0]


def _cross_entropy64(logits: np.ndarray, labels: np.ndarray) -> float:
    z = np.asarray(logits, np.float64)
    return float(np.mean(_logsumexp64(z) - z[np.arange(len(z)), labels]))


def _bce64(logits: np.ndarray, target: np.ndarray) -> float:
    z, t = np.asarray(logits, np.float64), np.asarray(target, np.float64)
    return float(np.mean(np.maximum(z, 0.0) - z * t + np.log1p(np.exp(-np.abs(z)))))


def _one_layer(n_inputs: int, units: int, loss: str, seed: int = 0) -> bprop.Sequential:
    """A single dense layer (logits = X @ W + b) built for `loss`."""
    model = bprop.Sequential([bprop.Dense(units)], seed=seed)
    return model.build(n_inputs, loss)


def _same(a, b) -> bool:
    return len(a) == len(b) and all(np.array_equal(u, v) for u, v in zip(a, b))


# ----------------------------------------------------------------------
# Softmax and cross-entropy: finite, shift-invariant, row by row
# ----------------------------------------------------------------------

# Rows on which a naive exp overflows or a naive log meets 0.
HUGE_ROWS = np.array(
    [[1000.0, 0.0], [0.0, 1000.0], [-1000.0, 0.0], [1000.0, -1000.0], [1e30, -1e30]],
    np.float32,
)


def test_softmax_and_cross_entropy_of_huge_logits_are_exact(simd, strict):
    proba = K.softmax(HUGE_ROWS)
    np.testing.assert_array_equal(proba, [[1, 0], [0, 1], [0, 1], [1, 0], [1, 0]])

    labels = np.array([1, 1, 0, 0, 1])
    loss, grad = K.cross_entropy(HUGE_ROWS, labels, grad=True)
    # Row losses: 1000, 0, 1000, 0 and 2e30 (the float32 value of 1e30, twice).
    expected = (2000.0 + 2.0 * float(np.float32(1e30))) / 5.0
    assert loss == pytest.approx(expected, rel=1e-12)
    np.testing.assert_array_equal(grad * 5, [[1, -1], [0, 0], [-1, 1], [0, 0], [1, -1]])


@pytest.mark.parametrize("shift", [1000.0, -1000.0, 512.0])
def test_softmax_and_cross_entropy_are_shift_invariant(simd, shift):
    # On the grid, z + shift is exact, so the results must be bit for bit
    # the same: the max is subtracted before anything is rounded.
    rng = _rng(1)
    z = _grid(rng, 37, 11)
    labels = rng.integers(0, 11, 37)
    moved = z + np.float32(shift)
    np.testing.assert_array_equal(K.softmax(moved), K.softmax(z))
    loss, grad = K.cross_entropy(z, labels, grad=True)
    moved_loss, moved_grad = K.cross_entropy(moved, labels, grad=True)
    assert moved_loss == loss
    np.testing.assert_array_equal(moved_grad, grad)
    np.testing.assert_allclose(K.softmax(z).sum(axis=1, dtype=np.float64), 1.0, atol=1e-6)


def test_model_probabilities_are_shift_invariant_and_sum_to_one(strict):
    # A bias of 1000 added to every logit changes nothing.
    rng = _rng(2)
    x = _grid(rng, 50, 6)
    model = _one_layer(6, 5, "cross_entropy")
    weights = [np.round(w * 16) / 16 for w in model.get_weights()]
    model.set_weights(weights)
    proba = model.predict_proba(x)
    model.set_weights([weights[0], weights[1] + 1000.0])
    np.testing.assert_array_equal(model.predict_proba(x), proba)
    np.testing.assert_allclose(proba.sum(axis=1, dtype=np.float64), 1.0, atol=1e-6)


def test_a_row_never_depends_on_the_other_rows(simd):
    # Every other row is replaced by an extreme one; the rows kept give
    # the same bits. 4096 rows (a power of two, so the 1/rows gradient
    # scale is exact) and 131 columns use the kernels' threads.
    rng = _rng(3)
    rows, cols = 4096, 131
    z = (rng.standard_normal((rows, cols)) * 4).astype(np.float32)
    other = z.copy()
    other[1::2] = np.where(rng.random((rows // 2, cols)) < 0.5, 1e30, -1e30)
    labels = rng.integers(0, cols, rows)
    targets = rng.random((rows, cols)).astype(np.float32)
    keep = slice(0, rows, 2)

    np.testing.assert_array_equal(K.softmax(other)[keep], K.softmax(z)[keep])
    for loss_fn, target in ((K.cross_entropy, labels), (K.binary_cross_entropy, targets)):
        _, grad = loss_fn(z, target, grad=True)
        _, other_grad = loss_fn(other, target, grad=True)
        np.testing.assert_array_equal(other_grad[keep], grad[keep])

    # A row alone: the same softmax, and the gradient times the row count.
    for i in (0, 2, rows - 2):
        np.testing.assert_array_equal(K.softmax(other[i : i + 1])[0], K.softmax(z)[i])
        _, alone = K.cross_entropy(z[i : i + 1], labels[i : i + 1], grad=True)
        _, grad = K.cross_entropy(other, labels, grad=True)
        np.testing.assert_array_equal(grad[i] * rows, alone[0])


def test_model_rows_never_depend_on_the_other_rows():
    rng = _rng(4)
    x = rng.standard_normal((700, 9)).astype(np.float32)
    model = bprop.Sequential([bprop.Dense(13, activation="tanh"), bprop.Dense(4)], seed=1)
    model.build(9, "cross_entropy")
    proba = model.predict_proba(x)
    changed = x.copy()
    changed[1::2] = 1e4
    np.testing.assert_array_equal(model.predict_proba(changed)[::2], proba[::2])
    for i in (0, 351, 699):
        np.testing.assert_array_equal(model.predict_proba(x[i : i + 1])[0], proba[i])


# ----------------------------------------------------------------------
# Saturating activations
# ----------------------------------------------------------------------

SATURATING = np.array([[1e4, -1e4, 88.8, -88.8, 0.0, 1e-3]], np.float32)


@pytest.mark.parametrize("activation, low", [("sigmoid", 0.0), ("tanh", -1.0)])
def test_saturating_activations_at_1e4(simd, strict, activation, low):
    y = K.activation_forward(SATURATING, activation)
    assert np.isfinite(y).all()
    assert y[0, 0] == 1.0 and y[0, 1] == low
    assert ((y >= low) & (y <= 1.0)).all()
    dx = K.activation_backward(np.ones_like(y), y, activation)
    assert np.isfinite(dx).all()
    assert dx[0, 0] == 0.0 and dx[0, 1] == 0.0
    # The same through the dense layer's fused epilogue.
    w = np.eye(6, dtype=np.float32)
    np.testing.assert_array_equal(K.dense_forward(SATURATING, w, None, activation), y)


@pytest.mark.parametrize("activation", ["sigmoid", "tanh"])
def test_saturated_networks_train_and_predict_without_warnings(strict, activation):
    rng = _rng(5)
    x = rng.choice([-1e4, 1e4], size=(64, 3))
    y = (x[:, 0] > 0).astype(int)
    model = bprop.Sequential(
        [bprop.Dense(8, activation=activation), bprop.Dense(1, activation="sigmoid")], seed=0
    )
    history = model.fit(x, y, epochs=5, batch_size=16, seed=0)
    assert np.isfinite(history["loss"]).all()
    assert all(np.isfinite(w).all() for w in model.get_weights())
    proba = model.predict_proba(x)
    assert np.isfinite(proba).all() and ((proba >= 0) & (proba <= 1)).all()


def test_binary_probabilities_of_huge_logits_are_exact(strict):
    model = _one_layer(1, 1, "binary_cross_entropy")
    model.set_weights([np.ones((1, 1), np.float32), np.zeros(1, np.float32)])
    x = np.array([[1e4], [-1e4], [0.0]])
    np.testing.assert_array_equal(model.predict_proba(x)[:, 0], [1.0, 0.0, 0.5])
    assert model.evaluate(x, [1, 0, 1])["loss"] == pytest.approx(np.log(2.0) / 3, rel=1e-6)


# ----------------------------------------------------------------------
# A (n, 1) prediction against an (n,) target never broadcasts
# ----------------------------------------------------------------------


def test_one_column_prediction_against_a_flat_target():
    rng = _rng(6)
    pred = rng.standard_normal((40, 1)).astype(np.float32)
    target = (pred[:, 0] + 0.1 * rng.standard_normal(40)).astype(np.float32)
    right = np.mean((pred[:, 0].astype(np.float64) - target) ** 2)
    broadcast = np.mean((pred.astype(np.float64) - target) ** 2)  # (40, 40)
    assert K.mse(pred, target) == pytest.approx(right, rel=1e-12)
    assert broadcast > 10 * right

    bits = (target > 0).astype(np.float32)
    assert K.binary_cross_entropy(pred, bits) == pytest.approx(_bce64(pred[:, 0], bits), 1e-12)
    with pytest.raises(ValueError, match=r"pred must be 2-D, got shape \(40,\)"):
        K.mse(pred[:, 0], target.reshape(-1, 1))


@pytest.mark.parametrize("loss", ["mse", "binary_cross_entropy"])
def test_model_with_one_output_takes_flat_or_column_targets(loss):
    rng = _rng(7)
    x = rng.standard_normal((60, 3))
    y = (x @ [1.0, -2.0, 0.5] > 0).astype(float)
    model = _one_layer(3, 1, loss)
    flat, column = model.evaluate(x, y), model.evaluate(x, y.reshape(-1, 1))
    assert flat == column

    w, b = model.get_weights()
    out = x.astype(np.float32).astype(np.float64) @ w + b  # (60, 1)
    if loss == "mse":
        expected = np.mean((out[:, 0] - y) ** 2)
    else:
        expected = _bce64(out[:, 0], y)
    assert flat["loss"] == pytest.approx(expected, rel=1e-5)

    twin = _one_layer(3, 1, loss)
    model.fit(x, y, epochs=2, seed=0)
    twin.fit(x, y.reshape(-1, 1), epochs=2, seed=0)
    assert _same(model.get_weights(), twin.get_weights())


def test_model_with_two_outputs_refuses_a_flat_target():
    x = _rng(8).standard_normal((10, 3))
    model = _one_layer(3, 2, "mse")
    with pytest.raises(ValueError, match=r"y has shape \(10,\) but the model has 2 output"):
        model.fit(x, np.zeros(10))
    with pytest.raises(ValueError, match=r"y has shape \(10,\) but the model has 2 output"):
        model.evaluate(x, np.zeros(10))


# ----------------------------------------------------------------------
# Means over millions of elements
# ----------------------------------------------------------------------

MILLIONS = 2_000_000


def test_kernel_losses_over_two_million_elements_match_float64():
    rng = _rng(9)
    pred = (rng.standard_normal((MILLIONS // 4, 4)) + 3.0).astype(np.float32)
    target = rng.standard_normal((MILLIONS // 4, 4)).astype(np.float32)
    reference = np.mean((pred.astype(np.float64) - target) ** 2)
    assert K.mse(pred, target) == pytest.approx(reference, rel=1e-6)

    logits = (rng.standard_normal((MILLIONS // 8, 8)) * 3).astype(np.float32)
    labels = rng.integers(0, 8, len(logits))
    assert K.cross_entropy(logits, labels) == pytest.approx(
        _cross_entropy64(logits, labels), rel=1e-6
    )

    bits = rng.integers(0, 2, logits.shape).astype(np.float32)
    assert K.binary_cross_entropy(logits, bits) == pytest.approx(_bce64(logits, bits), rel=1e-6)


@pytest.mark.parametrize(
    "loss, units", [("mse", 4), ("cross_entropy", 8), ("binary_cross_entropy", 4)]
)
def test_evaluate_over_millions_of_elements_matches_float64(loss, units):
    rng = _rng(10)
    x = rng.standard_normal((MILLIONS // units, 3)).astype(np.float32)
    model = _one_layer(3, units, loss)
    w, b = model.get_weights()
    model.set_weights([w * 3, b + 1])
    if loss == "cross_entropy":
        y = rng.integers(0, units, len(x))
    else:
        y = rng.integers(0, 2, (len(x), units)).astype(np.float32)

    # The logits in float32, as the model computes them; the mean in float64.
    logits = K.dense_forward(x, w * 3, b + 1)
    if loss == "mse":
        reference = np.mean((logits.astype(np.float64) - y) ** 2)
    elif loss == "cross_entropy":
        reference = _cross_entropy64(logits, y)
    else:
        reference = _bce64(logits, y)
    assert model.evaluate(x, y)["loss"] == pytest.approx(reference, rel=1e-6)


# ----------------------------------------------------------------------
# NaN and infinity: kernels propagate, the model raises ValueError
# ----------------------------------------------------------------------


def test_kernels_let_nan_and_infinity_propagate_row_by_row():
    x = np.array([[np.nan, 0.0, 1.0], [np.inf, 0.0, 1.0], [0.0, 1.0, 2.0]], np.float32)
    proba = K.softmax(x)
    assert np.isnan(proba[:2]).all()
    np.testing.assert_allclose(proba[2], np.exp([0, 1, 2]) / np.exp([0, 1, 2]).sum(), 1e-6)
    assert np.isnan(K.mse(x, np.zeros_like(x)))
    assert np.isnan(K.cross_entropy(x, [0, 0, 0]))
    assert np.isnan(K.sigmoid(x)[0, 0]) and K.sigmoid(x)[1, 0] == 1.0


def _nan_at(a, index):
    a = np.array(a, dtype=float)
    a[index] = np.nan
    return a


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, 1e39])
def test_model_refuses_non_finite_inputs_everywhere(bad):
    rng = _rng(11)
    x = rng.standard_normal((20, 3))
    y = rng.integers(0, 2, 20)
    model = _one_layer(3, 2, "cross_entropy")
    before = model.get_weights()
    x_bad = x.copy()
    x_bad[4, 2] = bad
    message = r"X contains NaN or infinity \(first at index \[4, 2\]\)"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 1e39 overflows float32 without a warning
        for call in (
            lambda: model.fit(x_bad, y),
            lambda: model.predict(x_bad),
            lambda: model.predict_proba(x_bad),
            lambda: model.evaluate(x_bad, y),
        ):
            with pytest.raises(ValueError, match=message):
                call()
        with pytest.raises(ValueError, match="X_val contains NaN or infinity"):
            model.fit(x, y, validation_data=(x_bad, y))
    regression = _one_layer(3, 1, "mse")
    with pytest.raises(ValueError, match=r"y contains NaN or infinity \(first at index \[7, 0\]"):
        regression.fit(x, _nan_at(y, 7))
    assert _same(before, model.get_weights())


@pytest.mark.parametrize("loss", LOSSES)
def test_model_raises_value_error_for_logits_that_overflow(loss):
    # Finite weights and inputs whose logits overflow float32.
    units = 3
    model = _one_layer(2, units, loss)
    model.set_weights([np.full((2, units), 1e30, np.float32), np.zeros(units, np.float32)])
    x = np.array([[0.5, 0.5], [1e10, 1e10]])
    y = np.zeros(2, int) if loss == "cross_entropy" else np.zeros((2, units))
    message = r"row 1 .*not finite.* too large for these inputs"
    calls = [lambda: model.predict(x), lambda: model.evaluate(x, y)]
    if loss != "mse":
        calls.append(lambda: model.predict_proba(x))
    for call in calls:
        with pytest.raises(ValueError, match=message):
            call()
    # The first row alone is fine.
    assert np.isfinite(model.evaluate(x[:1], y[:1])["loss"])


def test_divergence_error_is_a_value_error():
    assert issubclass(bprop.DivergenceError, ValueError)
    assert issubclass(bprop.DivergenceError, FloatingPointError)


# ----------------------------------------------------------------------
# Any numeric dtype and layout, and the caller's arrays untouched
# ----------------------------------------------------------------------


def _digits_like():
    rng = _rng(12)
    x = rng.integers(0, 17, size=(90, 6))
    y = (x[:, 0] + x[:, 1] > 16).astype(np.int64)
    return x, y


def _strided(a):
    wide = np.zeros((a.shape[0] * 2, a.shape[1] * 3), a.dtype)
    wide[::2, ::3] = a
    return wide[::2, ::3]


def _read_only(a):
    a = a.copy()
    a.flags.writeable = False
    return a


X_VARIANTS = {
    "uint8": lambda x: x.astype(np.uint8),
    "int64": lambda x: x.astype(np.int64),
    "float64": lambda x: x.astype(np.float64),
    "float16": lambda x: x.astype(np.float16),
    "object": lambda x: x.astype(object),
    "list": lambda x: x.tolist(),
    "fortran": lambda x: np.asfortranarray(x, dtype=np.float32),
    "strided": lambda x: _strided(x.astype(np.float64)),
    "transposed_view": lambda x: np.ascontiguousarray(x.T, np.float32).T,
    "read_only": lambda x: _read_only(x.astype(np.float32)),
}


def _train_and_use(x, y):
    model = bprop.Sequential([bprop.Dense(5, activation="tanh"), bprop.Dense(2)], seed=3)
    model.fit(
        x,
        y,
        loss="cross_entropy",
        optimizer=bprop.SGD(lr=0.01, momentum=0.5),
        epochs=3,
        batch_size=16,
        seed=4,
        validation_data=(x, y),
    )
    return model.get_weights(), model.predict_proba(x), model.predict(x), model.evaluate(x, y)


@pytest.mark.parametrize("make", X_VARIANTS.values(), ids=list(X_VARIANTS))
def test_any_numeric_x_gives_the_float32_result(make):
    x, y = _digits_like()
    expected = _train_and_use(np.ascontiguousarray(x, np.float32), y)
    variant = make(x)
    kept = np.array(variant, dtype=object if isinstance(variant, list) else None, copy=True)
    weights, proba, predicted, scores = _train_and_use(variant, y)
    assert _same(weights, expected[0])
    np.testing.assert_array_equal(proba, expected[1])
    np.testing.assert_array_equal(predicted, expected[2])
    assert scores == expected[3]
    # The caller's array is neither written nor made writeable.
    np.testing.assert_array_equal(np.array(variant, dtype=kept.dtype), kept)
    if isinstance(variant, np.ndarray):
        assert variant.flags.writeable == (make is not X_VARIANTS["read_only"])


def test_bool_x_and_any_label_dtype_give_the_float32_result():
    x, y = _digits_like()
    flags = x > 8
    expected = _train_and_use(flags.astype(np.float32), y)
    for labels in (y.astype(np.uint8), y.astype(np.float64), y.astype(object), y.reshape(-1, 1)):
        got = _train_and_use(flags, labels)
        assert _same(got[0], expected[0])
        assert got[3] == expected[3]


def test_kernels_leave_their_inputs_unchanged():
    rng = _rng(13)
    x = _read_only(rng.standard_normal((7, 5)))
    w = np.asfortranarray(rng.standard_normal((5, 3)))
    copies = x.copy(), w.copy()
    y = K.dense_forward(x, w, None, "sigmoid")
    np.testing.assert_allclose(y, 1 / (1 + np.exp(-(x @ w))), rtol=1e-5)
    K.softmax(x)
    K.cross_entropy(x, [0, 1, 2, 3, 4, 0, 1])
    np.testing.assert_array_equal(x, copies[0])
    np.testing.assert_array_equal(w, copies[1])


@pytest.mark.parametrize(
    "x, message",
    [
        (np.array([["1", "2"]] * 4), "X must be numeric, got an array of dtype <U1"),
        (np.array([[1.0, "x"]] * 4, dtype=object), "X must hold numbers only"),
        (np.array([[1.0, None]] * 4, dtype=object), r"X contains NaN or infinity"),
        (np.array([[b"a", b"b"]] * 4), "X must be numeric, got an array of dtype |S1"),
        (np.zeros((4, 2), "datetime64[s]"), "X must be numeric, got an array of dtype"),
        ([[1.0, 2.0], [3.0]], "X must be a rectangular array of numbers"),
    ],
    ids=["strings", "text_object", "none", "bytes", "datetime", "ragged"],
)
def test_non_numeric_x_raises_a_clear_error(x, message):
    model = _one_layer(2, 2, "cross_entropy")
    before = model.get_weights()
    with pytest.raises(ValueError, match=message):
        model.fit(x, [0, 1, 0, 1])
    with pytest.raises(ValueError, match=message):
        model.predict(x)
    assert _same(before, model.get_weights())


# ----------------------------------------------------------------------
# Bad input is refused before any update
# ----------------------------------------------------------------------

BAD_FITS = [
    ("zero_features", dict(X=np.empty((30, 0))), r"X is empty: shape \(30, 0\)"),
    ("zero_rows", dict(X=np.empty((0, 3)), y=np.empty(0)), r"X is empty: shape \(0, 3\)"),
    ("batch_size_negative", dict(batch_size=-4), "batch_size must be >= 1, got -4"),
    ("epochs_negative", dict(epochs=-2), "epochs must be >= 0, got -2"),
    ("label_too_large", dict(y=np.r_[np.zeros(29, int), 2]), r"label 2 outside \[0, 1\]"),
    ("lengths_differ", dict(y=np.zeros(29, int)), "different numbers of rows: 30 and 29"),
    (
        "validation_lengths_differ",
        dict(validation_data="short"),
        "X_val and y_val have different numbers of rows: 30 and 29",
    ),
    ("validation_nan", dict(validation_data="nan"), "X_val contains NaN or infinity"),
]


def _bad_fit_args(x, y, changes):
    args = dict(
        X=x, y=y, loss="cross_entropy", epochs=2, seed=0, optimizer=bprop.SGD(lr=0.1, momentum=0.9)
    )
    args.update(changes)
    if changes.get("validation_data") == "short":
        args["validation_data"] = (x, y[:-1])
    elif changes.get("validation_data") == "nan":
        args["validation_data"] = (_nan_at(x, (0, 0)), y)
    return args


@pytest.mark.parametrize(
    "changes, message", [c[1:] for c in BAD_FITS], ids=[c[0] for c in BAD_FITS]
)
def test_bad_fit_is_refused_before_any_update(changes, message):
    rng = _rng(14)
    x, y = rng.standard_normal((30, 3)), rng.integers(0, 2, 30)
    model = bprop.Sequential([bprop.Dense(4, activation="relu"), bprop.Dense(2)], seed=0)
    good = dict(loss="cross_entropy", optimizer=bprop.SGD(lr=0.1, momentum=0.9), seed=0)
    model.fit(x, y, epochs=2, **good)
    before = model.get_weights()
    with pytest.raises(ValueError, match=message):
        model.fit(**_bad_fit_args(x, y, changes))
    assert _same(before, model.get_weights())

    # The momentum was not touched either: the next epochs match a twin's.
    twin = bprop.Sequential([bprop.Dense(4, activation="relu"), bprop.Dense(2)], seed=0)
    twin.fit(x, y, epochs=2, **good)
    model.fit(x, y, epochs=2, **good)
    twin.fit(x, y, epochs=2, **good)
    assert _same(twin.get_weights(), model.get_weights())

    # A model that was never built stays unbuilt.
    fresh = bprop.Sequential([bprop.Dense(2)], seed=0)
    with pytest.raises(ValueError, match=message):
        fresh.fit(**_bad_fit_args(x, y, changes))
    assert not fresh.built


# ----------------------------------------------------------------------
# Batches: larger than the data, and the last partial one
# ----------------------------------------------------------------------


def _sgd_reference(x, y, w, b, lr, batches):
    """Plain SGD on a linear mse model in float64, batch after batch."""
    w, b = w.astype(np.float64), b.astype(np.float64)
    for rows in batches:
        xb, yb = x[rows].astype(np.float64), y[rows].astype(np.float64)
        diff = xb @ w + b - yb
        w = w - lr * 2.0 * xb.T @ diff / diff.size
        b = b - lr * 2.0 * diff.sum(axis=0) / diff.size
    return w, b


def test_a_batch_larger_than_the_data_is_one_full_batch():
    rng = _rng(15)
    x = rng.standard_normal((10, 3)).astype(np.float32)
    y = rng.standard_normal((10, 2)).astype(np.float32)
    results = []
    for batch_size in (10, 11, 1000, None):
        model = _one_layer(3, 2, "mse", seed=5)
        start = model.get_weights()
        model.fit(x, y, optimizer=bprop.SGD(lr=0.1), epochs=1, batch_size=batch_size)
        results.append(model.get_weights())
    assert all(_same(results[0], r) for r in results[1:])
    w, b = _sgd_reference(x, y, *start, lr=0.1, batches=[np.arange(10)])
    np.testing.assert_allclose(results[0][0], w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(results[0][1], b, rtol=1e-5, atol=1e-6)


def test_the_last_partial_batch_of_an_epoch_is_used():
    # 10 rows in batches of 4: steps on rows 0-3, 4-7, then 8-9.
    rng = _rng(16)
    x = rng.standard_normal((10, 3)).astype(np.float32)
    y = rng.standard_normal((10, 1)).astype(np.float32)
    model = _one_layer(3, 1, "mse", seed=6)
    start = model.get_weights()
    model.fit(x, y, optimizer=bprop.SGD(lr=0.1), epochs=1, batch_size=4, shuffle=False)
    batches = [np.arange(0, 4), np.arange(4, 8), np.arange(8, 10)]
    w, b = _sgd_reference(x, y, *start, lr=0.1, batches=batches)
    np.testing.assert_allclose(model.get_weights()[0], w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.get_weights()[1], b, rtol=1e-5, atol=1e-6)
    w8, _ = _sgd_reference(x, y, *start, lr=0.1, batches=batches[:2])
    assert np.abs(w8 - w).max() > 1e-3


# ----------------------------------------------------------------------
# A diverging run stops with an explanation
# ----------------------------------------------------------------------


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_a_huge_learning_rate_stops_with_an_explanation(loss, momentum):
    rng = _rng(17)
    x = rng.standard_normal((64, 4)) * 10
    if loss == "cross_entropy":
        y, units = rng.integers(0, 3, 64), 3
    elif loss == "binary_cross_entropy":
        y, units = rng.integers(0, 2, 64), 1
    else:
        y, units = x @ [100.0, -200.0, 50.0, 10.0], 1
    model = bprop.Sequential([bprop.Dense(8, activation="relu"), bprop.Dense(units)], seed=0)
    model.build(4, loss)
    start = model.get_weights()
    with pytest.raises(bprop.DivergenceError) as info:
        model.fit(
            x, y, optimizer=bprop.SGD(lr=1e30, momentum=momentum), epochs=50, batch_size=8, seed=0
        )
    message = str(info.value)
    assert "training diverged in epoch" in message
    assert "NaN or infinite" in message or "not finite" in message or "loss" in message
    for remedy in ("smaller learning rate", "scaling the inputs"):
        assert remedy in message
    weights = model.get_weights()
    assert all(np.isfinite(w).all() for w in weights)
    if "epoch 1:" in message:
        assert _same(start, weights)
    assert np.isfinite(model.predict(x)).all()
