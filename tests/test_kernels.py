"""Tests for bprop.kernels and the compiled core behind them.

Three tiers, as for any numeric code here: every kernel against a
float64 NumPy reference on odd shapes (not multiples of any vector
width), every backward pass against central finite differences, and the
kernel tier repeated at each SIMD level this CPU supports. Results must
also be bitwise identical for any thread count.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import bprop
import numpy as np
import pytest
from bprop import _core
from bprop import kernels as K

BEST = _core.simd_best()
LEVELS = _core.SIMD_LEVELS[: _core.SIMD_LEVELS.index(BEST) + 1]
# The activations whose derivative follows from their output alone;
# tests/test_activations.py covers the others the same way.
ACTIVATIONS = ("identity", "relu", "sigmoid", "tanh", "softmax")


@pytest.fixture(params=LEVELS)
def simd(request):
    """Runs the test with the kernels forced to one SIMD level."""
    previous = _core.simd_level()
    _core.simd_set(request.param)
    yield request.param
    _core.simd_set(previous)


@pytest.fixture
def threads():
    """Restores the thread count after a test that changes it."""
    previous = bprop.get_num_threads()
    yield
    bprop.set_num_threads(previous)


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng([20240607, *key])


def _f32(rng: np.random.Generator, *shape: int, scale: float = 1.0) -> np.ndarray:
    return (scale * rng.standard_normal(shape)).astype(np.float32)


def _f64(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, dtype=np.float64)


def _act64(z: np.ndarray, activation: str) -> np.ndarray:
    """The float64 reference of each activation."""
    z = _f64(z)
    if activation == "identity":
        return z.copy()
    if activation == "relu":
        return np.maximum(z, 0.0)
    if activation == "sigmoid":
        # tanh never overflows, unlike 1 / (1 + exp(-z)) for z << 0.
        return 0.5 * (1.0 + np.tanh(0.5 * z))
    if activation == "tanh":
        return np.tanh(z)
    shifted = z - z.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=1, keepdims=True)


def _act_backward64(dy: np.ndarray, y: np.ndarray, activation: str) -> np.ndarray:
    """d(act)/dz applied to dy, written from the forward output y."""
    dy, y = _f64(dy), _f64(y)
    if activation == "identity":
        return dy.copy()
    if activation == "relu":
        return np.where(y > 0.0, dy, 0.0)
    if activation == "sigmoid":
        return dy * y * (1.0 - y)
    if activation == "tanh":
        return dy * (1.0 - y * y)
    return y * (dy - (dy * y).sum(axis=1, keepdims=True))


def _assert_gemm_close(actual, a_op, b_op, alpha=1.0, beta=0.0, c0=None):
    """Elementwise residual bound of a float32 product of depth k:
    |C - ref| <= 1e-5 * sqrt(k) * (|alpha| |A| |B| + |beta| |C0|)."""
    a64, b64 = _f64(a_op), _f64(b_op)
    ref = alpha * (a64 @ b64)
    scale = abs(alpha) * (np.abs(a64) @ np.abs(b64))
    if c0 is not None and beta != 0.0:
        ref += beta * _f64(c0)
        scale += abs(beta) * np.abs(_f64(c0))
    k = a64.shape[1]
    bound = 1e-5 * np.sqrt(max(k, 1)) * scale + 1e-30
    err = np.abs(_f64(actual) - ref)
    worst = np.unravel_index(np.argmax(err - bound), err.shape) if err.size else None
    assert actual.shape == ref.shape
    assert np.all(err <= bound), (
        f"largest excess at {worst}: |diff| {err[worst]:.3g} > bound {bound[worst]:.3g}"
    )


def _stored(op: np.ndarray, trans: bool) -> np.ndarray:
    """The array to pass so that op(stored) == op."""
    return np.ascontiguousarray(op.T) if trans else op


TRANSPOSES = [(False, False), (False, True), (True, False), (True, True)]


# ---------------------------------------------------------------------------
# SIMD levels and the BPROP_SIMD environment variable
# ---------------------------------------------------------------------------


def test_simd_fixture_switches_level(simd):
    assert _core.simd_level() == simd
    assert bprop.cpu_info()["simd"] == simd
    assert bprop.cpu_info()["best"] == BEST


def test_simd_set_rejects_unknown_name():
    before = _core.simd_level()
    with pytest.raises(ValueError, match="unknown SIMD level 'sse9'"):
        _core.simd_set("sse9")
    assert _core.simd_level() == before


def _simd_in_subprocess(value: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, BPROP_SIMD=value)
    code = "import bprop; print(bprop.cpu_info()['simd'])"
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("level", _core.SIMD_LEVELS)
def test_bprop_simd_env_lowers_level(level):
    # The environment can only lower the level: asking for more than the
    # CPU has gives the best it has.
    expected = level if level in LEVELS else BEST
    result = _simd_in_subprocess(level)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == expected


def test_bprop_simd_env_is_case_insensitive():
    result = _simd_in_subprocess("GENERIC")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "generic"


@pytest.mark.parametrize("value", ["bogus", "", "avx2x"])
def test_bprop_simd_env_unknown_value_is_ignored(value):
    # dispatch.c treats an unknown name like an unset variable: the best
    # level is used and the import succeeds.
    result = _simd_in_subprocess(value)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == BEST


# ---------------------------------------------------------------------------
# sgemm
# ---------------------------------------------------------------------------

# (m, n, k): op(a) is m x k, op(b) is k x n.
GEMM_SHAPES = [
    (1, 1, 1),
    (3, 5, 7),
    (17, 33, 65),
    (100, 1, 100),
    (1, 100, 1),
    (129, 257, 63),
    (13, 29, 600),  # several depth blocks
    (150, 41, 17),  # several row blocks
    (7, 31, 1),  # k = 1
    (33, 129, 7),
    (31, 7, 33),
    (129, 33, 31),
    (300, 5, 40),  # A read in place across several row blocks
    (200, 7, 700),  # ... and several depth blocks
    (50, 200, 100),  # a small A read in place by many column panels
    (0, 5, 3),  # empty dimensions
    (4, 0, 3),
]


@pytest.mark.parametrize("trans_a, trans_b", TRANSPOSES)
@pytest.mark.parametrize("m, n, k", GEMM_SHAPES)
def test_sgemm_matches_reference(simd, m, n, k, trans_a, trans_b):
    rng = _rng(m, n, k, trans_a, trans_b)
    a_op, b_op = _f32(rng, m, k), _f32(rng, k, n)
    c = K.sgemm(_stored(a_op, trans_a), _stored(b_op, trans_b), trans_a, trans_b)
    assert c.dtype == np.float32 and c.flags.c_contiguous
    _assert_gemm_close(c, a_op, b_op)


@pytest.mark.parametrize("trans_a, trans_b", TRANSPOSES)
def test_sgemm_k_zero_gives_zeros(simd, trans_a, trans_b):
    a_op, b_op = np.zeros((4, 0), np.float32), np.zeros((0, 6), np.float32)
    out = np.full((4, 6), np.nan, np.float32)
    c = K.sgemm(_stored(a_op, trans_a), _stored(b_op, trans_b), trans_a, trans_b, out=out)
    assert c is out
    assert np.array_equal(c, np.zeros((4, 6), np.float32))


@pytest.mark.parametrize("trans_a, trans_b", TRANSPOSES)
@pytest.mark.parametrize("m, n, k", [(3, 5, 7), (129, 257, 63), (13, 29, 600)])
def test_sgemm_alpha_beta_with_out(simd, m, n, k, trans_a, trans_b):
    rng = _rng(m, n, k, 7)
    a_op, b_op, c0 = _f32(rng, m, k), _f32(rng, k, n), _f32(rng, m, n)
    out = c0.copy()
    c = K.sgemm(
        _stored(a_op, trans_a),
        _stored(b_op, trans_b),
        trans_a,
        trans_b,
        out=out,
        alpha=-0.75,
        beta=1.5,
    )
    assert c is out
    _assert_gemm_close(c, a_op, b_op, alpha=-0.75, beta=1.5, c0=c0)


def test_sgemm_beta_zero_does_not_read_out(simd):
    # With beta == 0, C is only written, so NaN in it must not propagate.
    rng = _rng(11)
    a, b = _f32(rng, 19, 23), _f32(rng, 23, 37)
    out = np.full((19, 37), np.nan, np.float32)
    K.sgemm(a, b, out=out)
    assert np.isfinite(out).all()
    _assert_gemm_close(out, a, b)


def test_sgemm_alpha_zero_scales_out(simd):
    rng = _rng(12)
    a, b, c0 = _f32(rng, 9, 11), _f32(rng, 11, 13), _f32(rng, 9, 13)
    out = c0.copy()
    K.sgemm(a, b, out=out, alpha=0.0, beta=-2.0)
    np.testing.assert_array_equal(out, -2.0 * c0)


@pytest.mark.parametrize("trans_a, trans_b", TRANSPOSES)
def test_sgemm_big(trans_a, trans_b):
    rng = _rng(700, trans_a, trans_b)
    a_op, b_op = _f32(rng, 700, 500), _f32(rng, 500, 600)
    c = K.sgemm(_stored(a_op, trans_a), _stored(b_op, trans_b), trans_a, trans_b)
    _assert_gemm_close(c, a_op, b_op)


@pytest.mark.parametrize("which", ["a", "b"])
def test_sgemm_out_may_be_an_input(simd, which):
    # k spans several depth blocks, so an input overwritten by the first
    # block would be read back wrong by the next ones.
    rng = _rng(13)
    a, b = _f32(rng, 300, 300), _f32(rng, 300, 300)
    out = (a if which == "a" else b).copy()
    args = (out, b) if which == "a" else (a, out)
    c = K.sgemm(*args, out=out, alpha=0.5, beta=2.0)
    assert c is out
    _assert_gemm_close(c, a, b, alpha=0.5, beta=2.0, c0=a if which == "a" else b)


@pytest.mark.parametrize("m, n", [(0, 4), (3, 0), (0, 0)])
def test_sgemm_empty_result(m, n):
    c = K.sgemm(np.ones((m, 5)), np.ones((5, n)))
    assert c.shape == (m, n) and c.dtype == np.float32


def test_sgemm_accepts_float64_and_lists():
    c = K.sgemm([[1.0, 2.0]], np.array([[3.0], [4.0]]))
    np.testing.assert_array_equal(c, np.array([[11.0]], np.float32))


@pytest.mark.parametrize(
    "out, match",
    [
        (np.empty((4, 6), np.float32), r"out has shape \(4, 6\); expected \(4, 5\)"),
        (np.empty((5, 4), np.float32), r"out has shape \(5, 4\); expected \(4, 5\)"),
        (np.empty((4, 5), np.float64), "out has dtype float64; expected float32"),
        (np.empty((4, 10), np.float32)[:, ::2], "writeable C-contiguous"),
        (np.empty((4, 5), np.float32, order="F"), "writeable C-contiguous"),
        ([[0.0] * 5] * 4, "out must be a NumPy array, got list"),
    ],
)
def test_sgemm_rejects_bad_out(out, match):
    a, b = np.ones((4, 3), np.float32), np.ones((3, 5), np.float32)
    with pytest.raises(ValueError, match=match):
        K.sgemm(a, b, out=out)


def test_sgemm_rejects_read_only_out():
    out = np.zeros((2, 2), np.float32)
    out.flags.writeable = False
    with pytest.raises(ValueError, match="writeable C-contiguous"):
        K.sgemm(np.ones((2, 3)), np.ones((3, 2)), out=out)
    assert np.array_equal(out, np.zeros((2, 2)))


@pytest.mark.parametrize(
    "a_shape, b_shape, trans_a, trans_b",
    [
        ((4, 3), (4, 5), False, False),
        ((4, 3), (3, 5), True, False),
        ((4, 3), (3, 5), False, True),
        ((4, 3), (4, 5), True, True),
    ],
)
def test_sgemm_rejects_inner_dimension_mismatch(a_shape, b_shape, trans_a, trans_b):
    a, b = np.ones(a_shape, np.float32), np.ones(b_shape, np.float32)
    with pytest.raises(ValueError, match="inner dimensions differ"):
        K.sgemm(a, b, trans_a, trans_b)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("which", ["a", "b"])
def test_sgemm_propagates_non_finite_input_like_numpy(which, bad):
    a, b = np.ones((3, 4), np.float32), np.ones((4, 2), np.float32)
    (a if which == "a" else b)[1, 1] = bad
    with np.errstate(invalid="ignore"):
        expected = a @ b
    np.testing.assert_array_equal(K.sgemm(a, b), expected)


def test_sgemm_rejects_beta_without_out():
    with pytest.raises(ValueError, match="out must be given"):
        K.sgemm(np.ones((2, 2)), np.ones((2, 2)), beta=1.0)


def test_sgemm_rejects_non_2d():
    with pytest.raises(ValueError, match="a must be 2-D"):
        K.sgemm(np.ones(3), np.ones((3, 2)))


# ---------------------------------------------------------------------------
# Activations
# ---------------------------------------------------------------------------

EXTREME = np.array(
    [
        [80.0, -80.0, 1e4, -1e4, 0.0, 1e-3, -1e-3],
        [-1e4, -1e4, -1e4, -1e4, -1e4, -1e4, -1e4],
        [1e4, 1e4, -80.0, 80.0, 3.5, -2.25, 17.0],
    ],
    np.float32,
)


def _activation_inputs() -> np.ndarray:
    rng = _rng(31)
    return np.vstack([EXTREME, _f32(rng, 20, 7, scale=4.0)])


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_activation_forward_matches_reference(simd, activation):
    x = _activation_inputs()
    y = K.activation_forward(x, activation)
    assert y.shape == x.shape and y.dtype == np.float32
    assert np.isfinite(y).all()
    np.testing.assert_allclose(y, _act64(x, activation), rtol=2e-6, atol=1e-30)


@pytest.mark.parametrize("activation", ["identity", "relu", "sigmoid", "tanh", "softmax"])
def test_activation_shortcuts_match_forward(activation):
    x = _activation_inputs()
    shortcut = getattr(K, activation)
    np.testing.assert_array_equal(shortcut(x), K.activation_forward(x, activation))


def test_sigmoid_tail_is_not_flushed():
    # sigmoid(-80) = e^-80 / (1 + e^-80) ~ 1.8e-35, a normal float32.
    y = K.sigmoid(np.array([[-80.0, -1e4, 80.0, 1e4]], np.float32))
    assert y[0, 0] == pytest.approx(np.exp(-80.0), rel=1e-5)
    assert y[0, 1] == 0.0
    assert y[0, 2] == 1.0 and y[0, 3] == 1.0


def test_softmax_rows_sum_to_one(simd):
    x = _activation_inputs()
    y = K.softmax(x)
    assert (y >= 0.0).all() and (y <= 1.0).all()
    np.testing.assert_allclose(y.sum(axis=1, dtype=np.float64), 1.0, atol=1e-6)
    # A row of equal values, however large, is uniform.
    np.testing.assert_allclose(y[1], np.full(7, 1.0 / 7.0), rtol=1e-6)


def test_softmax_is_shift_invariant():
    rng = _rng(32)
    x = _f32(rng, 5, 9)
    np.testing.assert_allclose(K.softmax(x + 1000.0), K.softmax(x), rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_activation_backward_matches_formula_in_y(simd, activation):
    # The kernel computes the derivative from y, so the reference does too.
    x = _activation_inputs()
    y = K.activation_forward(x, activation)
    dy = _f32(_rng(33), *x.shape)
    dx = K.activation_backward(dy, y, activation)
    assert np.isfinite(dx).all()
    np.testing.assert_allclose(dx, _act_backward64(dy, y, activation), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_activation_backward_matches_analytic_derivative(simd, activation):
    # Away from the saturated tails, act'(x) from y is close to the exact
    # derivative at x, written in terms of x in float64.
    rng = _rng(34)
    x = _f32(rng, 13, 11, scale=2.0)
    dy = _f32(rng, 13, 11)
    y = K.activation_forward(x, activation)
    dx = K.activation_backward(dy, y, activation)
    x64, dy64 = _f64(x), _f64(dy)
    if activation == "identity":
        expected = dy64
    elif activation == "relu":
        expected = dy64 * (x64 > 0.0)
    elif activation == "sigmoid":
        s = _act64(x64, "sigmoid")
        expected = dy64 * s * (1.0 - s)
    elif activation == "tanh":
        expected = dy64 / np.cosh(x64) ** 2
    else:
        s = _act64(x64, "softmax")
        expected = s * dy64 - s * (s * dy64).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(dx, expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_activation_in_place(simd, activation):
    x = _activation_inputs()
    y = x.copy()
    assert K.activation_forward(y, activation, out=y) is y
    np.testing.assert_array_equal(y, K.activation_forward(x, activation))
    dy = _f32(_rng(35), *x.shape)
    dx = dy.copy()
    assert K.activation_backward(dx, y, activation, out=dx) is dx
    np.testing.assert_array_equal(dx, K.activation_backward(dy, y, activation))


def test_activation_rejects_unknown_name():
    with pytest.raises(ValueError, match="unknown activation 'mish'; choose one of identity"):
        K.activation_forward(np.ones((2, 2)), "mish")


def test_activation_backward_rejects_shape_mismatch():
    with pytest.raises(ValueError, match=r"dy has shape \(2, 3\) but y has shape \(3, 2\)"):
        K.activation_backward(np.ones((2, 3)), np.ones((3, 2)), "tanh")


def test_activation_forward_with_out(simd):
    x = _activation_inputs()
    out = np.full(x.shape, np.nan, np.float32)
    assert K.tanh(x, out=out) is out
    np.testing.assert_allclose(out, np.tanh(_f64(x)), rtol=2e-6, atol=1e-30)


# ---------------------------------------------------------------------------
# Dense layer
# ---------------------------------------------------------------------------

# (batch, n_in, n_out); n_in = 300 spans two depth blocks of the GEMM, so
# bias and activation must be applied once, after the last one.
DENSE_SHAPES = [(1, 1, 1), (7, 31, 33), (129, 1, 7), (37, 45, 29), (150, 300, 70)]


def _dense64(x, w, b, activation):
    z = _f64(x) @ _f64(w)
    if b is not None:
        z = z + _f64(b)
    return _act64(z, activation)


@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("batch, n_in, n_out", DENSE_SHAPES)
def test_dense_forward_matches_reference(simd, batch, n_in, n_out, activation, with_bias):
    rng = _rng(batch, n_in, n_out, 41)
    x = _f32(rng, batch, n_in)
    w = _f32(rng, n_in, n_out, scale=1.0 / np.sqrt(n_in))
    b = _f32(rng, n_out) if with_bias else None
    y = K.dense_forward(x, w, b, activation)
    assert y.shape == (batch, n_out)
    np.testing.assert_allclose(y, _dense64(x, w, b, activation), rtol=1e-4, atol=2e-5)


def test_dense_forward_with_out(simd):
    rng = _rng(42)
    x, w, b = _f32(rng, 7, 5), _f32(rng, 5, 3), _f32(rng, 3)
    out = np.full((7, 3), np.nan, np.float32)
    assert K.dense_forward(x, w, b, "relu", out=out) is out
    np.testing.assert_allclose(out, _dense64(x, w, b, "relu"), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("batch, n_in, n_out", DENSE_SHAPES)
def test_dense_backward_matches_reference(simd, batch, n_in, n_out, activation):
    rng = _rng(batch, n_in, n_out, 43)
    x = _f32(rng, batch, n_in)
    w = _f32(rng, n_in, n_out, scale=1.0 / np.sqrt(n_in))
    b = _f32(rng, n_out)
    dy = _f32(rng, batch, n_out)
    y = K.dense_forward(x, w, b, activation)
    grads = K.dense_backward(dy, x, w, y, activation)

    dz = _act_backward64(dy, y, activation)
    expected = {
        "dz": dz,
        "dw": _f64(x).T @ dz,
        "db": dz.sum(axis=0),
        "dx": dz @ _f64(w).T,
    }
    for name, ref in expected.items():
        got = getattr(grads, name)
        assert got.shape == ref.shape and got.dtype == np.float32, name
        scale = max(np.abs(ref).max(), 1e-6)
        err = np.abs(_f64(got) - ref).max()
        assert err <= 1e-5 * np.sqrt(max(batch, n_out)) * scale, f"{name}: {err:.3g}"


def _dense_objective(x, w, b, r, activation):
    """The scalar sum(act(x @ w + b) * r) in float64."""
    return float((_dense64(x, w, b, activation) * r).sum())


def _central_difference(f, value, h=1e-6):
    """d f / d value by central differences, one element at a time."""
    value = value.copy()
    grad = np.empty_like(value)
    for index in np.ndindex(value.shape):
        saved = value[index]
        value[index] = saved + h
        up = f(value)
        value[index] = saved - h
        down = f(value)
        value[index] = saved
        grad[index] = (up - down) / (2.0 * h)
    return grad


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_dense_backward_matches_finite_differences(simd, activation):
    rng = _rng(44)
    batch, n_in, n_out = 3, 4, 5
    x = _f32(rng, batch, n_in)
    w = _f32(rng, n_in, n_out)
    b = _f32(rng, n_out)
    r = _f32(rng, batch, n_out)
    x64, w64, b64, r64 = _f64(x), _f64(w), _f64(b), _f64(r)
    # Keep relu away from its kink, where the difference quotient is wrong.
    assert np.abs(x64 @ w64 + b64).min() > 1e-3

    y = K.dense_forward(x, w, b, activation)
    grads = K.dense_backward(r, x, w, y, activation)

    numeric = {
        "dx": _central_difference(lambda v: _dense_objective(v, w64, b64, r64, activation), x64),
        "dw": _central_difference(lambda v: _dense_objective(x64, v, b64, r64, activation), w64),
        "db": _central_difference(lambda v: _dense_objective(x64, w64, v, r64, activation), b64),
        "dz": _central_difference(
            lambda z: float((_act64(z, activation) * r64).sum()), x64 @ w64 + b64
        ),
    }
    for name, expected in numeric.items():
        np.testing.assert_allclose(
            getattr(grads, name), expected, rtol=1e-3, atol=1e-4, err_msg=name
        )


def test_dense_forward_out_may_be_x(simd):
    rng = _rng(45)
    x, w, b = _f32(rng, 40, 300), _f32(rng, 300, 300, scale=0.06), _f32(rng, 300)
    out = x.copy()
    assert K.dense_forward(out, w, b, "tanh", out=out) is out
    np.testing.assert_allclose(out, _dense64(x, w, b, "tanh"), rtol=1e-4, atol=2e-5)


def test_dense_backward_empty_batch_gives_zero_gradients():
    grads = K.dense_backward(
        np.zeros((0, 2)), np.zeros((0, 3)), np.ones((3, 2)), np.zeros((0, 2)), "relu"
    )
    assert grads.dx.shape == (0, 3) and grads.dz.shape == (0, 2)
    assert np.array_equal(grads.dw, np.zeros((3, 2)))
    assert np.array_equal(grads.db, np.zeros(2))


def test_dense_rejects_bad_shapes():
    x, w = np.ones((4, 3)), np.ones((3, 2))
    with pytest.raises(ValueError, match="x has 3 columns but w has 2 rows"):
        K.dense_forward(x, np.ones((2, 3)))
    with pytest.raises(ValueError, match="b has 3 values but w has 2 columns"):
        K.dense_forward(x, w, np.ones(3))
    with pytest.raises(ValueError, match=r"dy has shape \(4, 3\); expected \(4, 2\)"):
        K.dense_backward(np.ones((4, 3)), x, w, np.ones((4, 2)))
    with pytest.raises(ValueError, match=r"y has shape \(2, 2\); expected \(4, 2\)"):
        K.dense_backward(np.ones((4, 2)), x, w, np.ones((2, 2)))


# ---------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------


def _grid(rng: np.random.Generator, *shape: int) -> np.ndarray:
    """Values on a 2^-6 grid in [-3, 3], so that v +- 2^-10 is exact in
    float32 and finite differences see the loss, not rounding."""
    return (np.round(rng.uniform(-3.0, 3.0, shape) * 64.0) / 64.0).astype(np.float32)


def _loss_gradient_fd(loss_fn, pred: np.ndarray, h: float = 2.0**-10) -> np.ndarray:
    """Central differences of a kernel loss (accumulated in double) in pred."""
    grad = np.empty(pred.shape, np.float64)
    for index in np.ndindex(pred.shape):
        p = pred.copy()
        p[index] += h
        up = loss_fn(p)
        p[index] -= 2 * h
        down = loss_fn(p)
        grad[index] = (up - down) / (2.0 * h)
    return grad


def _logsumexp64(z: np.ndarray) -> np.ndarray:
    m = z.max(axis=1, keepdims=True)
    return (m + np.log(np.exp(z - m).sum(axis=1, keepdims=True)))[:, 0]


def _cross_entropy64(logits, labels):
    z = _f64(logits)
    return float(np.mean(_logsumexp64(z) - z[np.arange(len(z)), labels]))


def _bce64(logits, target):
    z, t = _f64(logits), _f64(target)
    return float(np.mean(np.maximum(z, 0.0) - z * t + np.log1p(np.exp(-np.abs(z)))))


def test_mse_value_and_gradient(simd):
    rng = _rng(51)
    pred, target = _grid(rng, 6, 4), _grid(rng, 6, 4)
    loss, grad = K.mse(pred, target, grad=True)
    diff = _f64(pred) - _f64(target)
    assert loss == pytest.approx(np.mean(diff**2), rel=1e-12)
    assert K.mse(pred, target) == loss
    np.testing.assert_allclose(grad, 2.0 * diff / diff.size, rtol=1e-6)
    numeric = _loss_gradient_fd(lambda p: K.mse(p, target), pred)
    np.testing.assert_allclose(grad, numeric, rtol=1e-4, atol=1e-7)


def test_mse_accepts_1d_target_for_one_output():
    pred = np.array([[1.0], [2.0], [4.0]], np.float32)
    assert K.mse(pred, [1.0, 1.0, 1.0]) == pytest.approx((0 + 1 + 9) / 3)


def test_mse_rejects_target_shape_mismatch():
    with pytest.raises(ValueError, match=r"target has shape \(3, 2\) but the prediction"):
        K.mse(np.ones((2, 3)), np.ones((3, 2)))


@pytest.mark.parametrize("size", [2, 6])
def test_1d_target_is_not_reshaped_to_several_outputs(size):
    # A flat target is one value per row; it is never folded into columns.
    with pytest.raises(ValueError, match=rf"target has shape \({size}, 1\) but the prediction"):
        K.mse(np.ones((2, 3)), np.ones(size))
    with pytest.raises(ValueError, match=rf"target has shape \({size}, 1\) but the prediction"):
        K.binary_cross_entropy(np.ones((2, 3)), np.ones(size))


def test_cross_entropy_value_and_gradient(simd):
    rng = _rng(52)
    logits = _grid(rng, 5, 7)
    labels = np.array([0, 6, 3, 3, 1])
    loss, grad = K.cross_entropy(logits, labels, grad=True)
    assert loss == pytest.approx(_cross_entropy64(logits, labels), rel=1e-7)  # float exponentials

    onehot = np.eye(7)[labels]
    expected = (_act64(logits, "softmax") - onehot) / len(labels)
    np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(grad.sum(axis=1), 0.0, atol=1e-7)
    numeric = _loss_gradient_fd(lambda z: K.cross_entropy(z, labels), logits)
    np.testing.assert_allclose(grad, numeric, rtol=1e-3, atol=1e-6)


def test_binary_cross_entropy_value_and_gradient(simd):
    rng = _rng(53)
    logits = _grid(rng, 4, 5)
    target = rng.integers(0, 2, (4, 5)).astype(np.float32)
    target[0, :2] = [0.25, 0.75]  # soft targets are allowed
    loss, grad = K.binary_cross_entropy(logits, target, grad=True)
    assert loss == pytest.approx(_bce64(logits, target), rel=1e-9)

    expected = (_act64(logits, "sigmoid") - _f64(target)) / target.size
    np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-8)
    numeric = _loss_gradient_fd(lambda z: K.binary_cross_entropy(z, target), logits)
    np.testing.assert_allclose(grad, numeric, rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("big", [1e4, 1e30])
def test_cross_entropy_finite_for_extreme_logits(big):
    logits = np.array([[big, -big, 0.0], [big, -big, 0.0], [-big, -big, -big]], np.float32)
    labels = np.array([0, 1, 2])
    loss, grad = K.cross_entropy(logits, labels, grad=True)
    # Row 0 is certain and right (0), row 1 certain and wrong (2 big), row
    # 2 uniform (log 3).
    expected = (0.0 + 2.0 * float(np.float32(big)) + np.log(3.0)) / 3.0
    assert np.isfinite(loss)
    assert loss == pytest.approx(expected, rel=1e-6)
    assert np.isfinite(grad).all()
    np.testing.assert_allclose(
        grad,
        np.array([[0, 0, 0], [1, -1, 0], [1 / 3, 1 / 3, -2 / 3]]) / 3.0,
        atol=1e-7,
    )


@pytest.mark.parametrize("big", [1e4, 1e30])
def test_binary_cross_entropy_finite_for_extreme_logits(big):
    logits = np.array([[big, -big, big, -big, 0.0]], np.float32)
    target = np.array([[1.0, 0.0, 0.0, 1.0, 1.0]], np.float32)
    loss, grad = K.binary_cross_entropy(logits, target, grad=True)
    big32 = float(np.float32(big))
    expected = (0.0 + 0.0 + big32 + big32 + np.log(2.0)) / 5.0
    assert np.isfinite(loss)
    assert loss == pytest.approx(expected, rel=1e-6)
    assert loss == pytest.approx(_bce64(logits, target), rel=1e-12)
    np.testing.assert_allclose(grad, np.array([[0, 0, 1, -1, -0.5]]) / 5.0, atol=1e-7)


def test_mse_finite_for_large_values():
    loss, grad = K.mse(np.array([[1e30, -1e30]], np.float32), [[-1e30, 1e30]], grad=True)
    assert loss == pytest.approx(4e60, rel=1e-6)
    np.testing.assert_allclose(grad, [[2e30, -2e30]], rtol=1e-6)


@pytest.mark.parametrize("labels, bad", [([0, 3], "3"), ([-1, 0], "-1"), ([0, 7], "7")])
def test_cross_entropy_rejects_out_of_range_labels(labels, bad):
    with pytest.raises(ValueError, match=rf"label {bad} outside \[0, 2\]"):
        K.cross_entropy(np.zeros((2, 3)), labels)


def test_core_cross_entropy_rejects_out_of_range_label():
    # The C library checks labels too, for callers that bypass Python.
    logits = np.zeros((3, 4), np.float32)
    labels = np.array([1, 2, 9], np.int32)
    with pytest.raises(ValueError, match=r"labels\[2\] is 9; it must be in \[0, 4\)"):
        _core.loss_cross_entropy(None, logits, labels)


def test_cross_entropy_rejects_label_count_mismatch():
    with pytest.raises(ValueError, match="labels has 3 rows but logits has 2"):
        K.cross_entropy(np.zeros((2, 3)), [0, 1, 2])


@pytest.mark.parametrize("value", [-0.5, 1.5])
def test_binary_cross_entropy_rejects_target_outside_unit_interval(value):
    with pytest.raises(ValueError, match=r"target must hold values in \[0, 1\]"):
        K.binary_cross_entropy(np.zeros((1, 2)), [[0.0, value]])


# ---------------------------------------------------------------------------
# SGD
# ---------------------------------------------------------------------------


def _sgd64(w, v, grads, lr, momentum, nesterov, l2):
    """bprop.h's SGD: g = grad + l2 w; v = mu v + g;
    w -= lr * (nesterov ? g + mu v : v), or w -= lr g without momentum."""
    w, v = _f64(w).copy(), _f64(v).copy()
    for grad in grads:
        g = _f64(grad) + l2 * w
        if momentum == 0.0:
            w -= lr * g
            continue
        v = momentum * v + g
        w -= lr * (g + momentum * v if nesterov else v)
    return w, v


@pytest.mark.parametrize(
    "momentum, nesterov, l2",
    [
        (0.0, False, 0.0),
        (0.0, False, 0.01),
        (0.9, False, 0.0),
        (0.9, True, 0.0),
        (0.5, True, 0.01),
        (0.9, False, 0.01),
    ],
)
def test_sgd_update_matches_reference(momentum, nesterov, l2):
    rng = _rng(61)
    n = 37
    w0 = _f32(rng, n)
    grads = [_f32(rng, n) for _ in range(3)]
    w = w0.copy()
    v = np.zeros(n, np.float32) if momentum else None
    for grad in grads:
        result = K.sgd_update(
            w, grad, lr=0.1, velocity=v, momentum=momentum, nesterov=nesterov, l2=l2
        )
        assert result is w
    expected_w, expected_v = _sgd64(w0, np.zeros(n), grads, 0.1, momentum, nesterov, l2)
    np.testing.assert_allclose(w, expected_w, rtol=1e-5, atol=1e-6)
    if momentum:
        np.testing.assert_allclose(v, expected_v, rtol=1e-5, atol=1e-6)
    assert not np.array_equal(w, w0)


def test_sgd_update_empty_is_a_no_op():
    w = np.zeros(0, np.float32)
    assert K.sgd_update(w, np.zeros(0), lr=0.1).shape == (0,)


@pytest.mark.parametrize("lr", [0.0, -0.1, np.nan, np.inf])
def test_sgd_update_rejects_bad_lr(lr):
    w = np.ones(3, np.float32)
    with pytest.raises(ValueError, match=r"lr is .*; it must be finite and > 0"):
        K.sgd_update(w, np.ones(3), lr=lr)
    assert np.array_equal(w, np.ones(3))


@pytest.mark.parametrize("momentum", [-0.1, 1.0, 1.5, np.nan])
def test_sgd_update_rejects_bad_momentum(momentum):
    w, v = np.ones(3, np.float32), np.zeros(3, np.float32)
    with pytest.raises(ValueError, match=r"momentum is .*; it must be in \[0, 1\)"):
        K.sgd_update(w, np.ones(3), lr=0.1, velocity=v, momentum=momentum)
    assert np.array_equal(w, np.ones(3))


def test_sgd_update_rejects_bad_options():
    w = np.ones(3, np.float32)
    with pytest.raises(ValueError, match="Nesterov momentum needs momentum > 0"):
        K.sgd_update(w, np.ones(3), lr=0.1, velocity=np.zeros(3, np.float32), nesterov=True)
    with pytest.raises(ValueError, match="momentum needs a velocity array"):
        K.sgd_update(w, np.ones(3), lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match=r"l2 is -1; it must be finite and >= 0"):
        K.sgd_update(w, np.ones(3), lr=0.1, l2=-1.0)
    with pytest.raises(ValueError, match=r"grad has shape \(4,\) but w has \(3,\)"):
        K.sgd_update(w, np.ones(4), lr=0.1)
    with pytest.raises(ValueError, match="w has dtype float64; expected float32"):
        K.sgd_update(np.ones(3), np.ones(3), lr=0.1)
    with pytest.raises(ValueError, match=r"w must be 1-D, got shape \(1, 3\)"):
        K.sgd_update(np.ones((1, 3), np.float32), np.ones(3), lr=0.1)


# ---------------------------------------------------------------------------
# Determinism across thread counts
# ---------------------------------------------------------------------------


def _with_threads(n, fn):
    bprop.set_num_threads(n)
    assert bprop.get_num_threads() == n
    return fn()


@pytest.mark.parametrize("trans_a, trans_b", TRANSPOSES)
def test_sgemm_same_bits_for_any_thread_count(threads, trans_a, trans_b):
    rng = _rng(71, trans_a, trans_b)
    a_op, b_op = _f32(rng, 512, 256), _f32(rng, 256, 384)
    a, b = _stored(a_op, trans_a), _stored(b_op, trans_b)
    one = _with_threads(1, lambda: K.sgemm(a, b, trans_a, trans_b))
    for n in (2, 3):
        many = _with_threads(n, lambda: K.sgemm(a, b, trans_a, trans_b))
        assert np.array_equal(one, many), f"{n} threads"


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_dense_same_bits_for_any_thread_count(threads, activation):
    rng = _rng(72)
    x = _f32(rng, 256, 300)
    w = _f32(rng, 300, 200, scale=0.06)
    b = _f32(rng, 200)
    dy = _f32(rng, 256, 200)

    def run():
        y = K.dense_forward(x, w, b, activation)
        return (y, *K.dense_backward(dy, x, w, y, activation))

    one = _with_threads(1, run)
    two = _with_threads(2, run)
    for name, a, b_ in zip(("y", "dx", "dw", "db", "dz"), one, two):
        assert np.array_equal(a, b_), name


def _train_digits():
    X, y = bprop.datasets.load_digits()
    model = bprop.Sequential([bprop.Dense(64, activation="relu"), bprop.Dense(10)], seed=1)
    history = model.fit(X, y, loss="cross_entropy", epochs=3, seed=2)
    return model, history, X, y


def test_training_same_bits_for_any_thread_count(threads):
    one, history_one, X, _ = _with_threads(1, _train_digits)
    two, history_two, _, _ = _with_threads(2, _train_digits)
    assert history_one.history["loss"] == history_two.history["loss"]
    for a, b in zip(one.get_weights(), two.get_weights()):
        assert np.array_equal(a, b)
    assert np.array_equal(one.predict_proba(X), two.predict_proba(X))


def test_thread_count_applies_to_every_thread(threads):
    # OpenMP keeps its count per thread; bprop's must reach worker threads.
    seen = []
    for n in (1, 3):
        bprop.set_num_threads(n)
        worker = threading.Thread(target=lambda: seen.append(bprop.get_num_threads()))
        worker.start()
        worker.join()
    assert seen == [1, 3]


@pytest.mark.parametrize("n", [0, -1])
def test_set_num_threads_rejects_less_than_one(threads, n):
    before = bprop.get_num_threads()
    with pytest.raises(ValueError, match=f"argument 'n' is {n}; it must be >= 1"):
        bprop.set_num_threads(n)
    assert bprop.get_num_threads() == before


@pytest.mark.parametrize("n", [1.0, True, "2"])
def test_set_num_threads_rejects_non_integers(threads, n):
    with pytest.raises(ValueError, match="n must be an integer"):
        bprop.set_num_threads(n)


# ---------------------------------------------------------------------------
# Agreement across SIMD levels
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("level", LEVELS[1:])
def test_training_agrees_across_simd_levels(level):
    # Levels round differently (FMA, tile shapes), so only closeness holds.
    previous = _core.simd_level()
    try:
        _core.simd_set("generic")
        reference, history_ref, X, y = _train_digits()
        _core.simd_set(level)
        model, history, _, _ = _train_digits()
    finally:
        _core.simd_set(previous)
    np.testing.assert_allclose(history["loss"], history_ref["loss"], rtol=1e-3)
    agree = np.mean(model.predict(X) == reference.predict(X))
    assert agree >= 0.99, f"predictions agree on {agree:.2%} of rows"
    assert np.mean(model.predict(X) == y) > 0.8
