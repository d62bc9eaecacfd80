"""Resident memory stays flat over long runs.

Each case runs in a fresh interpreter, warms up (first calls size the
per-thread scratch, the allocator's arenas and NumPy's caches), then
measures the resident set size before and after many repetitions.
What each repetition allocates and would leak (its training buffers and
row order, a network, a batch of outputs, a few hundred bytes for a
single prediction) times the repetitions exceeds the bound.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/statm").exists(), reason="reads the RSS from /proc/self/statm"
)

# "Less than a few MB": repetitions x (a leaked network, workspace or
# batch of outputs) is far above it.
MAX_GROWTH_MB = 4.0

PRELUDE = """
import gc, json, os
import numpy as np
import bprop

def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

def measure(step, warm_up, repeats):
    for i in range(warm_up):
        step(i)
    gc.collect()
    before = rss_mb()
    for i in range(repeats):
        step(i)
    gc.collect()
    print(json.dumps({"before": before, "after": rss_mb()}))

rng = np.random.default_rng(0)
X = rng.standard_normal((600, 20)).astype(np.float32)
y = (X[:, 0] + X[:, 1] > 0).astype(np.int64)

def model():
    return bprop.Sequential([bprop.Dense(32, activation="relu"), bprop.Dense(2)], seed=0)
"""

CASES = {
    # 200 epochs, one fit call each, with validation, so that every
    # per-call allocation is repeated too.
    "200_epochs": """
X_big = np.tile(X, (10, 1))
y_big = np.tile(y, 10)
m = model()
def step(i):
    m.fit(X_big, y_big, loss="cross_entropy", epochs=1, batch_size=32, seed=i,
          validation_data=(X[:100], y[:100]))
measure(step, 20, 200)
""",
    "1000_create_fit_free": """
def step(i):
    m = model()
    m.fit(X[:64], y[:64], loss="cross_entropy", epochs=1, batch_size=16, seed=i)
    m.predict(X[:8])
    m.evaluate(X[:8], y[:8])
    del m
measure(step, 50, 1000)
""",
    "100000_predicts": """
m = model()
m.fit(X, y, loss="cross_entropy", epochs=1, seed=0)
row = X[:1]
def step(i):
    m.predict(row)
measure(step, 5000, 100000)
""",
}


@pytest.mark.parametrize("case", list(CASES))
def test_resident_memory_stays_flat(case):
    code = textwrap.dedent(PRELUDE) + textwrap.dedent(CASES[case])
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    sizes = json.loads(result.stdout.strip().splitlines()[-1])
    growth = sizes["after"] - sizes["before"]
    assert growth < MAX_GROWTH_MB, f"{case}: RSS grew by {growth:.2f} MB ({sizes})"
