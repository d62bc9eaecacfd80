"""Holding out validation rows: at random, or stratified by class.

Design decisions:
- The split is a function of (rows, fraction, seed) and, stratified, the
  labels: fit() passes its seed, or the model's when it has none, so a
  fit is reproducible from the model's seed alone.
- A stratified split gives each class its share of the validation rows
  by largest remainders, so the total is exactly the unstratified one
  and every class's share is within one row of its proportion; a class
  with a single row stays in training.
"""

from __future__ import annotations

import numpy as np


def validation_rows(n: int, fraction: float) -> int:
    """How many of n rows `fraction` holds out; ValueError if that leaves
    no rows for training or for validation."""
    if not 0.0 < float(fraction) < 1.0:
        raise ValueError(f"validation_split must be in (0, 1), got {fraction}")
    n_val = int(round(n * float(fraction)))
    if n_val < 1 or n_val >= n:
        raise ValueError(
            f"validation_split={fraction} leaves no rows for "
            f"{'validation' if n_val < 1 else 'training'} out of {n}"
        )
    return n_val


def split(
    n: int, fraction: float, seed: int, classes: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(training rows, validation rows), each sorted, disjoint, together
    all of range(n). With `classes` (one label, or one row of 0/1 targets,
    per row) the split is stratified."""
    n_val = validation_rows(n, fraction)
    rng = np.random.default_rng(seed)
    if classes is None:
        order = rng.permutation(n)
        return np.sort(order[n_val:]), np.sort(order[:n_val])

    classes = np.asarray(classes)
    _, index = np.unique(classes.reshape(n, -1), axis=0, return_inverse=True)
    index = index.reshape(-1)
    counts = np.bincount(index)
    # Largest remainders; ties go to the larger class, then the first.
    share = counts * (n_val / n)
    taken = np.floor(share).astype(np.int64)
    order = np.lexsort((np.arange(len(counts)), -counts, -(share - taken)))
    for c in order[: n_val - taken.sum()]:
        taken[c] += 1
    # A class must keep a training row, when it has one to spare.
    taken = np.minimum(taken, np.maximum(counts - 1, 0))
    short = n_val - taken.sum()
    for c in np.argsort(-(counts - 1 - taken), kind="stable"):
        if short <= 0:
            break
        extra = min(short, counts[c] - 1 - taken[c])
        taken[c] += extra
        short -= extra
    if short > 0:
        raise ValueError(
            f"validation_split={fraction} with stratify=True needs {n_val} validation rows "
            "but the classes cannot spare them; use a smaller split"
        )

    val = [rng.permutation(np.flatnonzero(index == c))[: taken[c]] for c in range(len(counts))]
    val_rows = np.sort(np.concatenate(val))
    train_mask = np.ones(n, dtype=bool)
    train_mask[val_rows] = False
    return np.flatnonzero(train_mask), val_rows
