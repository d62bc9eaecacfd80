"""Model files from Python: save/load round trips, exact resumption of
training, pickling and copies, clean errors for damaged files, and
predictions shared by threads.

Files are compared bit for bit: a model written, read and written again
gives the same bytes, and training resumed from a file gives the same
weights as training that never stopped.
"""

from __future__ import annotations

import copy
import os
import pickle
import threading
import time
import zlib

import bprop
import numpy as np
import pytest
from bprop import datasets

SGD = dict(lr=0.05, momentum=0.9, nesterov=True, l2=1e-4)


def _standardised(X):
    std = X.std(axis=0)
    return (X - X.mean(axis=0)) / np.where(std > 0, std, 1.0)


@pytest.fixture(scope="module")
def digits():
    X, y = datasets.load_digits()
    return _standardised(X)[:500], y[:500]


def same_weights(a, b):
    wa, wb = a.get_weights(), b.get_weights()
    return len(wa) == len(wb) and all(np.array_equal(u, v) for u, v in zip(wa, wb))


def _task(kind, digits):
    """(layers, X, y, loss) for one of the three losses."""
    X, y = digits
    if kind == "cross_entropy":
        return [bprop.Dense(16, activation="relu"), bprop.Dense(10)], X, y, kind
    if kind == "binary_cross_entropy":
        targets = np.stack([y % 2, y > 4], axis=1).astype(float)
        return [bprop.Dense(12, activation="tanh"), bprop.Dense(2)], X, targets, kind
    return [bprop.Dense(12, activation="sigmoid"), bprop.Dense(1)], X, y / 9.0, "mse"


def _trained(digits, seed=3, epochs=2):
    model = bprop.Sequential([bprop.Dense(16, activation="relu"), bprop.Dense(10)], seed=seed)
    X, y = digits
    model.fit(
        X, y, loss="cross_entropy", optimizer=bprop.SGD(**SGD), epochs=epochs, batch_size=32, seed=5
    )
    return model


def _reseal(data: bytes) -> bytes:
    """The bytes with the header's length and the checksum made right."""
    body = bytearray(data)
    body[16:24] = len(body).to_bytes(8, "little")
    body[-8:-4] = zlib.crc32(bytes(body[:-8])).to_bytes(4, "little")
    return bytes(body)


# ----------------------------------------------------------------------
# Exact resumption
# ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["cross_entropy", "binary_cross_entropy", "mse"])
def test_ten_epochs_equal_five_then_save_load_and_five_more(digits, tmp_path, kind):
    layers, X, y, loss = _task(kind, digits)
    run = dict(loss=loss, optimizer=bprop.SGD(**SGD), batch_size=24, seed=11)

    straight = bprop.Sequential(copy.deepcopy(layers), seed=7)
    straight.fit(X, y, epochs=10, **run)

    first = bprop.Sequential(copy.deepcopy(layers), seed=7)
    first.fit(X, y, epochs=5, **run)
    first.save(tmp_path / "half.bpm")
    resumed = bprop.load(tmp_path / "half.bpm")
    resumed.fit(X, y, epochs=5, seed=11, batch_size=24)

    assert same_weights(straight, resumed)
    assert resumed._epochs_done == straight._epochs_done == 10
    assert resumed._steps_done == straight._steps_done == 10 * -(-len(X) // 24)


RESUMED_OPTIMIZERS = {
    "adam": lambda: bprop.Adam(lr=3e-3, weight_decay=1e-4),
    "adam_step_decay": lambda: bprop.Adam(
        lr=3e-3, clip_norm=1.0, schedule=bprop.schedules.StepDecay(3, gamma=0.5)
    ),
    "adamw_cosine_per_step": lambda: bprop.AdamW(
        schedule=bprop.schedules.CosineWarmup(period=150, warmup=20, unit="step")
    ),
    "rmsprop_plateau": lambda: bprop.RMSprop(
        momentum=0.5, schedule=bprop.schedules.ReduceLROnPlateau(factor=0.5, patience=1)
    ),
    "adagrad_inverse": lambda: bprop.Adagrad(
        lr=0.05, clip_value=0.1, schedule=bprop.schedules.InverseScaling(power=0.5)
    ),
}


@pytest.mark.parametrize("name", sorted(RESUMED_OPTIMIZERS))
def test_other_optimizers_and_schedules_resume_bit_for_bit(digits, tmp_path, name):
    """As above: 10 epochs == 5, save, load, 5 more, now with the second
    moments, the update counter and the schedule's state in the file."""
    X, y = digits
    run = dict(batch_size=24, seed=11, validation_data=(X[:60], y[:60]))

    straight = bprop.Sequential([bprop.Dense(16, activation="relu"), bprop.Dense(10)], seed=7)
    h_straight = straight.fit(X, y, loss="cross_entropy", optimizer=RESUMED_OPTIMIZERS[name](),
                              epochs=10, **run)
    first = bprop.Sequential([bprop.Dense(16, activation="relu"), bprop.Dense(10)], seed=7)
    h_first = first.fit(X, y, loss="cross_entropy", optimizer=RESUMED_OPTIMIZERS[name](),
                        epochs=5, **run)
    first.save(tmp_path / "half.bpm")
    resumed = bprop.load(tmp_path / "half.bpm")
    assert repr(resumed.optimizer) == repr(first.optimizer)
    h_rest = resumed.fit(X, y, epochs=5, **run)

    assert same_weights(straight, resumed)
    assert h_first["loss"] + h_rest["loss"] == h_straight["loss"]
    assert h_first["lr"] + h_rest["lr"] == h_straight["lr"]
    assert resumed._net.optimizer_step == straight._net.optimizer_step == 10 * -(-len(X) // 24)
    if "adam" in name:
        # Without the second moments the same file resumes differently.
        lost = bprop.load(tmp_path / "half.bpm")
        lost._net.set_state(1, np.zeros(lost.n_params, dtype=np.float32))
        lost.fit(X, y, epochs=5, **run)
        assert not same_weights(straight, lost)


def test_resuming_needs_the_momentum_and_the_epoch_counter(digits, tmp_path):
    """The exact-resume test above can fail: losing either the momentum
    or the shuffle position changes the weights."""
    X, y = digits
    straight = _trained(digits, epochs=4)
    half = _trained(digits, epochs=2)
    half.save(tmp_path / "half.bpm")

    no_momentum = bprop.load(tmp_path / "half.bpm")
    no_momentum._net.set_velocity(np.zeros(no_momentum.n_params, dtype=np.float32))
    other_shuffle = bprop.load(tmp_path / "half.bpm")
    other_shuffle._epochs_done = 0
    exact = bprop.load(tmp_path / "half.bpm")
    for model in (no_momentum, other_shuffle, exact):
        model.fit(X, y, epochs=2, batch_size=32, seed=5)

    assert same_weights(straight, exact)
    assert not same_weights(straight, no_momentum)
    assert not same_weights(straight, other_shuffle)


# ----------------------------------------------------------------------
# Round trips
# ----------------------------------------------------------------------


def test_a_round_trip_keeps_the_network_and_its_state(digits, tmp_path):
    X, y = digits
    model = _trained(digits)
    model.class_labels = [f"digit {i} \N{BLACK STAR}" for i in range(10)]
    model.input_scaling = (np.full(64, 0.5), np.full(64, 2.0))
    model.metadata = {"dataset": "digits", "note": "\N{GREEK SMALL LETTER MU}-test"}
    path = tmp_path / "model.bpm"
    model.save(path)
    back = bprop.load(str(path))

    assert [(d.units, d.activation) for d in back.layers] == [(16, "relu"), (10, "identity")]
    assert isinstance(back.loss, bprop.CrossEntropy)
    assert same_weights(model, back)
    assert repr(back.optimizer) == repr(model.optimizer)
    assert (back.seed, back.init, back._epochs_done) == (3, "auto", 2)
    assert list(back.class_labels) == list(model.class_labels)
    assert np.array_equal(back.input_scaling[0], model.input_scaling[0])
    assert np.array_equal(back.input_scaling[1], model.input_scaling[1])
    assert back.metadata == model.metadata
    assert np.array_equal(back.predict_proba(X), model.predict_proba(X))
    assert list(back.predict(X[:5])) == list(model.predict(X[:5]))
    assert back.predict(X[:1])[0].startswith("digit ")

    # Written again, the bytes are the same, in a file and in memory.
    back.save(tmp_path / "again.bpm")
    assert (tmp_path / "again.bpm").read_bytes() == path.read_bytes() == model.to_bytes()
    assert path.read_bytes()[:8] == b"\x89BPM\r\n\x1a\n"


@pytest.mark.parametrize(
    "labels, expected_dtype",
    [([10, -20], np.int64), ([0.5, 1.5], np.float64), (["no", "yes"], np.str_)],
)
def test_class_labels_of_every_type_round_trip_and_name_predictions(labels, expected_dtype):
    X = np.array([[-3.0, 0.0], [3.0, 0.0]])
    model = bprop.Sequential([bprop.Dense(1, activation="sigmoid")], n_inputs=2, seed=0)
    model.set_weights([np.array([[5.0], [0.0]]), np.array([0.0])])
    model.class_labels = labels
    back = bprop.from_bytes(model.to_bytes())

    assert back.class_labels.dtype.type is np.dtype(expected_dtype).type
    assert list(back.class_labels) == labels
    assert list(back.predict(X)) == labels


def test_input_scaling_is_applied_in_float64_before_the_network(digits):
    X, y = digits
    raw = X * 3.0 + 7.0
    model = _trained(digits)
    scaled = bprop.from_bytes(model.to_bytes())
    scaled.input_scaling = (np.full(64, 7.0), np.full(64, 3.0))

    expected = model.predict_proba(((raw - 7.0) / 3.0).astype(np.float32))
    assert np.array_equal(scaled.predict_proba(raw), expected)
    with pytest.raises(ValueError, match="nonzero"):
        scaled.input_scaling = (np.zeros(64), np.zeros(64))
    with pytest.raises(ValueError, match="takes 64"):
        scaled.input_scaling = (np.zeros(3), np.ones(3))


def test_class_labels_must_fit_the_outputs():
    model = bprop.Sequential([bprop.Dense(3)], n_inputs=2, seed=0)
    with pytest.raises(ValueError, match="3 output"):
        model.class_labels = ["a", "b"]
    with pytest.raises(ValueError, match="1-D sequence"):
        model.class_labels = [[1, 2, 3]]
    model.class_labels = None
    assert model.class_labels is None


def test_a_model_without_training_state_loads_and_trains(digits):
    """A file with only the network (as a bare C program may write)."""
    X, y = digits
    model = bprop.Sequential([bprop.Dense(10)], n_inputs=64, seed=1)
    model.build(64, loss="cross_entropy")
    back = bprop.from_bytes(model.to_bytes())
    assert back.optimizer is None and back._epochs_done == 0
    history = back.fit(X, y, epochs=2, seed=0)
    assert history.history["loss"][1] < history.history["loss"][0]


def test_saving_an_unbuilt_model_raises():
    model = bprop.Sequential([bprop.Dense(2)])
    with pytest.raises(RuntimeError, match="no parameters"):
        model.to_bytes()


# ----------------------------------------------------------------------
# Pickling and copies
# ----------------------------------------------------------------------


def test_pickle_holds_the_model_file_bytes(digits):
    X, _ = digits
    model = _trained(digits)
    data = pickle.dumps(model)
    back = pickle.loads(data)

    assert model.to_bytes() in data
    assert same_weights(model, back)
    assert np.array_equal(back.predict_proba(X), model.predict_proba(X))
    assert repr(back.optimizer) == repr(model.optimizer)


def test_deepcopy_is_independent(digits):
    X, y = digits
    model = _trained(digits)
    before = model.get_weights()
    twin = copy.deepcopy(model)
    twin.fit(X, y, epochs=1, seed=0)

    assert not same_weights(model, twin)
    assert all(np.array_equal(u, v) for u, v in zip(before, model.get_weights()))


def test_an_unbuilt_model_pickles_its_configuration():
    model = bprop.Sequential([bprop.Dense(4, activation="tanh"), bprop.Dense(1)], seed=9)
    model.metadata = {"k": "v"}
    back = pickle.loads(pickle.dumps(model))
    assert not back.built
    assert [(d.units, d.activation) for d in back.layers] == [(4, "tanh"), (1, "identity")]
    assert (back.seed, back.metadata) == (9, {"k": "v"})


# ----------------------------------------------------------------------
# Damaged files
# ----------------------------------------------------------------------


def _damaged(good: bytes) -> dict[str, tuple[bytes, str]]:
    """Damaged variants of `good`, each with the phrase its error names."""
    newer = bytearray(good)
    newer[8:12] = (bprop.model_file.FORMAT_VERSION + 1).to_bytes(4, "little")
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0x10
    return {
        "empty": (b"", "is empty"),
        "wrong magic": (b"GIF89a" + good[6:], "not a bprop model file"),
        "text": (b"hello, world\n" * 4, "not a bprop model file"),
        "truncated": (good[: len(good) // 3], "is truncated"),
        "header only": (good[:24], "is truncated"),
        "corrupted": (bytes(flipped), "checksum"),
        "trailing bytes": (good + b"\0" * 8, "after"),
        "newer version": (_reseal(bytes(newer)), "newer"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "empty",
        "wrong magic",
        "text",
        "truncated",
        "header only",
        "corrupted",
        "trailing bytes",
        "newer version",
    ],
)
def test_a_damaged_file_raises_a_clear_error_and_changes_nothing(digits, tmp_path, case):
    X, _ = digits
    model = _trained(digits)
    weights, outputs = model.get_weights(), model.predict_proba(X)
    data, phrase = _damaged(model.to_bytes())[case]
    path = tmp_path / "damaged.bpm"
    path.write_bytes(data)

    with pytest.raises(bprop.ModelFormatError, match=phrase) as info:
        bprop.load(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, ValueError)
    with pytest.raises(bprop.ModelFormatError, match=phrase):
        bprop.from_bytes(data)

    # The model in memory is untouched.
    assert all(np.array_equal(u, v) for u, v in zip(weights, model.get_weights()))
    assert np.array_equal(model.predict_proba(X), outputs)


def test_a_newer_version_names_the_versions(digits):
    newer = bytearray(_trained(digits).to_bytes())
    newer[8:12] = (7).to_bytes(4, "little")
    with pytest.raises(bprop.ModelFormatError, match=r"version 7.*up to version 1.*upgrade"):
        bprop.from_bytes(_reseal(bytes(newer)))


def test_io_errors_name_the_file_and_a_failed_save_keeps_the_old_file(digits, tmp_path):
    model = _trained(digits)
    missing = tmp_path / "no" / "such" / "model.bpm"
    with pytest.raises(OSError, match="no/such/model.bpm.*No such file"):
        bprop.load(missing)
    with pytest.raises(OSError, match="no/such/model.bpm"):
        model.save(missing)
    with pytest.raises(OSError, match="cannot read"):
        bprop.load(tmp_path)

    path = tmp_path / "model.bpm"
    model.save(path)
    saved = path.read_bytes()
    (tmp_path / "blocker").mkdir()
    with pytest.raises(OSError, match="blocker"):
        model.save(tmp_path / "blocker")
    assert path.read_bytes() == saved
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker", "model.bpm"]


def test_saving_over_a_file_replaces_it_atomically(digits, tmp_path):
    path = tmp_path / "model.bpm"
    _trained(digits, seed=1).save(path)
    second = _trained(digits, seed=2)
    second.save(path)
    assert path.read_bytes() == second.to_bytes()
    assert os.listdir(tmp_path) == ["model.bpm"]


# ----------------------------------------------------------------------
# Threads
# ----------------------------------------------------------------------


def test_eight_threads_predicting_on_a_loaded_model_equal_the_serial_results(digits, tmp_path):
    X, _ = digits
    _trained(digits).save(tmp_path / "model.bpm")
    model = bprop.load(tmp_path / "model.bpm")
    chunks = [X[i::8] for i in range(8)]
    serial = [model.predict_proba(chunk) for chunk in chunks]
    results: list[list[np.ndarray]] = [[] for _ in range(8)]
    barrier = threading.Barrier(8)

    def work(i):
        barrier.wait()
        for _ in range(20):
            results[i].append(model.predict_proba(chunks[i]))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(len(r) == 20 for r in results)
    assert all(np.array_equal(out, serial[i]) for i in range(8) for out in results[i])


def test_predict_releases_the_gil_while_the_c_core_works():
    """A Python thread keeps running while another predicts a large
    batch: with the GIL held it would stall for the whole call."""
    rng = np.random.default_rng(0)
    model = bprop.Sequential(
        [bprop.Dense(768, activation="relu"), bprop.Dense(768, activation="relu"), bprop.Dense(10)],
        n_inputs=256,
        seed=0,
    )
    X = rng.normal(size=(20000, 256)).astype(np.float32)
    model.predict(X[:10])
    ticks: list[float] = []
    stop = threading.Event()

    def count():
        while not stop.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0.0005)

    threads = bprop.get_num_threads()
    bprop.set_num_threads(1)
    counter = threading.Thread(target=count)
    try:
        counter.start()
        time.sleep(0.02)
        start = time.perf_counter()
        model.predict(X)
        end = time.perf_counter()
    finally:
        stop.set()
        counter.join()
        bprop.set_num_threads(threads)
    during = [t for t in ticks if start <= t <= end]
    gaps = np.diff([start, *during, end])
    assert end - start > 0.03, "the batch is too small to tell"
    assert gaps.max() < 0.5 * (end - start), (gaps.max(), end - start)
