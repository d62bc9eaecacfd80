"""The per-ISA element-wise kernels and narrow GEMM tiles at every width.

The SIMD levels hold a row of up to 16 classes in one or two vectors and
take the last columns of a row, a matrix or a slab with masked loads and
stores, so these tests walk the widths around 8, 16 and 32 at every SIMD
level: cross-entropy rows against float64, bias gradients (column sums,
the same bits at every level), SGD momentum steps (the same bits at
every level), and products with a few output columns whose B is read in
place up to the last byte of a page.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import bprop
import numpy as np
import pytest
from bprop import _core
from bprop import kernels as K

BEST = _core.simd_best()
LEVELS = _core.SIMD_LEVELS[: _core.SIMD_LEVELS.index(BEST) + 1]
WIDTHS = [1, 2, 7, 8, 9, 10, 15, 16, 17, 24, 31, 32, 33, 100]


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


def _at_each_level(fn):
    """fn() at every SIMD level, as {level: result}."""
    previous = _core.simd_level()
    try:
        results = {}
        for level in LEVELS:
            _core.simd_set(level)
            results[level] = fn()
        return results
    finally:
        _core.simd_set(previous)


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng([20240611, *key])


def _cross_entropy64(z, labels, weights=None):
    """Mean weighted cross-entropy and its gradient, in float64."""
    z = np.asarray(z, np.float64)
    rows = np.arange(len(z))
    shifted = z - z.max(axis=1, keepdims=True)
    lse = np.log(np.exp(shifted).sum(axis=1))
    w = np.ones(len(z)) if weights is None else np.asarray(weights, np.float64)
    loss = float(np.mean(w * (lse - shifted[rows, labels])))
    grad = np.exp(shifted - lse[:, None])
    grad[rows, labels] -= 1.0
    return loss, grad * (w / len(z))[:, None]


# ---------------------------------------------------------------------------
# Cross-entropy rows
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("cols", WIDTHS)
def test_cross_entropy_matches_float64_at_every_width(simd, cols, weighted):
    rng = _rng(cols, weighted)
    rows = 37
    z = (4.0 * rng.standard_normal((rows, cols))).astype(np.float32)
    labels = rng.integers(0, cols, rows)
    weights = rng.uniform(0.0, 2.0, rows) if weighted else None
    value, grad = K.cross_entropy(z, labels, grad=True, sample_weight=weights)
    ref_value, ref_grad = _cross_entropy64(z, labels, weights)
    assert value == pytest.approx(ref_value, rel=1e-6)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-5, atol=1e-8)
    # The loss does not depend on whether the gradient is asked for.
    assert K.cross_entropy(z, labels, sample_weight=weights) == value


@pytest.mark.parametrize("cols", [3, 10, 16, 17, 40])
def test_cross_entropy_finite_for_extreme_logits_at_every_level(simd, cols):
    # Certain and right, certain and wrong, all equal and very negative.
    z = np.zeros((3, cols), np.float32)
    z[0, 0] = z[1, 0] = 1e4
    z[0, 1:] = z[1, 1:] = -1e4
    z[2, :] = -1e30
    labels = np.array([0, cols - 1, cols // 2])
    value, grad = K.cross_entropy(z, labels, grad=True)
    expected = (0.0 + 2e4 + np.log(cols)) / 3.0
    assert value == pytest.approx(expected, rel=1e-6)
    assert np.isfinite(grad).all()
    ref = np.zeros((3, cols))
    ref[1, 0], ref[1, cols - 1] = 1.0, -1.0
    ref[2, :] = 1.0 / cols
    ref[2, cols // 2] -= 1.0
    np.testing.assert_allclose(grad, ref / 3.0, atol=1e-7)


@pytest.mark.parametrize("cols", [10, 40])
def test_cross_entropy_propagates_nan_at_every_level(simd, cols):
    z = np.zeros((4, cols), np.float32)
    z[2, cols - 1] = np.nan
    value, grad = K.cross_entropy(z, np.zeros(4, np.int64), grad=True)
    assert np.isnan(value)
    assert np.isnan(grad[2]).all() and np.isfinite(grad[[0, 1, 3]]).all()


@pytest.mark.parametrize("cols", [10, 40])
def test_cross_entropy_of_many_rows_same_bits_for_any_thread_count(simd, threads, cols):
    # Enough rows for several rows per chunk, blocks of rows per kernel
    # call and two threads.
    rng = _rng(cols, 7)
    rows = 600_000 // cols + 13
    z = (3.0 * rng.standard_normal((rows, cols))).astype(np.float32)
    labels = rng.integers(0, cols, rows)
    runs = []
    for n in (1, 2):
        bprop.set_num_threads(n)
        runs.append(K.cross_entropy(z, labels, grad=True))
    assert runs[0][0] == runs[1][0]
    assert np.array_equal(runs[0][1], runs[1][1])
    assert runs[0][0] == pytest.approx(_cross_entropy64(z, labels)[0], rel=1e-6)


# ---------------------------------------------------------------------------
# Bias gradients: column sums
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("n_out", [1, 9, 10, 16, 17, 33, 64, 65, 100, 130])
def test_bias_gradient_has_the_same_bits_at_every_level(n_out):
    # Through identity, dz is dy at every level, so the column sums of the
    # bias gradient are taken over the same values in the same order.
    rng = _rng(n_out, 3)
    batch, n_in = 37, 5
    x = rng.standard_normal((batch, n_in)).astype(np.float32)
    w = rng.standard_normal((n_in, n_out)).astype(np.float32)
    dy = (1e3 * rng.standard_normal((batch, n_out))).astype(np.float32)
    y = np.zeros((batch, n_out), np.float32)
    sums = _at_each_level(lambda: K.dense_backward(dy, x, w, y, "identity").db)
    ref = dy.astype(np.float64).sum(axis=0)
    for level, db in sums.items():
        assert np.array_equal(db, sums["generic"]), level
        np.testing.assert_allclose(db, ref, rtol=1e-6, atol=1e-3)


# ---------------------------------------------------------------------------
# SGD with momentum
# ---------------------------------------------------------------------------


def _sgd32(w, v, grad, lr, mu, l2, nesterov):
    """One step in float32, each operation rounded as the kernels round it."""
    lr, mu, l2 = np.float32(lr), np.float32(mu), np.float32(l2)
    g = grad + l2 * w
    v = mu * v + g
    return w - lr * ((g + mu * v) if nesterov else v), v


@pytest.mark.parametrize("nesterov", [False, True], ids=["momentum", "nesterov"])
@pytest.mark.parametrize("n", [1, 7, 8, 9, 15, 16, 17, 33, 100])
def test_sgd_momentum_has_the_same_bits_at_every_level(n, nesterov):
    rng = _rng(n, nesterov)
    w0 = rng.standard_normal(n).astype(np.float32)
    grads = [rng.standard_normal(n).astype(np.float32) for _ in range(3)]

    def run():
        w, v = w0.copy(), np.zeros(n, np.float32)
        for grad in grads:
            K.sgd_update(w, grad, lr=0.1, velocity=v, momentum=0.9, nesterov=nesterov, l2=0.01)
        return w, v

    ref_w, ref_v = w0.copy(), np.zeros(n, np.float32)
    for grad in grads:
        ref_w, ref_v = _sgd32(ref_w, ref_v, grad, 0.1, 0.9, 0.01, nesterov)
    results = _at_each_level(run)
    generic_w, generic_v = results["generic"]
    assert not np.array_equal(generic_w, w0)
    for level, (w, v) in results.items():
        np.testing.assert_allclose(w, ref_w, rtol=1e-6, atol=1e-7, err_msg=level)
        np.testing.assert_allclose(v, ref_v, rtol=1e-6, atol=1e-7, err_msg=level)
        assert np.array_equal(w, generic_w) and np.array_equal(v, generic_v), level


# ---------------------------------------------------------------------------
# Products with a few output columns
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("activation", ["identity", "relu"])
@pytest.mark.parametrize("n_out", [1, 5, 10, 15, 16, 17, 20, 31, 33])
@pytest.mark.parametrize("batch", [1, 12, 13, 32, 49])
def test_dense_forward_with_few_outputs_matches_float64(simd, batch, n_out, activation):
    rng = _rng(batch, n_out, 5)
    x = rng.standard_normal((batch, 29)).astype(np.float32)
    w = rng.standard_normal((29, n_out)).astype(np.float32)
    b = rng.standard_normal(n_out).astype(np.float32)
    y = K.dense_forward(x, w, b, activation)
    ref = x.astype(np.float64) @ w.astype(np.float64) + b
    if activation == "relu":
        ref = np.maximum(ref, 0.0)
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses mprotect")
@pytest.mark.parametrize("level", LEVELS)
def test_edge_panel_of_b_read_in_place_stays_inside_the_matrix(level):
    # B ends on the last byte before a page that cannot be read: a kernel
    # that read a whole vector past the last column would crash.
    script = textwrap.dedent(
        """
        import ctypes, mmap
        import numpy as np
        from bprop import kernels as K

        page = mmap.PAGESIZE
        buf = mmap.mmap(-1, 2 * page)
        base = ctypes.addressof(ctypes.c_char.from_buffer(buf))
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        assert libc.mprotect(base + page, page, 0) == 0
        floats = np.frombuffer(buf, np.float32, page // 4)
        rng = np.random.default_rng(0)
        for k, n in [(32, 10), (7, 1), (5, 17), (3, 33)]:
            b = floats[page // 4 - k * n :].reshape(k, n)
            b[:] = rng.standard_normal((k, n))
            a = rng.standard_normal((40, k)).astype(np.float32)
            c = K.sgemm(a, b)
            ref = a.astype(np.float64) @ b.astype(np.float64)
            assert np.abs(c - ref).max() < 1e-4, (k, n)
        print("ok")
        """
    )
    env = {**os.environ, "BPROP_SIMD": level}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
