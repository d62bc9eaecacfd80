"""Dropout, BatchNorm and LayerNorm: forward passes in training and at
inference against float64 NumPy references, backward passes against
finite differences and a NumPy reference, dropout masks, running
statistics, model files, bad arguments and a training run on digits.

Training-mode outputs are read from the network's own forward pass
(``net.gradient`` followed by ``net.layer_output``), on a clone so that
the model's running statistics stay as the test set them.
"""

from __future__ import annotations

import math
import pickle

import bprop
import numpy as np
import pytest
from bprop import datasets
from bprop.diagnostics import layer_outputs

# Widths over 64 cross a block of columns in the batch norm kernels.
WIDE = 70

ACTIVATIONS = {
    "identity": lambda z: z,
    "relu": lambda z: np.maximum(z, 0.0),
    "tanh": np.tanh,
    "sigmoid": lambda z: 1.0 / (1.0 + np.exp(-z)),
}

# The float64 references of the gradient tests add these.
GRAD_ACTIVATIONS = {
    **ACTIVATIONS,
    "elu": lambda z: np.where(z > 0, z, np.expm1(np.minimum(z, 0.0))),
    "silu": lambda z: z / (1.0 + np.exp(-z)),
    "gelu": lambda z: 0.5 * z * (1.0 + np.vectorize(math.erf)(z / math.sqrt(2.0))),
    "softplus": lambda z: np.logaddexp(0.0, z),
}


def _training_outputs(model, X, y):
    """Every layer's training-mode output for (X, y), from a clone."""
    x = model._check_x(X)
    return layer_outputs(model._net.clone(), x, model._check_y(y, model.loss))


def _batch_norm(z, mean, var, gamma, beta, eps):
    return gamma * (z - mean) / np.sqrt(var + eps) + beta


def _layer_norm(z, gamma, beta, eps):
    mean = z.mean(axis=1, keepdims=True)
    var = z.var(axis=1, keepdims=True)
    return gamma * (z - mean) / np.sqrt(var + eps) + beta


def _norm_model(layer, n_inputs=5, seed=3):
    """Dense(WIDE) then `layer`, with random gamma and beta (and running
    statistics for batch norm) set through set_weights."""
    # mse keeps a sigmoid output a layer of its own, unfused.
    model = bprop.Sequential([bprop.Dense(WIDE), layer], seed=seed).build(n_inputs, "mse")
    rng = np.random.default_rng(seed)
    weights = model.get_weights()
    at = 2
    weights[at] = rng.uniform(0.5, 2.0, WIDE)
    at += 1
    if layer.use_bias:
        weights[at] = rng.normal(size=WIDE)
        at += 1
    if layer.kind == "batch_norm":
        weights[at] = rng.normal(size=WIDE)
        weights[at + 1] = rng.uniform(0.2, 3.0, WIDE)
    model.set_weights(weights)
    return model


def _unpack(model):
    """(W, b, gamma, beta, running mean, running var) as float64; beta 0
    without center, running statistics None without batch norm."""
    weights = [w.astype(np.float64) for w in model.get_weights()]
    W, b, gamma = weights[:3]
    rest = weights[3:]
    beta = rest.pop(0) if model.layers[1].use_bias else np.zeros_like(gamma)
    running = rest if rest else (None, None)
    return W, b, gamma, beta, *running


def _x(rows, cols, seed=0, shift=1.0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(rows, cols)) * 2 + shift).astype(np.float32)


def same_weights(a, b):
    wa, wb = a.get_weights(), b.get_weights()
    return len(wa) == len(wb) and all(np.array_equal(u, v) for u, v in zip(wa, wb))


@pytest.fixture
def threads():
    """Restores the thread count a test changes."""
    before = bprop.get_num_threads()
    yield
    bprop.set_num_threads(before)


# ----------------------------------------------------------------------
# BatchNorm
# ----------------------------------------------------------------------


@pytest.mark.parametrize("center", [True, False], ids=["center", "no_center"])
@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_batch_norm_training_output_uses_the_batch_statistics(activation, center):
    layer = bprop.BatchNorm(eps=1e-3, activation=activation, center=center)
    model = _norm_model(layer)
    X = _x(13, 5)
    y = np.zeros((13, WIDE))
    W, b, gamma, beta, *_ = _unpack(model)

    z = X.astype(np.float64) @ W + b
    expected = ACTIVATIONS[activation](
        _batch_norm(z, z.mean(axis=0), z.var(axis=0), gamma, beta, 1e-3)
    )
    got = _training_outputs(model, X, y)[1]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("center", [True, False], ids=["center", "no_center"])
@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_batch_norm_at_inference_uses_the_running_statistics(activation, center):
    layer = bprop.BatchNorm(eps=1e-3, activation=activation, center=center)
    model = _norm_model(layer)
    X = _x(13, 5)
    W, b, gamma, beta, mean, var = _unpack(model)

    z = X.astype(np.float64) @ W + b
    expected = ACTIVATIONS[activation](_batch_norm(z, mean, var, gamma, beta, 1e-3))
    np.testing.assert_allclose(model.predict(X), expected, rtol=1e-4, atol=1e-5)
    # The batch's own statistics would give something else.
    batch = ACTIVATIONS[activation](
        _batch_norm(z, z.mean(axis=0), z.var(axis=0), gamma, beta, 1e-3)
    )
    assert np.abs(model.predict(X) - batch).max() > 0.1


@pytest.mark.parametrize("via", ["gradient", "fit"])
@pytest.mark.parametrize("momentum", [0.1, 0.35, 1.0])
def test_one_training_batch_moves_the_running_statistics(momentum, via):
    model = bprop.Sequential([bprop.BatchNorm(momentum=momentum)], n_inputs=WIDE, seed=0)
    rng = np.random.default_rng(1)
    init_mean = rng.normal(size=WIDE).astype(np.float32)
    init_var = rng.uniform(0.5, 2.0, WIDE).astype(np.float32)
    model.set_weights([np.ones(WIDE), np.zeros(WIDE), init_mean, init_var])
    X = _x(21, WIDE, shift=3.0)
    y = np.zeros((21, WIDE))

    if via == "gradient":
        model._net.gradient(model._check_x(X), model._check_y(y, model.loss), None)
    else:
        model.fit(X, y, optimizer=bprop.SGD(0.01), epochs=1, batch_size=None)
    mean, var = model.get_weights()[2:]

    x = X.astype(np.float64)
    expected_mean = (1 - momentum) * init_mean + momentum * x.mean(axis=0)
    expected_var = (1 - momentum) * init_var + momentum * x.var(axis=0, ddof=1)
    np.testing.assert_allclose(mean, expected_mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(var, expected_var, rtol=1e-5, atol=1e-6)


def test_a_last_batch_of_one_row_leaves_the_running_statistics_alone():
    X = _x(33, WIDE, shift=2.0)
    y = np.random.default_rng(0).normal(size=(33, WIDE))
    run = dict(optimizer=bprop.SGD(0.01), epochs=1, batch_size=32, shuffle=False)
    full = bprop.Sequential([bprop.BatchNorm(momentum=0.5)], n_inputs=WIDE, seed=0)
    full.fit(X, y, **run)
    first = bprop.Sequential([bprop.BatchNorm(momentum=0.5)], n_inputs=WIDE, seed=0)
    first.fit(X[:32], y[:32], **run)

    mean, var = full.get_weights()[2:]
    np.testing.assert_array_equal(mean, first.get_weights()[2])
    np.testing.assert_array_equal(var, first.get_weights()[3])
    # The first batch did move them, and beta still learned from the row.
    assert np.abs(mean).min() > 0.25
    assert not np.array_equal(full.get_weights()[1], first.get_weights()[1])


# ----------------------------------------------------------------------
# Backward passes
# ----------------------------------------------------------------------


def _forward64(model, weights, X, masks):
    """The model's output for X in float64 from get_weights-shaped
    `weights`, in training mode: batch statistics, and each dropout
    layer's mask (kept inputs' scale, or 0) from `masks`."""
    h = X
    weights = iter(weights)
    for i, layer in enumerate(model.layers):
        if layer.kind == "dropout":
            h = h * masks[i]
            continue
        first = next(weights)
        bias = next(weights) if layer.use_bias else 0.0
        if layer.kind == "dense":
            h = h @ first + bias
        else:
            axis = 0 if layer.kind == "batch_norm" else 1
            mean = h.mean(axis=axis, keepdims=True)
            var = h.var(axis=axis, keepdims=True)
            h = first * (h - mean) / np.sqrt(var + layer.eps) + bias
            if layer.kind == "batch_norm":
                next(weights), next(weights)
        h = GRAD_ACTIVATIONS[layer.activation](h)
    return h


def _central_differences(model, X, y, masks, step=1e-6):
    """d mean((output - y)^2) / d weight for every array of get_weights
    but the running statistics, by central differences in float64."""
    weights = [w.astype(np.float64) for w in model.get_weights()]
    running = _running_indices(model)
    result = []
    for k, array in enumerate(weights):
        if k in running:
            continue
        grad = np.zeros_like(array)
        for index in np.ndindex(array.shape):
            value = array[index]
            array[index] = value + step
            up = np.mean((_forward64(model, weights, X, masks) - y) ** 2)
            array[index] = value - step
            down = np.mean((_forward64(model, weights, X, masks) - y) ** 2)
            array[index] = value
            grad[index] = (up - down) / (2 * step)
        result.append(grad)
    return result


def _running_indices(model):
    """Where get_weights puts running statistics."""
    at, found = 0, set()
    for layer in model.layers:
        if layer.kind == "dropout":
            continue
        at += 2 if layer.use_bias else 1
        if layer.kind == "batch_norm":
            found |= {at, at + 1}
            at += 2
    return found


def _backprop(model, X, y):
    """bprop's gradient as a list shaped like get_weights without the
    running statistics, and the training-mode layer outputs."""
    net = model._net.clone()
    outputs = layer_outputs(net, model._check_x(X), model._check_y(y, model.loss))
    grads = np.empty(net.n_params, dtype=np.float32)
    net.get_grads(grads)
    result = []
    n_in = model.n_inputs
    for layer, (w_off, n_w, b_off, n_b) in zip(model.layers, net.spans()):
        if layer.kind == "dropout":
            continue
        shape = (n_in, layer.units) if layer.kind == "dense" else (n_w,)
        result.append(grads[w_off : w_off + n_w].reshape(shape))
        if layer.use_bias:
            result.append(grads[b_off : b_off + n_b])
        n_in = n_b
    return result, outputs


def _masks(model, outputs):
    """Each dropout layer's mask, read off its training-mode output."""
    masks = {}
    for i, layer in enumerate(model.layers):
        if layer.kind == "dropout":
            kept = outputs[i] != 0
            assert (outputs[i - 1][kept] != 0).all()
            masks[i] = kept / (1.0 - layer.rate)
    return masks


NORM_KINDS = [bprop.BatchNorm, bprop.LayerNorm]


def _gradient_model(kind, activation, center, seed):
    rng = np.random.default_rng(seed)
    layers = [bprop.Dense(7, activation="tanh"), bprop.Dense(3)]
    if kind is bprop.Dropout:
        layers.insert(1, bprop.Dropout(0.3))
    else:
        layers.insert(1, kind(activation=activation, center=center))
    model = bprop.Sequential(layers, seed=seed).build(6, "mse")
    if kind is not bprop.Dropout:
        # Away from gamma 1 and beta 0, so that every term counts.
        weights = model.get_weights()
        weights[2] = rng.uniform(0.5, 1.5, 7)
        if center:
            weights[3] = rng.normal(size=7) * 0.5
        model.set_weights(weights)
    X = rng.normal(size=(23, 6)) * 1.5 + 0.5
    y = rng.normal(size=(23, 3))
    return model, X, y


GRAD_CASES = [
    (kind, activation, center)
    for kind in NORM_KINDS
    for activation in GRAD_ACTIVATIONS
    for center in (True, False)
] + [(bprop.Dropout, "identity", True)]


def _case_id(case):
    kind, activation, center = case
    return f"{kind.__name__}-{activation}" + ("" if center else "-no_center")


@pytest.mark.parametrize("case", GRAD_CASES, ids=_case_id)
def test_gradients_match_float64_central_differences(case):
    model, X, y = _gradient_model(*case, seed=5)
    got, outputs = _backprop(model, X, y)
    expected = _central_differences(model, X, y, _masks(model, outputs))

    assert [g.shape for g in got] == [e.shape for e in expected]
    largest = max(np.abs(e).max() for e in expected)
    for k, (g, e) in enumerate(zip(got, expected)):
        # float32 backpropagation against float64 differences.
        assert np.abs(g - e).max() <= 1e-5 * largest + 1e-4 * np.abs(e).max(), k


GRADCHECK_CASES = [
    (kind, activation, center)
    for kind in NORM_KINDS
    for activation in ["identity", "relu", "tanh", "elu", "silu", "gelu"]
    for center in (True, False)
]


@pytest.mark.parametrize("case", GRADCHECK_CASES, ids=_case_id)
def test_gradcheck_passes_norm_layers(case):
    model, X, y = _gradient_model(*case, seed=4)
    errors = bprop.gradcheck(model, X, y)
    assert sorted(errors) == [0, 1, 2]
    # float32 losses through a normalisation are noisier than through
    # dense layers alone: correct gradients reach a few 1e-3 here, while a
    # missing term of the backward pass gives errors near 1.
    assert max(errors.values()) < 1e-2, errors


@pytest.mark.parametrize("kind", [bprop.BatchNorm, bprop.LayerNorm])
def test_norm_last_under_cross_entropy_matches_finite_differences(kind):
    rng = np.random.default_rng(6)
    X = rng.normal(size=(30, 5))
    y = rng.integers(0, 4, size=30)
    model = bprop.Sequential([bprop.Dense(4), kind()], seed=1)
    model.build(5, "cross_entropy")
    errors = bprop.gradcheck(model, X, y)
    assert sorted(errors) == [0, 1]
    assert max(errors.values()) < 1e-3, errors


def _reference_gradient(kind, x, y, W, b, gamma, beta, eps):
    """The mse loss and its gradient wrt (W, b, gamma, beta) of Dense then
    a norm layer with identity activation, in float64."""
    axis = 0 if kind == "batch_norm" else 1
    z = x @ W + b
    mean = z.mean(axis=axis, keepdims=True)
    rstd = 1.0 / np.sqrt(z.var(axis=axis, keepdims=True) + eps)
    xh = (z - mean) * rstd
    out = gamma * xh + beta
    loss = np.mean((out - y) ** 2)

    dout = 2.0 * (out - y) / out.size
    dgamma = (dout * xh).sum(axis=0)
    dbeta = dout.sum(axis=0)
    dxh = dout * gamma
    dz = rstd * (
        dxh - dxh.mean(axis=axis, keepdims=True) - xh * (dxh * xh).mean(axis=axis, keepdims=True)
    )
    return loss, [x.T @ dz, dz.sum(axis=0), dgamma, dbeta]


@pytest.mark.parametrize("kind", [bprop.BatchNorm, bprop.LayerNorm])
def test_norm_gradients_match_a_float64_reference(kind):
    layer = kind(eps=1e-2)
    model = _norm_model(layer, n_inputs=9, seed=7)
    rng = np.random.default_rng(8)
    X = _x(17, 9, seed=9)
    y = rng.normal(size=(17, WIDE))
    W, b, gamma, beta, *_ = _unpack(model)

    net = model._net.clone()
    loss = net.gradient(model._check_x(X), model._check_y(y, model.loss), None)
    grads = np.empty(net.n_params, dtype=np.float32)
    net.get_grads(grads)
    expected_loss, expected = _reference_gradient(
        layer.kind, X.astype(np.float64), y, W, b, gamma, beta, 1e-2
    )

    assert loss == pytest.approx(expected_loss, rel=1e-5)
    spans = net.spans()
    got = [
        grads[spans[0][0] : spans[0][0] + spans[0][1]].reshape(9, WIDE),
        grads[spans[0][2] : spans[0][2] + spans[0][3]],
        grads[spans[1][0] : spans[1][0] + spans[1][1]],
        grads[spans[1][2] : spans[1][2] + spans[1][3]],
    ]
    for name, g, e in zip(["W", "b", "gamma", "beta"], got, expected):
        scale = max(np.abs(e).max(), np.abs(expected[0]).max() * 1e-3)
        assert np.abs(g - e).max() <= 1e-4 * scale, name


def test_batch_norm_input_gradient_sums_to_zero_over_the_batch():
    """The bias before a batch norm cannot change its output."""
    model = _norm_model(bprop.BatchNorm(), n_inputs=4, seed=2)
    X = _x(12, 4)
    y = np.random.default_rng(0).normal(size=(12, WIDE))
    net = model._net.clone()
    net.gradient(model._check_x(X), model._check_y(y, model.loss), None)
    grads = np.empty(net.n_params, dtype=np.float32)
    net.get_grads(grads)
    _w_off, _n_w, b_off, n_b = net.spans()[0]
    assert np.abs(grads[b_off : b_off + n_b]).max() <= 1e-4 * np.abs(grads).max()


# ----------------------------------------------------------------------
# LayerNorm
# ----------------------------------------------------------------------


@pytest.mark.parametrize("center", [True, False], ids=["center", "no_center"])
@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_layer_norm_matches_numpy_in_training_and_at_inference(activation, center):
    layer = bprop.LayerNorm(eps=1e-3, activation=activation, center=center)
    model = _norm_model(layer)
    X = _x(13, 5)
    W, b, gamma, beta, *_ = _unpack(model)

    z = X.astype(np.float64) @ W + b
    expected = ACTIVATIONS[activation](_layer_norm(z, gamma, beta, 1e-3))
    training = _training_outputs(model, X, np.zeros((13, WIDE)))[1]
    inference = model.predict(X)
    np.testing.assert_allclose(training, expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(inference, expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(inference, training, rtol=1e-6, atol=1e-6)


def test_layer_norm_trains_on_batches_of_one_row():
    X = _x(9, 4)
    y = np.random.default_rng(0).normal(size=(9, 3))
    model = bprop.Sequential(
        [bprop.Dense(6), bprop.LayerNorm(activation="tanh"), bprop.Dense(3)], seed=0
    )
    before = model.fit(X, y, optimizer="adam", epochs=1, batch_size=1, seed=0).history["loss"][0]
    after = model.fit(X, y, epochs=30, batch_size=1).history["loss"][-1]
    assert np.isfinite(after) and after < before


# ----------------------------------------------------------------------
# Dropout
# ----------------------------------------------------------------------


def _dropout_output(rate, X, seed=1, step=0):
    model = bprop.Sequential([bprop.Dropout(rate)], n_inputs=X.shape[1], seed=seed)
    net = model._net.clone()
    net.optimizer_step = step
    return layer_outputs(net, model._check_x(X), np.zeros(X.shape, np.float32))[0]


@pytest.mark.parametrize("rate", [0.05, 0.3, 0.5, 0.9])
def test_dropout_zeroes_about_rate_of_the_inputs(rate):
    X = _x(200, 101, shift=5.0)
    assert (X != 0).all()
    out = _dropout_output(rate, X)
    dropped = np.mean(out == 0)
    # Six standard deviations of a binomial proportion, plus the rounding
    # of the rate to 16 bits.
    bound = 6 * np.sqrt(rate * (1 - rate) / out.size) + 2.0**-16
    assert abs(dropped - rate) <= bound


@pytest.mark.parametrize("rate", [0.5, 0.75])
def test_dropout_scales_the_kept_inputs_exactly(rate):
    X = _x(64, 33)
    out = _dropout_output(rate, X)
    kept = out != 0
    assert 0 < kept.mean() < 1
    # 1 / (1 - rate) is a power of two: the product is exact.
    np.testing.assert_array_equal(out[kept], X[kept] / np.float32(1 - rate))


def test_dropout_scales_the_kept_inputs_by_one_over_one_minus_rate():
    X = _x(64, 33)
    out = _dropout_output(0.3, X)
    kept = out != 0
    expected = X[kept].astype(np.float64) / (1 - 0.3)
    np.testing.assert_allclose(out[kept], expected, rtol=2.0**-22, atol=0)


def test_dropout_is_the_identity_at_inference():
    X = _x(40, 12)
    model = bprop.Sequential([bprop.Dropout(0.6)], n_inputs=12, seed=0)
    np.testing.assert_array_equal(model.predict(X), X)

    with_dropout = bprop.Sequential(
        [bprop.Dense(8, "relu"), bprop.Dropout(0.5), bprop.Dense(3)], n_inputs=12, seed=0
    )
    without = bprop.Sequential([bprop.Dense(8, "relu"), bprop.Dense(3)], n_inputs=12, seed=9)
    without.set_weights(with_dropout.get_weights())
    np.testing.assert_array_equal(with_dropout.predict(X), without.predict(X))


def test_dropout_rate_zero_is_the_identity():
    X = _x(40, 12)
    np.testing.assert_array_equal(_dropout_output(0.0, X), X)

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, size=40)
    with_dropout = bprop.Sequential(
        [bprop.Dense(8, "relu"), bprop.Dropout(0.0), bprop.Dense(3)], n_inputs=12, seed=0
    )
    without = bprop.Sequential([bprop.Dense(8, "relu"), bprop.Dense(3)], n_inputs=12, seed=9)
    without.set_weights(with_dropout.get_weights())
    run = dict(loss="cross_entropy", optimizer="adam", epochs=3, batch_size=8, seed=1)
    with_dropout.fit(X, y, **run)
    without.fit(X, y, **run)
    assert same_weights(with_dropout, without)


def test_dropout_masks_change_with_the_step_and_come_back_with_it():
    X = _x(30, 20, shift=5.0)
    first = _dropout_output(0.5, X, step=0)
    np.testing.assert_array_equal(_dropout_output(0.5, X, step=0), first)
    second = _dropout_output(0.5, X, step=1)
    assert np.mean((first == 0) != (second == 0)) > 0.3


def test_dropout_masks_come_from_the_seed():
    X = _x(30, 20, shift=5.0)
    a = _dropout_output(0.5, X, seed=1)
    np.testing.assert_array_equal(_dropout_output(0.5, X, seed=1), a)
    assert np.mean((a == 0) != (_dropout_output(0.5, X, seed=2) == 0)) > 0.3


def _dropout_fit(model_seed, rate, init_from=None):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 10))
    y = rng.integers(0, 3, size=120)
    model = bprop.Sequential(
        [bprop.Dense(16, "relu"), bprop.Dropout(rate), bprop.Dense(3)],
        n_inputs=10,
        seed=model_seed,
    )
    if init_from is not None:
        model.set_weights(init_from.get_weights())
    model.fit(X, y, loss="cross_entropy", optimizer="adam", epochs=3, batch_size=16, seed=5)
    return model


def test_the_same_seed_gives_bitwise_identical_training():
    a = _dropout_fit(7, 0.4)
    b = _dropout_fit(7, 0.4)
    assert same_weights(a, b)


def test_another_seed_gives_other_masks():
    """Same initial weights and shuffles; only the dropout seed differs."""
    a = _dropout_fit(7, 0.4)
    b = _dropout_fit(8, 0.4, init_from=bprop.Sequential(a.layers, n_inputs=10, seed=7))
    assert not same_weights(a, b)
    # Without dropout the same two runs agree: the masks made the difference.
    c = _dropout_fit(7, 0.0)
    d = _dropout_fit(8, 0.0, init_from=bprop.Sequential(c.layers, n_inputs=10, seed=7))
    assert same_weights(c, d)


def test_one_and_two_threads_give_the_same_bits(threads):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(2048, 32))
    y = rng.integers(0, 10, size=2048)
    layers = [
        bprop.Dense(256),
        bprop.BatchNorm(activation="relu"),
        bprop.Dropout(0.3),
        bprop.LayerNorm(),
        bprop.Dense(10),
    ]
    results = []
    for n in (1, 2):
        bprop.set_num_threads(n)
        model = bprop.Sequential(layers, seed=3)
        model.fit(X, y, loss="cross_entropy", optimizer="adam", epochs=2, batch_size=1024)
        outputs = _training_outputs(model, X[:1024], y[:1024])
        results.append((model, outputs, model.predict_proba(X)))
    (a, out_a, prob_a), (b, out_b, prob_b) = results
    assert same_weights(a, b)
    for u, v in zip(out_a, out_b):
        np.testing.assert_array_equal(u, v)
    np.testing.assert_array_equal(prob_a, prob_b)


# ----------------------------------------------------------------------
# Model files
# ----------------------------------------------------------------------


def _mixed_layers():
    return [
        bprop.Dense(12),
        bprop.BatchNorm(momentum=0.3, activation="relu"),
        bprop.Dropout(0.25),
        bprop.Dense(10),
        bprop.BatchNorm(eps=1e-3, center=False),
        bprop.LayerNorm(eps=1e-4, activation="tanh"),
        bprop.Dropout(0.1),
        bprop.LayerNorm(center=False),
        bprop.Dense(3),
    ]


@pytest.fixture(scope="module")
def digits3():
    X, y = datasets.load_digits()
    keep = y < 3
    X, y = X[keep][:300], y[keep][:300]
    std = X.std(axis=0)
    return (X - X.mean(axis=0)) / np.where(std > 0, std, 1.0), y


def _round_trip(model, route, tmp_path):
    if route == "file":
        model.save(tmp_path / "m.bpm")
        return bprop.load(tmp_path / "m.bpm")
    if route == "bytes":
        return bprop.from_bytes(model.to_bytes())
    return pickle.loads(pickle.dumps(model))


ROUTES = ["file", "bytes", "pickle"]


@pytest.mark.parametrize("route", ROUTES)
def test_a_round_trip_keeps_every_layer_kind(digits3, tmp_path, route):
    X, y = digits3
    model = bprop.Sequential(_mixed_layers(), seed=2)
    model.fit(X, y, loss="cross_entropy", optimizer="adam", epochs=2, batch_size=32)
    back = _round_trip(model, route, tmp_path)

    assert [layer.config() for layer in back.layers] == [layer.config() for layer in model.layers]
    assert same_weights(model, back)
    np.testing.assert_array_equal(back.predict_proba(X), model.predict_proba(X))
    assert back._net.seed == model._net.seed
    assert back.summary(None) == model.summary(None)


@pytest.mark.parametrize("route", ROUTES)
def test_training_resumes_exactly_after_a_round_trip(digits3, tmp_path, route):
    X, y = digits3
    run = dict(loss="cross_entropy", optimizer=bprop.Adam(3e-3), batch_size=24, seed=11)
    straight = bprop.Sequential(_mixed_layers(), seed=2)
    straight.fit(X, y, epochs=4, **run)

    half = bprop.Sequential(_mixed_layers(), seed=2)
    half.fit(X, y, epochs=2, **run)
    back = _round_trip(half, route, tmp_path)
    back.fit(X, y, epochs=2, batch_size=24, seed=11)

    assert same_weights(straight, back)
    np.testing.assert_array_equal(back.predict_proba(X), straight.predict_proba(X))


def test_a_round_trip_keeps_each_kind_alone(tmp_path):
    X = _x(20, 4)
    y = np.random.default_rng(0).normal(size=(20, 4))
    for layer in (
        bprop.Dropout(0.4),
        bprop.BatchNorm(momentum=0.2, eps=1e-4, activation="sigmoid"),
        bprop.LayerNorm(eps=1e-3, activation="elu", center=False),
    ):
        model = bprop.Sequential([layer], n_inputs=4, seed=0)
        model.fit(X, y, loss="mse", optimizer="adam", epochs=2, batch_size=5)
        back = _round_trip(model, "file", tmp_path)
        assert repr(back.layers[0]) == repr(layer)
        assert same_weights(model, back)
        np.testing.assert_array_equal(back.predict(X), model.predict(X))


def _sections(data):
    """{tag: (flags, payload)} of a model file."""
    sections, at = {}, 24
    while at < len(data):
        tag = data[at : at + 4].decode()
        flags = int.from_bytes(data[at + 4 : at + 8], "little")
        length = int.from_bytes(data[at + 8 : at + 16], "little")
        sections[tag] = (flags, data[at + 16 : at + 16 + length])
        at += 16 + length + (-length) % 8
    return sections


def test_the_file_layout_is_the_documented_one():
    """docs/model-format.md: kind codes, seed and kind options in NETW,
    each kind's parameters in PARM, running averages in NORM."""
    layers = [
        bprop.Dense(5),
        bprop.Dropout(0.25),
        bprop.BatchNorm(momentum=0.3, eps=1e-3, center=False),
        bprop.LayerNorm(eps=1e-4, activation="tanh"),
        bprop.BatchNorm(),
        bprop.Dense(3),
    ]
    model = bprop.Sequential(layers, seed=77)
    X = _x(40, 4)
    y = np.random.default_rng(0).integers(0, 3, size=40)
    loss = bprop.losses.CrossEntropy(class_weight=[0.5, 2.0, 1.0])
    model.fit(X, y, loss=loss, optimizer="adam", epochs=2, batch_size=8)
    sections = _sections(model.to_bytes())
    n = len(layers)

    _flags, netw = sections["NETW"]
    table = np.frombuffer(netw[24 : 24 + 16 * n], "<u4").reshape(n, 4)
    assert table[:, 0].tolist() == [1, 2, 3, 4, 3, 1]
    assert table[:, 2].tolist() == [5, 5, 5, 5, 5, 3]
    no_bias = np.frombuffer(netw[24 + 16 * n : 24 + 24 * n], "<u4")[1::2]
    assert no_bias.tolist() == [0, 1, 1, 0, 0, 0]
    k = int.from_bytes(netw[36 + 24 * n : 40 + 24 * n], "little")
    c = 40 + 24 * n + 4 * k
    assert k == 3
    assert int.from_bytes(netw[c : c + 8], "little") == 77 == model._net.seed
    options = np.frombuffer(netw[c + 8 : c + 8 + 16 * n], "<f4").reshape(n, 4)
    expected = [
        [0, 0, 0, 0],
        [0.25, 0, 0, 0],
        [0, 1e-3, 0.3, 0],
        [0, 1e-4, 0, 0],
        [0, 1e-5, 0.1, 0],
        [0, 0, 0, 0],
    ]
    np.testing.assert_array_equal(options, np.array(expected, np.float32))
    assert len(netw) == c + 8 + 16 * n

    w = model.get_weights()
    dense0, bn2, ln3, bn4, dense5 = w[0:2], w[2:5], w[5:7], w[7:11], w[11:13]
    zeros = np.zeros(5, np.float32)
    slab = [a.ravel() for a in (*dense0, bn2[0], zeros, *ln3, *bn4[:2], *dense5)]
    _flags, parm = sections["PARM"]
    assert int.from_bytes(parm[:8], "little") == model.n_params == sum(a.size for a in slab)
    np.testing.assert_array_equal(np.frombuffer(parm[8:], "<f4"), np.concatenate(slab))

    flags, norm = sections["NORM"]
    assert flags == 1
    assert int.from_bytes(norm[:8], "little") == 20
    running = np.concatenate([bn2[1], bn2[2], bn4[2], bn4[3]])
    np.testing.assert_array_equal(np.frombuffer(norm[8:], "<f4"), running)
    assert not np.array_equal(running, np.tile(np.repeat([0.0, 1.0], 5), 2))
    assert "NORM" not in _sections(bprop.Sequential([bprop.Dense(2)], n_inputs=3).to_bytes())


# ----------------------------------------------------------------------
# Bad arguments
# ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: bprop.Dropout(1.0), r"rate must be in \[0, 1\), got 1.0"),
        (lambda: bprop.Dropout(-0.1), r"rate must be in \[0, 1\), got -0.1"),
        (lambda: bprop.Dropout("0.5"), "rate must be a number"),
        (lambda: bprop.BatchNorm(momentum=0), r"momentum must be in \(0, 1\], got 0"),
        (lambda: bprop.BatchNorm(momentum=1.5), r"momentum must be in \(0, 1\], got 1.5"),
        (lambda: bprop.BatchNorm(eps=0), "eps must be finite and > 0, got 0"),
        (lambda: bprop.BatchNorm(eps=float("nan")), "eps must be finite and > 0"),
        (lambda: bprop.LayerNorm(eps=-1), "eps must be finite and > 0, got -1"),
        (lambda: bprop.LayerNorm(center=1), "center must be True or False"),
        (lambda: bprop.BatchNorm(activation="nope"), "nope"),
    ],
)
def test_bad_layer_arguments_are_refused(make, message):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize("kind", [bprop.BatchNorm, bprop.LayerNorm])
def test_softmax_is_refused_on_a_norm_layer_before_the_output(kind):
    with pytest.raises(ValueError, match="layer 1: softmax is only allowed on the output layer"):
        bprop.Sequential([bprop.Dense(4), kind(activation="softmax"), bprop.Dense(2)])


def test_batch_norm_training_on_one_row_batches_is_refused_and_changes_nothing():
    X = _x(10, 4)
    y = np.random.default_rng(0).integers(0, 2, size=10)
    model = bprop.Sequential([bprop.Dense(3), bprop.BatchNorm(), bprop.Dense(2)], seed=0)
    model.fit(X, y, loss="cross_entropy", optimizer="adam", epochs=1, batch_size=5)
    before = model.get_weights()
    steps = model._net.optimizer_step

    with pytest.raises(ValueError, match="batch norm layer.*at least 2 rows"):
        model.fit(X, y, epochs=1, batch_size=1)
    with pytest.raises(ValueError, match="batch norm layer.*at least 2 rows"):
        model.fit(X[:1], y[:1], epochs=1, batch_size=32)
    after = model.get_weights()
    assert len(after) == len(before)
    assert all(np.array_equal(u, v) for u, v in zip(before, after))
    assert model._net.optimizer_step == steps


def test_a_negative_running_variance_is_refused():
    model = bprop.Sequential([bprop.BatchNorm()], n_inputs=3)
    weights = model.get_weights()
    weights[3] = np.array([1.0, -0.5, 1.0])
    with pytest.raises(ValueError, match="running variance; it must be >= 0"):
        model.set_weights(weights)
    np.testing.assert_array_equal(model.get_weights()[3], np.ones(3, np.float32))


# ----------------------------------------------------------------------
# Summary and weights
# ----------------------------------------------------------------------


def test_summary_shows_widths_and_parameter_counts():
    model = bprop.Sequential(
        [
            bprop.Dense(64),
            bprop.BatchNorm(activation="relu"),
            bprop.Dropout(0.2),
            bprop.BatchNorm(center=False),
            bprop.LayerNorm(),
            bprop.LayerNorm(center=False),
            bprop.Dense(10),
        ],
        n_inputs=20,
    )
    text = model.summary(None)
    rows = [line for line in text.splitlines() if line[:1].isdigit()]
    assert [row.split()[-1] for row in rows] == [
        str(20 * 64 + 64),
        "128",
        "0",
        "64",
        "128",
        "64",
        str(64 * 10 + 10),
    ]
    assert all("(None, 64)" in row for row in rows[1:6])
    assert text.endswith(f"total parameters: {20 * 64 + 64 + 128 + 64 + 128 + 64 + 650}")


def test_get_weights_lists_each_kind_in_order():
    model = bprop.Sequential(
        [
            bprop.Dense(5),
            bprop.Dropout(0.5),
            bprop.BatchNorm(),
            bprop.LayerNorm(center=False),
            bprop.BatchNorm(center=False),
        ],
        n_inputs=3,
    )
    weights = model.get_weights()
    assert [w.shape for w in weights] == [(3, 5), (5,)] + [(5,)] * 8
    ones, zeros = np.ones(5, np.float32), np.zeros(5, np.float32)
    expected = [ones, zeros, zeros, ones, ones, ones, zeros, ones]
    for got, want in zip(weights[2:], expected):
        np.testing.assert_array_equal(got, want)


# ----------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------


def test_digits_reach_95_percent_with_batch_norm_and_dropout():
    X, y = datasets.load_digits()
    std = X.std(axis=0)
    X = (X - X.mean(axis=0)) / np.where(std > 0, std, 1.0)
    order = np.random.default_rng(0).permutation(len(X))
    train, val = order[:1400], order[1400:]
    model = bprop.Sequential(
        [
            bprop.Dense(64),
            bprop.BatchNorm(activation="relu"),
            bprop.Dropout(0.2),
            bprop.Dense(10),
        ],
        seed=0,
    )
    model.fit(X[train], y[train], loss="cross_entropy", optimizer="adam", epochs=20, batch_size=32)
    accuracy = np.mean(model.predict(X[val]) == y[val])
    assert accuracy >= 0.95


@pytest.mark.parametrize("layer", [bprop.Dropout(0.4), bprop.BatchNorm(), bprop.LayerNorm()])
def test_a_model_of_width_keeping_layers_alone_fits_before_it_is_built(layer):
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(20, 4)), rng.normal(size=(20, 4))
    model = bprop.Sequential([layer], seed=0)
    history = model.fit(X, y, loss="mse", epochs=2, batch_size=10)
    assert len(history["loss"]) == 2 and model.n_outputs == 4
    assert model.predict(X).shape == (20, 4)
