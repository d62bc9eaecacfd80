"""Training many small models at once on one machine.

Cross-validation folds, seeds and hyper-parameter grids train many
independent networks. A small network keeps one core busy but cannot use
two (its layers are too small to split), so ``train_many`` trains several
side by side, one thread each, instead of one after another.

Design decisions:
- A pool of Python threads, each running whole ``fit`` calls. The C core
  releases the GIL for a whole epoch, so the threads run in parallel;
  only the short per-epoch bookkeeping takes turns.
- Each worker thread sets its own kernel thread count
  (``bp_set_local_num_threads``): the process-wide count and every other
  thread are left alone.
- Results never depend on thread counts, so every model ends bitwise
  equal to the same model trained alone.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from tqdm.auto import tqdm

from . import _core
from ._validation import check_positive_int
from .callbacks import History
from .model import Sequential


class FitJob:
    """One ``model.fit(X, y, **fit_kwargs)`` for ``train_many``.

    >>> FitJob(model, X[train], y[train], epochs=20, optimizer=bprop.SGD(lr=0.05))
    """

    def __init__(self, model: Sequential, X: Any, y: Any, **fit_kwargs: Any) -> None:
        if not isinstance(model, Sequential):
            raise ValueError(f"model must be a bprop.Sequential, got {model!r}")
        for name in ("verbose", "distributed"):
            if fit_kwargs.get(name):
                raise ValueError(f"train_many does not support {name}=True")
        self.model = model
        self.X = X
        self.y = y
        self.fit_kwargs = fit_kwargs

    def __repr__(self) -> str:
        return f"FitJob({self.model!r}, {sorted(self.fit_kwargs)})"


@dataclass
class FitResult:
    """What one job of ``train_many`` gave."""

    model: Sequential
    history: History | None  # None if the fit failed
    seconds: float  # wall time of the fit
    error: BaseException | None = None  # the exception, with on_error="keep"


def available_cores() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _run(job: FitJob) -> FitResult:
    start = time.perf_counter()
    try:
        history = job.model.fit(job.X, job.y, **job.fit_kwargs)
    except Exception as exc:  # handed back to the caller, who chose what to do
        return FitResult(job.model, None, time.perf_counter() - start, exc)
    return FitResult(job.model, history, time.perf_counter() - start)


def train_many(
    jobs: Sequence[FitJob | Sequential],
    X: Any = None,
    y: Any = None,
    *,
    n_jobs: int | None = None,
    threads_per_model: int = 1,
    on_error: str = "raise",
    verbose: bool = False,
    **fit_kwargs: Any,
) -> list[FitResult]:
    """Train independent models side by side, one thread each.

    Parameters
    ----------
    jobs : sequence of FitJob or Sequential
        What to train. A bare model is trained on the shared `X`, `y` with
        the shared `fit_kwargs`; a FitJob brings its own data and
        arguments (the shared `fit_kwargs` fill in what it leaves out).
        Each model may appear once.
    X, y : array-like, optional
        Data for the bare models.
    n_jobs : int, optional
        Models trained at once; by default the number of cores, at most
        the number of jobs.
    threads_per_model : int
        Kernel threads of each fit (1 by default). The thread count of
        the caller and of other threads does not change.
    on_error : str
        "raise": raise the first failure (in job order) once the fits
        already running end; jobs not yet started are dropped. "keep":
        train every job and leave a failure's exception in its result's
        ``error``.
    verbose : bool
        A progress bar counting finished models.
    **fit_kwargs
        Arguments of ``Sequential.fit`` shared by every job, such as
        ``epochs``, ``batch_size``, ``loss`` or ``seed``.

    Returns
    -------
    list of FitResult
        In the order of `jobs`: the model (trained in place), its History
        and the fit's wall time. Every model is bitwise what training it
        alone would give.

    Examples
    --------
    >>> jobs = [bprop.FitJob(make_model(seed=s), X, y, seed=s) for s in range(8)]
    >>> results = bprop.train_many(jobs, epochs=20, loss="cross_entropy")
    >>> best = max(results, key=lambda r: r.history["val_accuracy"][-1])
    """
    if on_error not in ("raise", "keep"):
        raise ValueError(f"on_error must be 'raise' or 'keep', got {on_error!r}")
    threads_per_model = check_positive_int(threads_per_model, "threads_per_model")
    work = _as_jobs(jobs, X, y, fit_kwargs)
    if not work:
        return []
    if n_jobs is None:
        n_jobs = min(len(work), available_cores())
    n_jobs = check_positive_int(n_jobs, "n_jobs")

    results: list[FitResult | None] = [None] * len(work)
    bar = tqdm(total=len(work), disable=not verbose, unit="model", desc="train_many")
    pool = ThreadPoolExecutor(
        max_workers=n_jobs,
        thread_name_prefix="bprop-train",
        initializer=_core.set_local_num_threads,
        initargs=(threads_per_model,),
    )
    try:
        futures = [pool.submit(_run, job) for job in work]
        for future in futures:
            future.add_done_callback(lambda _: bar.update(1))
        for i, future in enumerate(futures):
            results[i] = future.result()
            if results[i].error is not None and on_error == "raise":
                raise results[i].error
    finally:
        # Jobs not yet started are dropped; running fits end first.
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
    return [result for result in results if result is not None]


def _as_jobs(
    jobs: Sequence[FitJob | Sequential], X: Any, y: Any, shared: dict[str, Any]
) -> list[FitJob]:
    if isinstance(jobs, (FitJob, Sequential)):
        raise ValueError("jobs must be a sequence of FitJob or Sequential, not a single one")
    for name in ("verbose", "distributed"):
        if shared.get(name):
            raise ValueError(f"train_many does not support {name}=True")
    work = []
    for i, job in enumerate(jobs):
        if isinstance(job, Sequential):
            if X is None or y is None:
                raise ValueError(f"job {i} is a bare model: give X and y, or use FitJob")
            job = FitJob(job, X, y)
        elif not isinstance(job, FitJob):
            raise ValueError(f"job {i} is {job!r}, not a FitJob or a Sequential")
        work.append(FitJob(job.model, job.X, job.y, **{**shared, **job.fit_kwargs}))
    seen: dict[int, int] = {}
    for i, job in enumerate(work):
        if id(job.model) in seen:
            raise ValueError(
                f"jobs {seen[id(job.model)]} and {i} train the same model object; "
                "give each job its own model"
            )
        seen[id(job.model)] = i
    return work
