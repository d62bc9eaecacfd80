"""Activations: every one against a float64 NumPy reference at every SIMD
level (alone and in the dense layer's fused GEMM epilogue), derivatives
against the analytic form and central differences, inputs of +-1e4, the
Python API by name and as objects, what models keep of them in files
and ONNX, and a small training run per activation on bundled data.
"""

from __future__ import annotations

import math
import struct
import warnings
import zlib

import bprop
import numpy as np
import pytest
from bprop import _core
from bprop import activations as A
from bprop import kernels as K

BEST = _core.simd_best()
LEVELS = _core.SIMD_LEVELS[: _core.SIMD_LEVELS.index(BEST) + 1]

#: Every activation with a non-default parameter where it takes one.
OBJECTS = {
    "identity": A.Identity(),
    "relu": A.ReLU(),
    "leaky_relu": A.LeakyReLU(0.2),
    "elu": A.ELU(1.5),
    "gelu": A.GELU(),
    "gelu_tanh": A.GELU(approximate=True),
    "silu": A.SiLU(),
    "sigmoid": A.Sigmoid(),
    "tanh": A.Tanh(),
    "softplus": A.Softplus(),
    "softmax": A.Softmax(),
    "log_softmax": A.LogSoftmax(),
}
ELEMENTWISE = [name for name, fn in OBJECTS.items() if not fn.per_row]
NEEDS_INPUT = ["elu", "gelu", "gelu_tanh", "silu", "softplus"]


@pytest.fixture(params=LEVELS)
def simd(request):
    previous = _core.simd_level()
    _core.simd_set(request.param)
    yield request.param
    _core.simd_set(previous)


def _sigmoid(x):
    with np.errstate(over="ignore"):
        e = np.exp(-np.abs(x))
        return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


_erfc = np.vectorize(math.erfc, otypes=[np.float64])


def _log_softmax(x):
    shifted = x - x.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def _softmax(x):
    return np.exp(_log_softmax(x))


def forward64(name: str, x: np.ndarray) -> np.ndarray:
    """The float64 reference of each activation, written so that no
    intermediate overflows or cancels."""
    x = np.asarray(x, np.float64)
    p = OBJECTS[name].param
    c, k = np.sqrt(2.0 / np.pi), 0.044715
    with np.errstate(over="ignore"):
        return {
            "identity": lambda: x.copy(),
            "relu": lambda: np.maximum(x, 0.0),
            "leaky_relu": lambda: np.where(x < 0, p * x, x),
            "elu": lambda: np.where(x > 0, x, p * np.expm1(np.minimum(x, 0.0))),
            "gelu": lambda: 0.5 * x * _erfc(-x / np.sqrt(2.0)),
            "gelu_tanh": lambda: x * _sigmoid(2.0 * c * (x + k * x**3)),
            "silu": lambda: x * _sigmoid(x),
            "sigmoid": lambda: _sigmoid(x),
            "tanh": lambda: np.tanh(x),
            "softplus": lambda: np.logaddexp(0.0, x),
            "softmax": lambda: _softmax(x),
            "log_softmax": lambda: _log_softmax(x),
        }[name]()


def derivative64(name: str, x: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """dy * act'(x) in float64 (the Jacobian product for the per-row ones)."""
    x, dy = np.asarray(x, np.float64), np.asarray(dy, np.float64)
    p = OBJECTS[name].param
    c, k = np.sqrt(2.0 / np.pi), 0.044715
    s = _sigmoid(x)
    with np.errstate(over="ignore", invalid="ignore"):
        if name == "softmax":
            y = _softmax(x)
            return y * (dy - (dy * y).sum(axis=1, keepdims=True))
        if name == "log_softmax":
            return dy - _softmax(x) * dy.sum(axis=1, keepdims=True)
        if name == "gelu_tanh":
            g = _sigmoid(2.0 * c * (x + k * x**3))
            d = g + x * g * (1.0 - g) * 2.0 * c * (1.0 + 3.0 * k * x**2)
            d = np.where(np.abs(x) > 20, (x > 0).astype(float), d)
        else:
            d = {
                "identity": lambda: np.ones_like(x),
                "relu": lambda: (x > 0).astype(float),
                "leaky_relu": lambda: np.where(x > 0, 1.0, p),
                "elu": lambda: np.where(x > 0, 1.0, p * np.exp(np.minimum(x, 0.0))),
                "gelu": lambda: 0.5 * _erfc(-x / np.sqrt(2.0))
                + x * np.exp(-0.5 * x * x) / np.sqrt(2.0 * np.pi),
                "silu": lambda: s + x * s * (1.0 - s),
                "sigmoid": lambda: s * (1.0 - s),
                "tanh": lambda: 1.0 / np.cosh(np.clip(x, -300, 300)) ** 2,
                "softplus": lambda: s,
            }[name]()
    return dy * d


def _inputs() -> np.ndarray:
    """Rows of extremes (+-1e4 and beyond float's exp range), values near
    0 on both sides, and random values; 13 columns, not a vector width."""
    rng = np.random.default_rng(5)
    fixed = np.array(
        [
            [-1e4, -88.0, -20.0, -3.0, -1e-3, -1e-30, 0.0, 1e-30, 1e-3, 3.0, 20.0, 88.0, 1e4],
            [1e4] * 6 + [-1e4] * 7,
            [-1e4] * 13,
        ],
        np.float32,
    )
    return np.vstack([fixed, (4.0 * rng.standard_normal((9, 13))).astype(np.float32)])


# ---------------------------------------------------------------------------
# Kernels
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(OBJECTS))
def test_forward_matches_float64_reference_at_every_level(simd, name):
    x = _inputs()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = K.activation_forward(x, OBJECTS[name])
    assert y.dtype == np.float32 and y.shape == x.shape
    assert np.isfinite(y).all()
    np.testing.assert_allclose(y, forward64(name, x), rtol=2e-5, atol=1e-30)


@pytest.mark.parametrize("name", list(OBJECTS))
def test_backward_matches_the_analytic_derivative(simd, name):
    x = _inputs()
    dy = np.random.default_rng(6).standard_normal(x.shape).astype(np.float32)
    y = K.activation_forward(x, OBJECTS[name])
    dx = K.activation_backward(dy, y, OBJECTS[name], x=x)
    assert np.isfinite(dx).all()
    np.testing.assert_allclose(dx, derivative64(name, x, dy), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", list(OBJECTS))
def test_backward_matches_central_differences(name):
    # Away from kinks (|x| > 0.05), in float64 on the reference: the
    # kernel's derivative against the slope of the float64 function.
    rng = np.random.default_rng(7)
    x = rng.uniform(0.05, 4.0, size=(6, 9)) * rng.choice([-1.0, 1.0], size=(6, 9))
    x = x.astype(np.float32)
    dy = rng.standard_normal(x.shape)
    y = K.activation_forward(x, OBJECTS[name])
    dx = K.activation_backward(dy, y, OBJECTS[name], x=x)
    h = 1e-6
    x64 = x.astype(np.float64)
    numeric = np.zeros_like(x64)
    for index in np.ndindex(x.shape):
        up, down = x64.copy(), x64.copy()
        up[index] += h
        down[index] -= h
        numeric[index] = ((forward64(name, up) - forward64(name, down)) * dy).sum() / (2 * h)
    np.testing.assert_allclose(dx, numeric, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", NEEDS_INPUT)
def test_derivatives_that_need_the_input_refuse_to_run_without_it(name):
    x = _inputs()
    y = K.activation_forward(x, name)
    with pytest.raises(ValueError, match=f"derivative of {name} needs its input: pass x="):
        K.activation_backward(np.ones_like(x), y, name)
    code = _core.ACTIVATIONS.index(name)
    dx = np.empty_like(x)
    with pytest.raises(ValueError, match="needs the activation's input"):
        _core.activation_backward(dx, np.ones_like(x), y, code, 0.0, None)


def test_the_shortcuts_match_the_objects():
    x = _inputs()
    np.testing.assert_array_equal(K.leaky_relu(x, 0.2), K.activation_forward(x, A.LeakyReLU(0.2)))
    np.testing.assert_array_equal(K.elu(x, 1.5), OBJECTS["elu"](x))
    np.testing.assert_array_equal(K.gelu(x), K.activation_forward(x, "gelu"))
    np.testing.assert_array_equal(K.gelu(x, approximate=True), K.activation_forward(x, "gelu_tanh"))
    np.testing.assert_array_equal(K.silu(x), A.SiLU()(x))
    np.testing.assert_array_equal(K.softplus(x), A.Softplus()(x))
    np.testing.assert_array_equal(K.log_softmax(x), A.LogSoftmax()(x))
    # An object called on a 1-D array treats it as one row.
    np.testing.assert_array_equal(A.GELU()(x[3]), K.gelu(x[3:4])[0])
    assert K.leaky_relu(np.float32([[-1.0]]))[0, 0] == np.float32(-0.01)


def test_log_softmax_is_the_log_of_softmax_and_shift_invariant(simd):
    x = _inputs()
    np.testing.assert_allclose(np.exp(K.log_softmax(x)), K.softmax(x), rtol=1e-5, atol=1e-30)
    small = x[3:] / 100
    np.testing.assert_allclose(K.log_softmax(small + 1000), K.log_softmax(small), atol=1e-4)


DENSE_SHAPES = [(1, 1, 1), (7, 31, 33), (37, 45, 29), (150, 300, 70)]


@pytest.mark.parametrize("name", ELEMENTWISE + ["log_softmax"])
@pytest.mark.parametrize("batch, n_in, n_out", DENSE_SHAPES)
def test_dense_forward_fuses_every_activation_at_every_level(simd, batch, n_in, n_out, name):
    # n_in = 300 spans two depth blocks: the epilogue must run once.
    rng = np.random.default_rng([batch, n_in, n_out])
    x = rng.standard_normal((batch, n_in)).astype(np.float32)
    w = (rng.standard_normal((n_in, n_out)) / np.sqrt(n_in)).astype(np.float32)
    b = rng.standard_normal(n_out).astype(np.float32)
    pre = np.empty((batch, n_out), np.float32)
    y = K.dense_forward(x, w, b, OBJECTS[name], pre=pre)
    z64 = x.astype(np.float64) @ w + b
    np.testing.assert_allclose(pre, z64, rtol=1e-4, atol=2e-5)
    np.testing.assert_allclose(y, forward64(name, z64), rtol=1e-4, atol=2e-5)
    # Without keeping the pre-activation, the fused epilogue gives the same bits.
    np.testing.assert_array_equal(K.dense_forward(x, w, b, OBJECTS[name]), y)


@pytest.mark.parametrize("name", ELEMENTWISE + ["log_softmax"])
def test_dense_backward_matches_finite_differences(simd, name):
    rng = np.random.default_rng(11)
    x = rng.standard_normal((3, 4)).astype(np.float32)
    w = rng.standard_normal((4, 5)).astype(np.float32)
    b = rng.standard_normal(5).astype(np.float32)
    r = rng.standard_normal((3, 5))
    pre = np.empty((3, 5), np.float32)
    y = K.dense_forward(x, w, b, OBJECTS[name], pre=pre)
    grads = K.dense_backward(r.astype(np.float32), x, w, y, OBJECTS[name], pre=pre)

    def objective(x_, w_, b_):
        return float((forward64(name, x_ @ w_ + b_) * r).sum())

    x64, w64, b64 = (a.astype(np.float64) for a in (x, w, b))
    h = 1e-6
    for got, value, wrap in (
        (grads.dw, w64, lambda v: objective(x64, v, b64)),
        (grads.db, b64, lambda v: objective(x64, w64, v)),
        (grads.dx, x64, lambda v: objective(v, w64, b64)),
    ):
        numeric = np.zeros_like(value)
        for index in np.ndindex(value.shape):
            up, down = value.copy(), value.copy()
            up[index] += h
            down[index] -= h
            numeric[index] = (wrap(up) - wrap(down)) / (2 * h)
        np.testing.assert_allclose(got, numeric, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("name", NEEDS_INPUT)
def test_dense_backward_needs_the_pre_activation(name):
    x, w = np.ones((2, 3), np.float32), np.ones((3, 2), np.float32)
    y = K.dense_forward(x, w, None, name)
    with pytest.raises(ValueError, match="needs the pre-activation: pass pre="):
        K.dense_backward(np.ones_like(y), x, w, y, name)


@pytest.mark.parametrize("name", NEEDS_INPUT + ["leaky_relu"])
def test_dense_same_bits_for_any_thread_count(name):
    rng = np.random.default_rng(12)
    x = rng.standard_normal((256, 300)).astype(np.float32)
    w = (0.06 * rng.standard_normal((300, 200))).astype(np.float32)
    b = rng.standard_normal(200).astype(np.float32)
    dy = rng.standard_normal((256, 200)).astype(np.float32)

    def run(threads):
        before = bprop.get_num_threads()
        bprop.set_num_threads(threads)
        try:
            pre = np.empty((256, 200), np.float32)
            y = K.dense_forward(x, w, b, name, pre=pre)
            return (y, *K.dense_backward(dy, x, w, y, name, pre=pre))
        finally:
            bprop.set_num_threads(before)

    for a, b_ in zip(run(1), run(3)):
        assert np.array_equal(a, b_)


# ---------------------------------------------------------------------------
# The Python API
# ---------------------------------------------------------------------------


def test_names_objects_and_keyword_parameters_give_the_same_layer():
    by_object = bprop.Dense(8, activation=A.LeakyReLU(0.2))
    by_keyword = bprop.Dense(8, activation="leaky_relu", slope=0.2)
    assert by_object.activation_fn == by_keyword.activation_fn == A.get("leaky_relu", slope=0.2)
    assert by_keyword.activation == "leaky_relu" and by_keyword.activation_param == 0.2
    assert bprop.Dense(8, activation="elu", alpha=2.0).activation_fn == A.ELU(2.0)
    assert bprop.Dense(8, activation="leaky_relu").activation_param == 0.01
    assert bprop.Dense(8, activation="swish").activation == "silu"
    assert bprop.Dense(8, activation=None).activation == "identity"
    assert A.GELU(approximate=True).name == "gelu_tanh"
    assert A.LeakyReLU(0.2) != A.LeakyReLU(0.3) and len({A.GELU(), A.GELU()}) == 1
    assert repr(by_object) == "Dense(8, activation=LeakyReLU(slope=0.2))"
    assert repr(bprop.Dense(3, "gelu", use_bias=False)) == (
        "Dense(3, activation='gelu', use_bias=False)"
    )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"activation": "relu", "slope": 0.1}, "activation 'relu' takes no parameter"),
        ({"activation": "elu", "slope": 0.1}, r"activation 'elu' takes only alpha=, got slope="),
        ({"activation": A.ELU(), "alpha": 2.0}, "cannot be combined with the object ELU"),
        ({"activation": "leaky_relu", "slope": -0.1}, "slope of leaky_relu must be finite and > 0"),
        ({"activation": "elu", "alpha": float("nan")}, "alpha of elu must be finite and > 0"),
        ({"activation": "mish"}, "unknown activation 'mish'"),
        ({"activation": "relu", "use_bias": 1}, "use_bias must be True or False"),
    ],
)
def test_bad_activation_arguments_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        bprop.Dense(4, **kwargs)


def test_log_softmax_only_ends_a_network():
    with pytest.raises(ValueError, match="layer 0: log_softmax is only allowed on the output"):
        bprop.Sequential([bprop.Dense(4, activation="log_softmax"), bprop.Dense(2)])
    model = bprop.Sequential([bprop.Dense(3, activation="log_softmax")], n_inputs=2)
    assert model.loss == bprop.CrossEntropy()
    with pytest.raises(ValueError, match="loss mse cannot follow a log_softmax output"):
        model.build(2, "mse")


# ---------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------


def _digits():
    X, y = bprop.datasets.load_digits()
    X = (X - X.mean(axis=0)) / (X.std(axis=0) + 1e-9)
    return X[:1400], y[:1400], X[1400:], y[1400:]


@pytest.mark.parametrize("name", ["leaky_relu", "elu", "gelu", "gelu_tanh", "silu", "softplus"])
def test_each_hidden_activation_learns_the_digits(name):
    X, y, X_test, y_test = _digits()
    model = bprop.Sequential(
        [bprop.Dense(32, activation=OBJECTS[name]), bprop.Dense(10)], seed=3
    )
    history = model.fit(
        X, y, loss="cross_entropy", optimizer=bprop.SGD(0.05, momentum=0.9), epochs=8, seed=1
    )
    losses = history.history["loss"]
    assert losses[-1] < 0.1 * losses[0]
    assert model.evaluate(X_test, y_test)["accuracy"] > 0.85


def test_a_log_softmax_output_trains_like_softmax_and_predicts_probabilities():
    X, y, X_test, y_test = _digits()

    def fit(out):
        model = bprop.Sequential(
            [bprop.Dense(24, activation="gelu"), bprop.Dense(10, activation=out)], seed=2
        )
        model.fit(X, y, optimizer=bprop.SGD(0.05), epochs=3, seed=0)
        return model

    logs, soft = fit("log_softmax"), fit("softmax")
    # Fused with cross-entropy, the output layer trains on its logits either way.
    assert all(np.array_equal(a, b) for a, b in zip(logs.get_weights(), soft.get_weights()))
    proba = logs.predict_proba(X_test)
    np.testing.assert_allclose(proba, soft.predict_proba(X_test), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    assert (logs.predict(X_test) == soft.predict(X_test)).all()


def test_tanh_and_identity_outputs_learn_a_regression():
    X, y = bprop.datasets.load_diabetes()
    X = (X - X.mean(axis=0)) / X.std(axis=0)
    t = (y - y.mean()) / y.std()
    model = bprop.Sequential([bprop.Dense(16, activation="elu", alpha=0.5), bprop.Dense(1)], seed=0)
    history = model.fit(X, t, optimizer=bprop.SGD(0.01, momentum=0.9), epochs=30, seed=0)
    assert history.history["loss"][-1] < 0.6 * history.history["loss"][0]
    assert model.evaluate(X, t)["r2"] > 0.45


def test_a_layer_without_biases_has_none_to_train_or_return():
    X, y, _, _ = _digits()
    model = bprop.Sequential(
        [bprop.Dense(16, activation="silu", use_bias=False), bprop.Dense(10)], seed=4
    )
    model.fit(X, y, loss="cross_entropy", epochs=2, seed=0)
    shapes = [w.shape for w in model.get_weights()]
    assert shapes == [(64, 16), (16, 10), (10,)]
    # The slab keeps zeros in the layer's place for biases, untouched.
    flat = np.empty(model.n_params, np.float32)
    model._net.get_params(flat)
    _, _, _, b_off = model._net.layers()[0]
    assert not flat[b_off : b_off + 16].any()
    weights = model.get_weights()
    weights[0] = weights[0] * 0.5
    model.set_weights(weights)
    np.testing.assert_array_equal(model.get_weights()[0], weights[0])
    with pytest.raises(ValueError, match="expected 3 arrays, got 4"):
        model.set_weights(weights + [np.zeros(16)])


def test_activation_parameters_and_bias_flags_survive_files_and_pickles(tmp_path):
    X, y, _, _ = _digits()
    model = bprop.Sequential(
        [
            bprop.Dense(12, activation=A.LeakyReLU(0.3), use_bias=False),
            bprop.Dense(8, activation=A.ELU(0.5)),
            bprop.Dense(10, activation="log_softmax"),
        ],
        seed=5,
    )
    model.fit(X, y, epochs=1, seed=0)
    model.save(tmp_path / "m.bpm")
    for loaded in (bprop.load(tmp_path / "m.bpm"), bprop.from_bytes(model.to_bytes())):
        assert [layer.activation_fn for layer in loaded.layers] == [
            A.LeakyReLU(0.3), A.ELU(0.5), A.LogSoftmax()
        ]
        assert [layer.use_bias for layer in loaded.layers] == [False, True, True]
        np.testing.assert_array_equal(loaded.predict_proba(X[:50]), model.predict_proba(X[:50]))
    import pickle

    unbuilt = pickle.loads(pickle.dumps(bprop.Sequential([bprop.Dense(4, "elu", alpha=2.0)])))
    assert unbuilt.layers[0].activation_fn == A.ELU(2.0)


def _rewrite_netw(data: bytes, change) -> bytes:
    """The file with NETW's payload replaced by change(payload, layers);
    lengths, padding and the checksum fixed up."""
    out, at = bytearray(data[:24]), 24
    while at < len(data) - 24:
        tag, flags, length = data[at : at + 4], *struct.unpack("<IQ", data[at + 4 : at + 16])
        payload = data[at + 16 : at + 16 + length]
        if tag == b"NETW":
            payload = change(payload, struct.unpack("<I", payload[16:20])[0])
        out += tag + struct.pack("<IQ", flags, len(payload)) + payload
        out += b"\0" * (-len(payload) % 8)
        at += 16 + length + (-length % 8)
    out += data[-24:]
    struct.pack_into("<Q", out, 16, len(out))
    struct.pack_into("<I", out, len(out) - 8, zlib.crc32(bytes(out[:-8])))
    return bytes(out)


def test_files_without_layer_options_load_with_the_defaults():
    # A writer before the layer options ended NETW with the layer records.
    model = bprop.Sequential([bprop.Dense(5, "leaky_relu"), bprop.Dense(3, "softmax")], seed=1)
    model.build(4)
    old = _rewrite_netw(model.to_bytes(), lambda payload, n: payload[: 24 + 16 * n])
    assert len(old) < len(model.to_bytes())
    loaded = bprop.from_bytes(old)
    assert loaded.layers[0].activation_fn == A.LeakyReLU(0.01)
    assert loaded.layers[0].use_bias and loaded.loss == bprop.CrossEntropy()
    X = np.random.default_rng(0).standard_normal((9, 4))
    np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))


def test_a_truncated_layer_table_is_reported_as_corrupt():
    model = bprop.Sequential([bprop.Dense(5, "elu"), bprop.Dense(2)], n_inputs=3, seed=1)
    # NETW ends with the seed (8 bytes) and 16 bytes of options per layer.
    kinds = 8 + 16 * 2
    cut = _rewrite_netw(model.to_bytes(), lambda payload, n: payload[: -kinds - 12])
    with pytest.raises(bprop.ModelFormatError, match="ends inside its layer and loss options"):
        bprop.from_bytes(cut)
    cut = _rewrite_netw(model.to_bytes(), lambda payload, n: payload[:-4])
    with pytest.raises(bprop.ModelFormatError, match="ends inside its layer options"):
        bprop.from_bytes(cut)
    flagged = _rewrite_netw(
        model.to_bytes(),
        lambda payload, n: payload[: 24 + 16 * n + 4] + b"\x02\0\0\0" + payload[24 + 16 * n + 8 :],
    )
    with pytest.raises(bprop.ModelFormatError, match="layer 0 has the unknown flags 0x00000002"):
        bprop.from_bytes(flagged)


@pytest.mark.parametrize(
    "layers, loss",
    [
        ([bprop.Dense(6, "leaky_relu", slope=0.2), bprop.Dense(3, "log_softmax")], "cross_entropy"),
        ([bprop.Dense(6, "elu", alpha=0.7, use_bias=False), bprop.Dense(2, "softplus")], "mse"),
        ([bprop.Dense(6, "gelu"), bprop.Dense(5, "gelu_tanh"), bprop.Dense(2)], "mse"),
        ([bprop.Dense(6, "silu"), bprop.Dense(2)], "poisson"),
    ],
    ids=["leaky_relu+log_softmax", "elu+softplus", "gelu", "silu+poisson"],
)
def test_onnx_export_matches_bprop(tmp_path, layers, loss):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    rng = np.random.default_rng(3)
    X = rng.standard_normal((40, 4)).astype(np.float32)
    y = rng.integers(0, 3, 40) if loss == "cross_entropy" else rng.poisson(2.0, (40, 2))
    model = bprop.Sequential(layers, seed=2)
    model.fit(X, y, loss=loss, epochs=3, seed=0)
    model.to_onnx(tmp_path / "m.onnx")
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input": X})[0]
    expected = model._outputs(X)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    opset = onnx.load(str(tmp_path / "m.onnx")).opset_import[0].version
    assert opset == (20 if any("gelu" in layer.activation for layer in layers) else 13)
