"""Initialisers: the distribution each draws (by its moments), the same
weights for the same seed on any thread count (and, pinned bit for bit,
on any platform), per-layer initialisers and bias constants, and the
API by name and as objects.
"""

from __future__ import annotations

import bprop
import numpy as np
import pytest
from bprop import initializers as I

FAN_IN, FAN_OUT = 300, 200

#: (name, variance, normal) of each initialiser for a FAN_IN x FAN_OUT layer.
CASES = [
    ("he", 2.0 / FAN_IN, False),
    ("he_normal", 2.0 / FAN_IN, True),
    ("glorot", 2.0 / (FAN_IN + FAN_OUT), False),
    ("glorot_normal", 2.0 / (FAN_IN + FAN_OUT), True),
    ("lecun_uniform", 1.0 / FAN_IN, False),
    ("lecun_normal", 1.0 / FAN_IN, True),
]


def _first_weights(init, seed=7, activation="tanh"):
    model = bprop.Sequential(
        [bprop.Dense(FAN_OUT, activation=activation), bprop.Dense(2)],
        n_inputs=FAN_IN, seed=seed, init=init,
    )
    return model.get_weights()[0].astype(np.float64).ravel()


@pytest.mark.parametrize("name, variance, normal", CASES)
def test_each_initialiser_draws_its_distribution(name, variance, normal):
    w = _first_weights(name)
    n = w.size
    assert abs(w.mean()) < 4 * np.sqrt(variance / n)
    assert w.var() == pytest.approx(variance, rel=0.03)
    # Kurtosis tells the shapes apart: 3 for a normal, 1.8 for a uniform.
    kurtosis = ((w - w.mean()) ** 4).mean() / w.var() ** 2
    limit = np.sqrt(3 * variance)
    if normal:
        assert kurtosis == pytest.approx(3.0, abs=0.15)
        assert np.abs(w).max() > limit
        # About 68.3% of a normal's draws lie within one standard deviation.
        assert (np.abs(w) < np.sqrt(variance)).mean() == pytest.approx(0.683, abs=0.01)
    else:
        assert kurtosis == pytest.approx(1.8, abs=0.05)
        assert np.abs(w).max() <= limit


def test_the_same_seed_draws_the_same_bits_for_any_thread_count():
    before = bprop.get_num_threads()
    try:
        bprop.set_num_threads(1)
        one = _first_weights("he_normal", seed=11)
        bprop.set_num_threads(3)
        three = _first_weights("he_normal", seed=11)
    finally:
        bprop.set_num_threads(before)
    assert np.array_equal(one, three)
    assert not np.array_equal(one, _first_weights("he_normal", seed=12))


def test_draws_are_pinned_bit_for_bit():
    # The normal draws use IEEE arithmetic only (no libm), so these are the
    # values on every platform.
    def first(init):
        model = bprop.Sequential([bprop.Dense(4, "relu"), bprop.Dense(2)], n_inputs=3, seed=0,
                                 init=init)
        return model.get_weights()[0].ravel()[:4].tolist()

    assert first("he_normal") == [
        -0.737077534198761, 1.1685237884521484, -0.43678390979766846, 1.3517258167266846
    ]
    assert first("lecun_uniform") == [
        -0.7586095333099365, 0.9849853515625, -0.7673941850662231, -0.4788471460342407
    ]


def test_auto_is_he_for_the_relu_family_and_glorot_for_the_others():
    for activation in ("relu", "leaky_relu", "elu", "gelu", "gelu_tanh", "silu", "softplus"):
        assert np.array_equal(_first_weights("auto", activation=activation),
                              _first_weights("he", activation=activation))
    for activation in ("tanh", "sigmoid", "identity"):
        assert np.array_equal(_first_weights("auto", activation=activation),
                              _first_weights("glorot", activation=activation))


def test_layers_can_have_their_own_initialisers_and_bias_constants():
    layers = [
        bprop.Dense(FAN_OUT, activation="relu", kernel_init="lecun_normal", bias_init=0.1),
        bprop.Dense(5, bias_init="ones"),
        bprop.Dense(2, kernel_init=I.GlorotNormal(), bias_init=I.Constant(-0.5)),
    ]
    model = bprop.Sequential(layers, n_inputs=FAN_IN, seed=3, init="he")
    w0, b0, w1, b1, w2, b2 = model.get_weights()
    # A layer's own initialiser draws from the layer's stream: the weights
    # are those of a whole model initialised that way.
    reference = bprop.Sequential(
        [bprop.Dense(FAN_OUT, "relu"), bprop.Dense(5), bprop.Dense(2)],
        n_inputs=FAN_IN, seed=3, init="lecun_normal",
    ).get_weights()
    assert np.array_equal(w0, reference[0])
    assert np.array_equal(w1, bprop.Sequential(
        [bprop.Dense(FAN_OUT, "relu"), bprop.Dense(5), bprop.Dense(2)],
        n_inputs=FAN_IN, seed=3, init="he",
    ).get_weights()[2])
    assert np.array_equal(w2, bprop.Sequential(
        [bprop.Dense(FAN_OUT, "relu"), bprop.Dense(5), bprop.Dense(2)],
        n_inputs=FAN_IN, seed=3, init="glorot_normal",
    ).get_weights()[4])
    assert (b0 == np.float32(0.1)).all() and (b1 == 1.0).all() and (b2 == -0.5).all()


def test_names_aliases_and_objects():
    assert I.get("kaiming_normal") == I.HeNormal() == I.get("he_normal")
    assert I.get("xavier_uniform") == I.GlorotUniform() == I.get("glorot")
    assert I.get("he_uniform").name == "he"
    assert bprop.Sequential([bprop.Dense(2)], init="xavier_normal").init == "glorot_normal"
    assert bprop.Sequential([bprop.Dense(2)], init=I.LecunUniform()).init == "lecun_uniform"
    assert I.bias_value("zeros") == 0.0 and I.bias_value(I.Zeros()) == 0.0
    assert repr(bprop.Dense(3, kernel_init="he_normal", bias_init=0.5)) == (
        "Dense(3, activation='identity', kernel_init='he_normal', bias_init=0.5)"
    )


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: bprop.Sequential([bprop.Dense(2)], init="orthogonal"), "unknown init 'orth"),
        (lambda: bprop.Dense(2, kernel_init="zeros"), "unknown initialiser 'zeros'"),
        (lambda: bprop.Dense(2, bias_init="twos"), "unknown bias initialiser 'twos'"),
        (lambda: bprop.Dense(2, bias_init=float("inf")), "must be finite"),
        (lambda: bprop.Dense(2, use_bias=False, bias_init=1.0), "bias_init needs use_bias=True"),
    ],
)
def test_bad_initialisers_are_refused(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_the_initialiser_is_kept_in_model_files():
    model = bprop.Sequential([bprop.Dense(3)], n_inputs=2, seed=4, init="glorot_normal")
    loaded = bprop.from_bytes(model.to_bytes())
    assert loaded.init == "glorot_normal" and loaded.seed == 4
    assert all(np.array_equal(a, b) for a, b in zip(loaded.get_weights(), model.get_weights()))
