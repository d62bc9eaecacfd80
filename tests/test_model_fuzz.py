"""Fuzzing the model file reader: mutated files must load as a valid
model or fail with ModelFormatError, and never crash or hang.

Two bounded fuzzers, each in a child process so that a crash is reported
as a failure with its output rather than taking pytest down:
- a seeded mutation fuzzer (always runs): bit flips, random bytes,
  overwritten 64-bit lengths, insertions, deletions and truncations of
  valid files, three times out of four with the length and checksum
  made right again, so that the parsing behind the checksum is
  exercised and not only the checksum;
- libFuzzer through atheris, when it is installed, for a fixed number
  of runs from the same seed files, guided by the coverage of bprop's
  Python code and by which check of the C reader rejected an input.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import bprop
import numpy as np
import pytest

TIMEOUT = 300

# Shared by both child processes: reseal() and check(), which loads one
# input and returns "loaded" or "rejected", raising anything else.
HARNESS = textwrap.dedent(
    """
    import zlib

    import bprop
    import numpy as np

    PREFIX = "bp_net_load_buffer: the buffer "


    def reseal(data):
        body = bytearray(data)
        if len(body) >= 32:
            body[16:24] = len(body).to_bytes(8, "little")
            body[-8:-4] = zlib.crc32(bytes(body[:-8])).to_bytes(4, "little")
        return bytes(body)


    def check(data):
        try:
            model = bprop.from_bytes(data)
        except bprop.ModelFormatError as exc:
            if not str(exc).startswith(PREFIX):
                raise AssertionError(f"unexpected message: {exc}") from None
            return "rejected"
        x = np.zeros((2, model.n_inputs), dtype=np.float32)
        try:
            out = model._outputs(x)
        except ValueError as exc:
            # A valid file may hold weights whose outputs overflow: the
            # model must say so, not crash.
            if "NaN or infinite" not in str(exc):
                raise
        else:
            assert out.shape == (2, model.n_outputs), out.shape
        assert model.to_bytes() == reseal(model.to_bytes())
        return "loaded"
    """
)

MUTATION_FUZZER = textwrap.dedent(
    """
    import json
    import random
    import sys

    seeds = [open(path, "rb").read() for path in sys.argv[3:]]
    rng = random.Random(int(sys.argv[2]))
    counts = {"loaded": 0, "rejected": 0}

    def mutate(data):
        data = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(len(data)) if data else 0
            op = rng.randrange(6)
            if op == 0 and data:
                data[at] ^= 1 << rng.randrange(8)
            elif op == 1 and data:
                data[at] = rng.randrange(256)
            elif op == 2 and len(data) >= at + 8:
                value = rng.choice([0, 1, 2**32 - 1, 2**63, 2**64 - 1, len(data),
                                    rng.randrange(2 * len(data) + 1)])
                data[at:at + 8] = value.to_bytes(8, "little")
            elif op == 3:
                data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 17)))
            elif op == 4:
                del data[at:at + rng.randrange(1, 17)]
            else:
                del data[at:]
        return bytes(data)

    for _ in range(int(sys.argv[1])):
        data = mutate(rng.choice(seeds))
        if rng.random() < 0.75:
            data = reseal(data)
        counts[check(data)] += 1
    print(json.dumps(counts))
    """
)

ATHERIS_FUZZER = textwrap.dedent(
    """
    import sys

    # The C reader is not instrumented; the error's phrase stands in for
    # the branch it took, so that libFuzzer keeps inputs that reach new
    # checks.
    PHRASES = ("empty", "magic", "truncated", "checksum", "after", "END",
               "version", "claims", "two", "needs", "NETW", "PARM", "OPTM",
               "STEP", "RNGS", "LABL", "SCAL", "META", "UTF-8", "finite")


    @atheris.instrument_func
    def feedback(message):
        for phrase in PHRASES:
            if phrase in message:
                return phrase
        return None


    def one_input(data):
        for candidate in (data, reseal(data)):
            try:
                bprop.from_bytes(candidate)
            except bprop.ModelFormatError as exc:
                feedback(str(exc))
            check(candidate)


    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
    """
)


def _seed_files(folder: Path) -> list[Path]:
    """Valid files of every shape the reader knows, small enough to fuzz."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3))
    y = (X[:, 0] > 0).astype(int)

    full = bprop.Sequential([bprop.Dense(4, activation="tanh"), bprop.Dense(2)], seed=1)
    full.fit(X, y, loss="cross_entropy", optimizer=bprop.SGD(0.1, momentum=0.5), epochs=2, seed=0)
    full.class_labels = ["no", "y\N{LATIN SMALL LETTER E WITH ACUTE}s"]
    full.input_scaling = (X.mean(axis=0), X.std(axis=0))
    full.metadata = {"a": "1", "b": ""}

    floats = bprop.Sequential([bprop.Dense(1, activation="sigmoid")], n_inputs=3, seed=2)
    floats.build(3, loss="binary_cross_entropy")
    floats.class_labels = [0.5, -2.0]

    bare = bprop.Sequential([bprop.Dense(2, activation="relu"), bprop.Dense(1)], n_inputs=3)
    bare.class_labels = [7]

    # Second moments, the update counter and a plateau schedule's state.
    adam = bprop.Sequential([bprop.Dense(3, activation="relu"), bprop.Dense(2)], seed=3)
    plateau = bprop.schedules.ReduceLROnPlateau(patience=0)
    adam.fit(X, y, loss="cross_entropy", optimizer=bprop.Adam(clip_norm=1.0, schedule=plateau),
             epochs=2, seed=0)

    paths = []
    for name, model in (("full", full), ("floats", floats), ("bare", bare), ("adam", adam)):
        path = folder / f"{name}.bpm"
        path.write_bytes(model.to_bytes())
        paths.append(path)
    return paths


# Instruments bprop's Python code for libFuzzer; it must run before the
# harness imports bprop.
ATHERIS_PRELUDE = textwrap.dedent(
    """
    import atheris

    with atheris.instrument_imports(include=["bprop"]):
        import bprop
    """
)


def _run(script: str, args: list[str], cwd: Path, prelude: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", prelude + HARNESS + script, *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        cwd=cwd,
    )


def test_seed_files_are_valid_and_resealing_them_changes_nothing(tmp_path):
    for path in _seed_files(tmp_path):
        data = path.read_bytes()
        body = bytearray(data)
        body[-8:-4] = zlib.crc32(data[:-8]).to_bytes(4, "little")
        assert bytes(body) == data
        assert bprop.from_bytes(data).to_bytes() == data


def test_mutated_files_load_or_fail_cleanly(tmp_path):
    seeds = [str(p) for p in _seed_files(tmp_path)]
    result = _run(MUTATION_FUZZER, ["10000", "12345", *seeds], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    counts = json.loads(result.stdout.strip().splitlines()[-1])
    assert counts["loaded"] + counts["rejected"] == 10000
    # Both outcomes occur: the fuzzer reaches past the checksum.
    assert counts["loaded"] >= 200 and counts["rejected"] >= 5000, counts


def test_libfuzzer_through_atheris_finds_no_crash(tmp_path):
    pytest.importorskip("atheris")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for path in _seed_files(tmp_path):
        (corpus / path.name).write_bytes(path.read_bytes())
    result = _run(
        ATHERIS_FUZZER,
        ["-runs=20000", "-seed=1", "-timeout=10", "-max_len=2048", "-len_control=0", str(corpus)],
        tmp_path,
        prelude=ATHERIS_PRELUDE,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "Done 20000 runs" in output, output[-4000:]
