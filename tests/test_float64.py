"""Float64 models: Sequential(..., dtype="float64") end to end.

Predictions are compared with a NumPy float64 forward pass, gradients with
central differences, Adam's first step with NumPy, and training, files,
pickling, threads and exports with their float32 counterparts.
"""

from __future__ import annotations

import math
import pickle
import struct

import bprop
import numpy as np
import pytest
from bprop import _core

ACTIVATIONS = [
    "identity", "relu", "sigmoid", "tanh", "leaky_relu", "elu", "gelu", "gelu_tanh",
    "silu", "softplus",
]  # fmt: skip

_erfc = np.vectorize(math.erfc)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1 / (1 + e), e / (1 + e))


def _activate(name: str, z: np.ndarray) -> np.ndarray:
    """The activation `name` in float64, as bprop defines it."""
    if name == "identity":
        return z
    if name == "relu":
        return np.maximum(z, 0)
    if name == "sigmoid":
        return _sigmoid(z)
    if name == "tanh":
        return np.tanh(z)
    if name == "leaky_relu":
        # The slope is a float32 field of the layer spec, widened.
        return np.where(z < 0, float(np.float32(0.01)) * z, z)
    if name == "elu":
        return np.where(z > 0, z, np.expm1(np.minimum(z, 0)))
    if name == "gelu":
        return 0.5 * z * _erfc(-z / math.sqrt(2))
    if name == "gelu_tanh":
        c = np.clip(z, -20, 20)
        return z * _sigmoid(2 * math.sqrt(2 / math.pi) * (c + 0.044715 * c**3))
    if name == "silu":
        return z * _sigmoid(z)
    if name == "softplus":
        return np.maximum(z, 0) + np.log1p(np.exp(-np.abs(z)))
    raise AssertionError(name)


def _reference(model: bprop.Sequential, x: np.ndarray) -> np.ndarray:
    """predict_proba (or predict, for regression) in NumPy float64, with
    the layers at inference: dropout keeps every unit, batch norm uses its
    running averages."""
    weights = iter(model.get_weights())
    h = x
    for i, layer in enumerate(model.layers):
        if layer.kind == "dropout":
            continue
        if layer.kind == "dense":
            h = h @ next(weights)
            if layer.use_bias:
                h = h + next(weights)
        else:
            gamma = next(weights)
            beta = next(weights) if layer.use_bias else 0.0
            # eps is a float32 field of the layer spec, widened.
            eps = float(np.float32(layer.eps))
            if layer.kind == "batch_norm":
                mean, var = next(weights), next(weights)
            else:
                mean, var = h.mean(axis=1, keepdims=True), h.var(axis=1, keepdims=True)
            h = (h - mean) / np.sqrt(var + eps) * gamma + beta
        if i < len(model.layers) - 1 or isinstance(model.loss, bprop.MeanSquaredError):
            h = _activate(layer.activation, h)
    if isinstance(model.loss, bprop.CrossEntropy):
        h = np.exp(h - h.max(axis=1, keepdims=True))
        h = h / h.sum(axis=1, keepdims=True)
    return h


def _data(rows: int = 40, inputs: int = 7, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(rows, inputs))


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("use_bias", [True, False])
def test_predictions_match_a_numpy_forward_pass(activation: str, use_bias: bool) -> None:
    x = _data()
    model = bprop.Sequential(
        [
            bprop.Dense(13, activation=activation, use_bias=use_bias),
            bprop.Dense(9, activation=activation, bias_init=0.1 if use_bias else 0.0,
                        use_bias=use_bias),
            bprop.Dense(3, activation=activation),
        ],
        seed=3, dtype="float64",
    )  # fmt: skip
    model.fit(x, x[:, :3], loss="mse", epochs=2, verbose=False, seed=0)
    out = model.predict(x)
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, _reference(model, x), rtol=0, atol=1e-12)


@pytest.mark.parametrize("center", [True, False])
def test_norm_and_dropout_layers_match_a_numpy_forward_pass(center: bool) -> None:
    x = _data(50, 6, seed=2)
    model = bprop.Sequential(
        [
            bprop.Dense(12, activation="relu"),
            bprop.Dropout(0.25),
            bprop.BatchNorm(activation="tanh", center=center),
            bprop.Dense(8),
            bprop.LayerNorm(activation="silu", center=center),
            bprop.Dense(3),
        ],
        seed=6, dtype="float64",
    )  # fmt: skip
    model.fit(x, np.sin(x[:, :3]), loss="mse", epochs=3, batch_size=10, verbose=False)
    weights = model.get_weights()
    assert all(w.dtype == np.float64 for w in weights)
    np.testing.assert_allclose(model.predict(x), _reference(model, x), rtol=0, atol=1e-12)


def test_probabilities_match_a_numpy_forward_pass() -> None:
    x = _data()
    labels = (x[:, 0] > 0).astype(int) + (x[:, 1] > 0)
    model = bprop.Sequential(
        [bprop.Dense(16, activation="tanh"), bprop.Dense(3)], seed=1, dtype=np.float64
    )
    model.fit(x, labels, loss="cross_entropy", epochs=3, verbose=False, seed=0)
    proba = model.predict_proba(x)
    assert proba.dtype == np.float64
    np.testing.assert_allclose(proba, _reference(model, x), rtol=0, atol=1e-12)


def test_inputs_are_not_rounded_through_float32() -> None:
    model = bprop.Sequential([bprop.Dense(1, use_bias=False)], n_inputs=1, dtype="float64")
    model.set_weights([np.array([[3.0]])])
    x = np.array([[1.0], [1.0 + 1e-12]])
    out = model.predict(x).reshape(-1)
    assert out[1] - out[0] == pytest.approx(3e-12, rel=1e-3)


def _central_gradient_error(model: bprop.Sequential, x: np.ndarray, y: np.ndarray) -> float:
    """The largest relative difference between backpropagation's gradient
    and central differences over every parameter."""
    net = model._net
    targets = model._check_y(y, model.loss)
    y_arg, labels = (None, targets) if targets.dtype == np.int32 else (targets, None)
    params = np.empty(net.n_params)
    net.get_params(params)
    net.gradient(model._check_x(x), y_arg, labels)
    exact = np.empty(net.n_params)
    net.get_grads(exact)
    worst, h = 0.0, 1e-6
    for i in range(net.n_params):
        trial = params.copy()
        trial[i] += h
        net.set_params(trial)
        up = net.gradient(model._check_x(x), y_arg, labels)
        trial[i] -= 2 * h
        net.set_params(trial)
        down = net.gradient(model._check_x(x), y_arg, labels)
        numeric = (up - down) / (2 * h)
        worst = max(worst, abs(numeric - exact[i]) / max(abs(numeric), 1e-3))
    net.set_params(params)
    return worst


LOSSES = [
    ("mse", bprop.MeanSquaredError()),
    ("mae", bprop.MeanAbsoluteError()),
    ("huber", bprop.Huber(delta=0.4)),
    ("poisson", bprop.Poisson()),
    ("binary_cross_entropy", bprop.BinaryCrossEntropy(pos_weight=2.0)),
    ("cross_entropy", bprop.CrossEntropy()),
    ("cross_entropy_options", bprop.CrossEntropy(label_smoothing=0.1, class_weight=[1, 2, 0.5])),
]


@pytest.mark.parametrize("name,loss", LOSSES, ids=[name for name, _ in LOSSES])
@pytest.mark.parametrize("activation", ["tanh", "gelu", "softplus"])
def test_gradients_match_central_differences(name: str, loss: bprop.losses.Loss,
                                             activation: str) -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(size=(11, 4))
    if name.startswith("cross_entropy"):
        y = rng.integers(0, 3, size=11)
    elif name == "binary_cross_entropy":
        y = (rng.random((11, 3)) > 0.5).astype(float)
    elif name == "poisson":
        y = rng.integers(0, 5, size=(11, 3)).astype(float)
    else:
        y = rng.normal(size=(11, 3))
    model = bprop.Sequential(
        [bprop.Dense(6, activation=activation), bprop.Dense(3)], seed=2, dtype="float64"
    )
    model.build(4, loss)
    assert _central_gradient_error(model, x, y) < 1e-6


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_gradcheck_agrees_to_float64_precision(activation: str) -> None:
    x = _data(30, 5, seed=4)
    y = np.tanh(x[:, :2])
    model = bprop.Sequential(
        [bprop.Dense(8, activation=activation), bprop.Dense(2, activation="tanh")],
        seed=0, dtype="float64",
    )  # fmt: skip
    errors = bprop.gradcheck(model, x, y, max_params=40)
    assert max(errors.values()) < 1e-7


def test_adam_first_step_matches_numpy() -> None:
    x = _data(16, 3, seed=7)
    y = x @ np.array([[1.0], [-2.0], [0.5]])
    model = bprop.Sequential([bprop.Dense(1)], n_inputs=3, seed=0, dtype="float64")
    model.build(3, "mse")
    w0, b0 = (a.copy() for a in model.get_weights())
    pred = x @ w0 + b0
    grad_out = 2 * (pred - y) / len(x)
    grads = [x.T @ grad_out, grad_out.sum(axis=0)]
    # The optimizer's settings are float32 fields, widened exactly.
    lr, b1, b2, eps = (float(np.float32(v)) for v in (0.01, 0.9, 0.999, 1e-8))
    expected = []
    for p, g in zip((w0, b0), grads):
        m = (1 - b1) * g
        v = (1 - b2) * g * g
        expected.append(p - lr / (1 - b1) * m / (np.sqrt(v) / math.sqrt(1 - b2) + eps))
    model.fit(x, y, optimizer=bprop.Adam(lr=0.01), epochs=1, batch_size=16, shuffle=False,
              verbose=False)
    for got, want in zip(model.get_weights(), expected):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-15)


def test_digits_reach_the_float32_accuracy() -> None:
    x, y = bprop.datasets.load_digits()
    x = x / 16.0
    order = np.random.default_rng(0).permutation(len(x))
    train, test = order[:1400], order[1400:]
    scores = {}
    for dtype in ("float32", "float64"):
        model = bprop.Sequential(
            [bprop.Dense(64, activation="relu"), bprop.Dense(10)], seed=0, dtype=dtype
        )
        model.fit(x[train], y[train], loss="cross_entropy", optimizer="adam", epochs=15,
                  seed=1, verbose=False)
        scores[dtype] = model.evaluate(x[test], y[test])["accuracy"]
    assert scores["float64"] >= 0.95
    assert scores["float64"] >= scores["float32"] - 0.01


def test_same_seed_starts_from_the_float32_weights_widened() -> None:
    layers = [bprop.Dense(10, activation="relu"), bprop.Dense(4, kernel_init="glorot_normal")]
    single = bprop.Sequential(layers, n_inputs=6, seed=11)
    double = bprop.Sequential(layers, n_inputs=6, seed=11, dtype="float64")
    for a, b in zip(single.get_weights(), double.get_weights()):
        assert a.dtype == np.float32 and b.dtype == np.float64
        np.testing.assert_array_equal(a.astype(np.float64), b)


def _trained(dtype: str = "float64", optimizer: object = "adam") -> bprop.Sequential:
    x = _data(60, 5, seed=8)
    labels = (x[:, 0] + x[:, 1] > 0).astype(int)
    model = bprop.Sequential(
        [bprop.Dense(12, activation="gelu"), bprop.Dense(2)], seed=4, dtype=dtype
    )
    model.fit(x, labels, loss="cross_entropy", optimizer=optimizer, epochs=3, batch_size=8,
              verbose=False, seed=2)
    return model


def _netw_dtype(data: bytes) -> int:
    at = data.index(b"NETW")
    return struct.unpack_from("<I", data, at + 16)[0]


def test_save_and_load_round_trip_bit_for_bit(tmp_path) -> None:
    model = _trained()
    path = tmp_path / "model.bpm"
    model.save(path)
    assert _netw_dtype(path.read_bytes()) == 2
    assert _netw_dtype(_trained("float32").to_bytes()) == 1
    back = bprop.load(path)
    assert back.dtype == np.float64
    for a, b in zip(model.get_weights(), back.get_weights()):
        assert b.dtype == np.float64
        np.testing.assert_array_equal(a, b)
    for i in (0, 1):
        saved, loaded = np.empty(model.n_params), np.empty(model.n_params)
        model._net.get_state(i, saved)
        back._net.get_state(i, loaded)
        np.testing.assert_array_equal(saved, loaded)
    assert back._net.optimizer_step == model._net.optimizer_step
    assert back.to_bytes() == model.to_bytes()

    # Training resumes where it stopped, as it would have gone on.
    x = _data(60, 5, seed=8)
    labels = (x[:, 0] + x[:, 1] > 0).astype(int)
    for m in (model, back):
        m.fit(x, labels, epochs=2, batch_size=8, verbose=False, seed=2)
    for a, b in zip(model.get_weights(), back.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_pickle_keeps_the_dtype() -> None:
    model = _trained()
    copy = pickle.loads(pickle.dumps(model))
    assert copy.dtype == np.float64
    x = _data(5, 5)
    np.testing.assert_array_equal(copy.predict_proba(x), model.predict_proba(x))
    unbuilt = pickle.loads(pickle.dumps(bprop.Sequential([bprop.Dense(2)], dtype="float64")))
    assert unbuilt.dtype == np.float64
    assert "dtype='float64'" in repr(unbuilt)


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw", "rmsprop", "adagrad"])
def test_one_and_two_threads_give_the_same_bits(optimizer: str) -> None:
    before = bprop.get_num_threads()
    weights = []
    try:
        for threads in (1, 2):
            bprop.set_num_threads(threads)
            x = _data(300, 70, seed=9)
            y = np.sin(x[:, :3])
            model = bprop.Sequential(
                [bprop.Dense(150, activation="silu"), bprop.Dense(3)], seed=5, dtype="float64"
            )
            model.fit(x, y, optimizer=optimizer, epochs=2, batch_size=100, seed=3,
                      verbose=False)
            weights.append(model.get_weights())
    finally:
        bprop.set_num_threads(before)
    for a, b in zip(*weights):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("optimizer", [
    bprop.SGD(lr=0.05, momentum=0.9, nesterov=True, schedule="cosine"),
    bprop.Adam(lr=0.01, clip_norm=1.0),
    bprop.AdamW(lr=0.01, weight_decay=0.01, clip_value=0.5),
    bprop.RMSprop(lr=0.005, momentum=0.5),
    bprop.Adagrad(lr=0.1),
])  # fmt: skip
def test_fit_with_every_optimizer_validation_and_callbacks(optimizer: object) -> None:
    x = _data(120, 6, seed=10)
    y = np.tanh(x[:, :2] @ np.array([[1.0, -1.0], [0.5, 2.0]]))
    weights = np.random.default_rng(1).random(len(x)) + 0.5
    model = bprop.Sequential(
        [bprop.Dense(16, activation="tanh"), bprop.Dense(2)], seed=0, dtype="float64"
    )
    stop = bprop.EarlyStopping(monitor="val_loss", patience=2)
    history = model.fit(x, y, loss="huber", optimizer=optimizer, epochs=25, batch_size=16,
                        validation_split=0.25, callbacks=[stop], sample_weight=weights,
                        verbose=False, seed=0)
    losses = history.history["loss"]
    assert np.isfinite(losses).all() and np.isfinite(history.history["val_loss"]).all()
    assert losses[-1] < losses[0]
    assert model.evaluate(x, y)["loss"] < losses[0]


def test_wrong_dtype_arrays_are_refused_by_the_network() -> None:
    model = _trained()
    with pytest.raises(ValueError, match="dtype mismatch"):
        model._net.set_params(np.zeros(model.n_params, np.float32))
    single = _trained("float32")
    with pytest.raises(ValueError, match="dtype mismatch"):
        single._net.set_params(np.zeros(single.n_params, np.float64))


def test_dtype_is_validated() -> None:
    for bad in ("float16", "int32", "double precision", 3, None):
        with pytest.raises(ValueError, match="float32' or 'float64"):
            bprop.Sequential([bprop.Dense(2)], dtype=bad)
    assert bprop.Sequential([bprop.Dense(2)], dtype=np.float64).dtype == np.float64
    assert bprop.Sequential([bprop.Dense(2)]).dtype == np.float32


@pytest.mark.parametrize(
    "layer",
    [bprop.Dropout(0.3), bprop.BatchNorm(activation="gelu"), bprop.LayerNorm(center=False)],
    ids=repr,
)
def test_layer_gradients_match_central_differences(layer: object) -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(9, 4))
    y = rng.integers(0, 3, size=9)
    model = bprop.Sequential(
        [bprop.Dense(5, activation="tanh"), layer, bprop.Dense(3)], seed=2, dtype="float64"
    )
    model.build(4, "cross_entropy")
    assert _central_gradient_error(model, x, y) < 1e-6


def test_batch_norm_state_survives_files_and_pickles(tmp_path) -> None:
    x = _data(40, 4, seed=6)
    model = bprop.Sequential(
        [bprop.Dense(6), bprop.BatchNorm(), bprop.Dense(2)], seed=1, dtype="float64"
    )
    model.fit(x, x[:, :2], loss="mse", epochs=2, batch_size=8, verbose=False)
    model.save(tmp_path / "bn.bpm")
    for copy in (bprop.load(tmp_path / "bn.bpm"), pickle.loads(pickle.dumps(model))):
        for a, b in zip(model.get_weights(), copy.get_weights()):
            assert b.dtype == np.float64
            np.testing.assert_array_equal(a, b)


def test_distributed_training_is_refused_in_float64() -> None:
    model = bprop.Sequential([bprop.Dense(2)], dtype="float64")
    with pytest.raises(ValueError, match="float32 models only"):
        model.fit(_data(10, 3), _data(10, 2), epochs=1, distributed=True, verbose=False)


def test_lbfgs_trains_in_float64() -> None:
    pytest.importorskip("scipy")
    x = _data(50, 3, seed=12)
    y = x @ np.array([[1.0], [2.0], [-1.0]])
    model = bprop.Sequential([bprop.Dense(1)], seed=0, dtype="float64")
    model.fit(x, y, optimizer="lbfgs", epochs=200, verbose=False)
    assert model.evaluate(x, y)["loss"] < 1e-12


def test_summary_names_the_dtype() -> None:
    model = bprop.Sequential([bprop.Dense(3)], n_inputs=2, dtype="float64")
    assert "dtype: float64" in model.summary(print_fn=None)


def test_onnx_export_in_double() -> None:
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    x = _data(60, 5, seed=8)
    model = bprop.Sequential(
        [bprop.Dense(12, activation="tanh"), bprop.Dense(2)], seed=4, dtype="float64"
    )
    model.fit(x, (x[:, 0] > 0).astype(int), loss="cross_entropy", epochs=2, verbose=False)
    model.input_scaling = (np.full(5, 0.5), np.full(5, 2.0))
    proto = onnx.load_from_string(model_bytes := _onnx_bytes(model))
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.DOUBLE
    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    x = _data(7, 5)
    (out,) = session.run(None, {"input": x})
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, model.predict_proba(x), rtol=0, atol=1e-12)


def _onnx_bytes(model: bprop.Sequential) -> bytes:
    from bprop.onnx_export import build

    return build(model).SerializeToString()


def test_core_net_reports_its_dtype() -> None:
    net = _core.Net(3, [2], [0], 0, dtype="float64")
    assert net.dtype == "float64"
    assert net.grads_array().dtype == np.float64
    with pytest.raises(ValueError, match="dtype must be one of"):
        _core.Net(3, [2], [0], 0, dtype="float16")


@pytest.mark.filterwarnings("ignore:Stochastic Optimizer")
def test_sklearn_estimators_take_a_dtype() -> None:
    pytest.importorskip("sklearn")
    from bprop.sklearn import MLPClassifier, MLPRegressor

    x, y = bprop.datasets.load_digits()
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order] / 16.0, y[order]
    scores = {}
    for dtype in ("float32", "float64"):
        clf = MLPClassifier(hidden_layer_sizes=(32,), max_iter=100, random_state=0, dtype=dtype)
        assert clf.get_params()["dtype"] == dtype
        clf.fit(x[:1200], y[:1200])
        assert clf.model_.dtype == dtype
        scores[dtype] = clf.score(x[1200:], y[1200:])
    assert scores["float64"] >= 0.9
    assert abs(scores["float64"] - scores["float32"]) <= 0.02
    reg = MLPRegressor(hidden_layer_sizes=(8,), max_iter=50, random_state=0, dtype="float64")
    reg.fit(x[:300, :8], x[:300, 8])
    assert reg.model_.dtype == np.float64 and np.isfinite(reg.predict(x[:5, :8])).all()
    with pytest.raises(ValueError, match="float32' or 'float64"):
        MLPClassifier(dtype="float16").fit(x[:50], y[:50])
