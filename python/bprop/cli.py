"""The ``bprop`` command line.

``bprop train`` trains a network on a data set that ships with the package
(digits by default) or on a CSV file, and reports its score on held-out
rows. ``bprop info`` shows the version and the CPU path in use.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import sys
import time
from collections.abc import Sequence

import numpy as np

from . import (
    __version__,
    cpu_info,
    datasets,
    distributed,
    optimizers,
    schedules,
    set_num_threads,
)
from .layers import ACTIVATIONS, BatchNorm, Dense, Dropout, Layer, LayerNorm
from .model import DivergenceError, Sequential

# Integer targets with at most this many distinct values are classes.
_MAX_CLASSES = 100

_FLOAT32_MAX = float(np.finfo(np.float32).max)
_FLOAT32_TINY = float(np.finfo(np.float32).tiny)

# More kernel threads than this is a typing mistake, not a machine.
_MAX_THREADS = 4096


def _hidden_sizes(text: str) -> list[int]:
    if text.strip() in ("", "none", "0"):
        return []
    try:
        sizes = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--hidden must be comma-separated layer sizes such as 64,32, got {text!r}"
        ) from None
    if any(size < 1 for size in sizes):
        raise argparse.ArgumentTypeError(f"--hidden sizes must be >= 1, got {text!r}")
    return sizes


def _positive(kind: type, most: float = float("inf")) -> object:
    """A parser of numbers in (0, most]; floats must also be positive and
    finite in float32, where the C core computes."""

    def parse(text: str) -> object:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {kind.__name__}, got {text!r}") from None
        if not 0 < value <= most:
            bound = "" if most == float("inf") else f" and <= {most:g}"
            raise argparse.ArgumentTypeError(f"must be > 0{bound}, got {text!r}")
        if kind is float and not _FLOAT32_TINY <= value <= _FLOAT32_MAX:
            raise argparse.ArgumentTypeError(f"{text!r} is out of float32's range")
        return value

    parse.__name__ = kind.__name__
    return parse


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bprop", description="Train neural networks by backpropagation."
    )
    parser.add_argument("--version", action="version", version=f"bprop {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser(
        "train",
        help="train a network and report its held-out score",
        description="Train a multi-layer perceptron on a bundled data set or a CSV file, "
        "holding out a test split, and print the test score.",
    )
    train.add_argument(
        "data", nargs="?", metavar="CSV", help="a CSV file with a header row (instead of --dataset)"
    )
    source = train.add_mutually_exclusive_group()
    source.add_argument(
        "--dataset",
        choices=sorted(datasets.DATASETS),
        default=None,
        help="a bundled data set (default: digits)",
    )
    source.add_argument("--csv", metavar="FILE", help="the same as giving CSV")
    train.add_argument(
        "--target",
        metavar="COLUMN",
        help="name or 0-based index of the target column of --csv (default: the last)",
    )
    train.add_argument(
        "--task",
        choices=("auto", "classification", "regression"),
        default="auto",
        help="auto: classification when the target holds few distinct integers",
    )
    train.add_argument(
        "--hidden",
        type=_hidden_sizes,
        default=None,
        metavar="SIZES",
        help="hidden layer sizes, comma-separated (default: 64 for classification, "
        "16 for regression)",
    )
    train.add_argument("--activation",
                       choices=[a for a in ACTIVATIONS if a not in ("softmax", "log_softmax")],
                       default="relu", help="hidden activation (default: relu)")
    train.add_argument("--norm", choices=("none", "batch", "layer"), default="none",
                       help="normalise each hidden layer before its activation with "
                       "BatchNorm or LayerNorm (default: none)")
    train.add_argument("--dropout", type=float, default=0.0, metavar="RATE",
                       help="dropout after each hidden layer, in [0, 1) (default: 0, none)")
    train.add_argument("--epochs", type=int, default=30, help="passes over the data (30)")
    train.add_argument("--batch-size", type=_positive(int), default=None,
                       help="rows per gradient step; 1 is stochastic (default: 32)")
    train.add_argument("--full-batch", action="store_true",
                       help="one gradient step per epoch on the whole training set")
    train.add_argument("--lr", type=_positive(float), default=None,
                       help="learning rate (default: 0.05 for classification, 0.01 for "
                       "regression)")
    train.add_argument("--momentum", type=float, default=0.9, help="momentum (default: 0.9)")
    train.add_argument("--nesterov", action="store_true", help="use Nesterov momentum")
    train.add_argument("--l2", type=float, default=0.0,
                       help="L2 penalty, the weight decay of any optimizer (default: 0)")
    train.add_argument("--optimizer", choices=sorted(optimizers.NAMES), default="sgd",
                       help="sgd (with --momentum, --nesterov), adam, adamw, rmsprop, adagrad "
                       "or lbfgs (full batch, needs scipy; --epochs iterations) (default: sgd)")
    train.add_argument("--schedule", choices=sorted(schedules.NAMES), default=None,
                       help="learning-rate schedule over the epochs (default: constant)")
    train.add_argument("--test-size", type=float, default=0.2,
                       help="fraction of rows held out for the test score (default: 0.2)")
    train.add_argument("--seed", type=int, default=0, help="seed of everything random (0)")
    train.add_argument("--threads", type=_positive(int, _MAX_THREADS), default=None,
                       help="threads for the kernels (default: all)")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.add_argument("--plot", metavar="FILE",
                       help="write the loss, metric and per-layer gradient curves to FILE "
                       "(.png, .svg or .pdf; needs matplotlib: pip install 'bprop[plot]')")
    train.add_argument("--distributed", action="store_true",
                       help="train data-parallel across the ranks of an MPI job, started as "
                       "mpirun -n 4 bprop train --distributed (needs mpi4py); only rank 0 "
                       "prints")

    commands.add_parser("info", help="show the version and the CPU path in use")

    bench = commands.add_parser(
        "bench",
        help="time bprop against NumPy and PyTorch side by side",
        description="Run bprop and its peers (NumPy; PyTorch when installed) on the same "
        "work in one process, interleaved, and print the best times and their ratios.",
    )
    groups = ("gemm", "epoch", "predict", "memory", "many", "mpi", "sklearn", "toolkit")
    bench.add_argument("--only", type=_names(groups), default=list(groups), metavar="GROUPS",
                       help="comma-separated subset of gemm,epoch,predict,memory, many "
                       "(train_many), mpi (2 MPI ranks against 1), sklearn (parity "
                       "of MLPClassifier/MLPRegressor with scikit-learn's) and toolkit "
                       "(an mnist epoch with Adam, batch norm and dropout against the "
                       "plain one)")
    bench.add_argument("--networks", type=_names(("tiny", "mnist", "wide")),
                       default=["tiny", "mnist", "wide"], metavar="NAMES",
                       help="comma-separated subset of tiny,mnist,wide for the epochs")
    bench.add_argument("--threads", type=_counts, default=[], metavar="COUNTS",
                       help="also time the epochs at these thread counts, e.g. 1,2")
    bench.add_argument("--quick", action="store_true", help="small sizes, few repeats")
    bench.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser


def _names(allowed: Sequence[str]) -> object:
    def parse(text: str) -> list[str]:
        names = [part.strip() for part in text.split(",") if part.strip()]
        unknown = [name for name in names if name not in allowed]
        if unknown or not names:
            raise argparse.ArgumentTypeError(
                f"expected a comma-separated subset of {','.join(allowed)}, got {text!r}"
            )
        return names

    return parse


def _counts(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",")]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"expected thread counts such as 1,2, got {text!r}")
    return counts


def _sniff(sample: str) -> type[csv.Dialect] | csv.Dialect:
    """The CSV dialect of `sample`: comma, semicolon or tab separated."""
    try:
        return csv.Sniffer().sniff(sample, delimiters=",;\t")
    except csv.Error:
        return csv.excel


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _read_csv(path: str, target: str | None) -> tuple[np.ndarray, np.ndarray, str]:
    """Features and target of a CSV file with a header row.

    Every feature must be a finite number that fits in float32. The target
    is numeric (regression or integer classes) or text (class names); an
    empty or non-finite target is an error, never a class of its own.
    """
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            dialect = _sniff(handle.read(65536))
            handle.seek(0)
            reader = csv.reader(handle, dialect)
            lines = [
                (reader.line_num, [cell.strip() for cell in row])
                for row in reader
                if any(cell.strip() for cell in row)
            ]
    except OSError as exc:
        raise SystemExit(f"bprop: cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise SystemExit(
            f"bprop: {path} is not UTF-8 text (byte {exc.start} cannot be decoded)"
        ) from None
    except csv.Error as exc:
        raise SystemExit(f"bprop: {path} is not a valid CSV file: {exc}") from None
    if len(lines) < 2:
        raise SystemExit(f"bprop: {path} needs a header row and at least one data row")

    header, body = lines[0][1], lines[1:]
    if all(_is_number(name) for name in header):
        raise SystemExit(
            f"bprop: the first row of {path} holds numbers; the file needs a header row "
            "naming the columns"
        )
    if len(header) < 2:
        raise SystemExit(
            f"bprop: {path} needs at least one feature column and a target (found one column; "
            "columns may be separated by commas, semicolons or tabs)"
        )
    if target is None:
        column = len(header) - 1
    elif target in header:
        column = header.index(target)
    elif target.lstrip("-").isdigit() and -len(header) <= int(target) < len(header):
        column = int(target) % len(header)
    else:
        raise SystemExit(f"bprop: --target {target!r} is not a column of {path}: {header}")

    features = [i for i in range(len(header)) if i != column]
    x = np.empty((len(body), len(features)))
    labels = []
    for r, (line, row) in enumerate(body):
        if len(row) != len(header):
            raise SystemExit(
                f"bprop: {path} line {line} has {len(row)} fields; the header has {len(header)}"
            )
        for c, i in enumerate(features):
            try:
                value = float(row[i])
            except ValueError:
                value = None
            if value is None or not abs(value) <= _FLOAT32_MAX:
                raise SystemExit(
                    f"bprop: {path} line {line}, column {header[i]!r}: {row[i]!r} is not a "
                    "finite number that fits in float32"
                )
            x[r, c] = value
        if row[column] == "":
            raise SystemExit(f"bprop: {path} line {line}: the target {header[column]!r} is empty")
        labels.append(row[column])

    if not all(_is_number(label) for label in labels):
        return x, np.array(labels), header[column]  # class names
    y = np.array([float(label) for label in labels])
    bad = np.flatnonzero(~np.isfinite(y))
    if len(bad):
        line = body[bad[0]][0]
        raise SystemExit(
            f"bprop: {path} line {line}: the target {header[column]!r} is {labels[bad[0]]!r}, "
            "not a finite number"
        )
    return x, y, header[column]


def _is_classification(y: np.ndarray, task: str) -> bool:
    if task != "auto":
        return task == "classification"
    if y.dtype.kind not in "fiu":
        return True
    # Whole numbers are classes when there are few of them and each recurs.
    distinct = len(np.unique(y))
    return bool(
        np.all(y == np.round(y)) and distinct <= min(_MAX_CLASSES, len(y) // 2)
    )


def _split(n: int, test_size: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if not 0.0 < test_size < 1.0:
        raise SystemExit(f"bprop: --test-size must be in (0, 1), got {test_size}")
    n_test = int(round(n * test_size))
    if n_test < 1 or n_test >= n:
        raise SystemExit(f"bprop: --test-size {test_size} leaves no rows to train or test")
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[n_test:]), np.sort(order[:n_test])


def _hidden_layers(args: argparse.Namespace) -> list[Layer]:
    """The hidden layers --hidden, --activation, --norm and --dropout ask
    for: each dense layer, then its normalisation carrying the activation,
    then dropout."""
    norm = {"batch": BatchNorm, "layer": LayerNorm}.get(args.norm)
    layers: list[Layer] = []
    for units in args.hidden:
        if norm is None:
            layers.append(Dense(units, activation=args.activation))
        else:
            layers += [Dense(units), norm(activation=args.activation)]
        if args.dropout != 0.0:
            layers.append(Dropout(args.dropout))
    return layers


def _train(args: argparse.Namespace) -> int:
    if args.threads is not None:
        set_num_threads(args.threads)
    if args.epochs < 1:
        raise SystemExit(f"bprop: --epochs must be >= 1, got {args.epochs}")
    if not 0 <= args.seed < 2**63:
        raise SystemExit(f"bprop: --seed must be in [0, 2**63), got {args.seed}")
    if args.full_batch and args.batch_size is not None:
        raise SystemExit("bprop: give --batch-size or --full-batch, not both")
    if args.data is not None:
        if args.csv is not None or args.dataset is not None:
            raise SystemExit("bprop: give one data source: CSV, --csv or --dataset")
        args.csv = args.data
    if args.csv is not None:
        x, y, target_name = _read_csv(args.csv, args.target)
        name = args.csv
    else:
        if args.target is not None:
            raise SystemExit("bprop: --target only applies to --csv")
        name = args.dataset or "digits"
        x, y = datasets.load(name)
        target_name = "target"

    classify = _is_classification(y, args.task)
    classes = None
    if classify:
        classes, y = np.unique(y, return_inverse=True)
        if len(classes) < 2:
            raise SystemExit(f"bprop: the target {target_name!r} has only one class")
    else:
        try:
            y = y.astype(np.float64)
        except ValueError:
            raise SystemExit(f"bprop: regression needs a numeric target {target_name!r}") from None

    train_rows, test_rows = _split(len(x), args.test_size, args.seed)
    # Standardise with statistics of the training rows only.
    mean, std = x[train_rows].mean(axis=0), x[train_rows].std(axis=0)
    std[std == 0] = 1.0
    x = (x - mean) / std
    if not classify:
        y_mean, y_std = y[train_rows].mean(), y[train_rows].std() or 1.0
        y = (y - y_mean) / y_std

    n_out = len(classes) if classify else 1
    # Regression targets are noisier than class labels: a smaller, slower
    # network overfits less.
    if args.hidden is None:
        args.hidden = [64] if classify else [16]
    if args.lr is None and args.optimizer == "sgd":
        args.lr = 0.05 if classify else 0.01
    try:
        layers = _hidden_layers(args)
    except ValueError as exc:  # --dropout
        raise SystemExit(f"bprop: --dropout: {exc}") from None
    layers.append(Dense(n_out))
    model = Sequential(layers, seed=args.seed)
    try:
        optimizer = optimizers.from_options(
            args.optimizer, lr=args.lr, momentum=args.momentum, nesterov=args.nesterov,
            weight_decay=args.l2, schedule=args.schedule,
        )
    except ValueError as exc:  # --momentum, --nesterov, --l2 or --schedule
        raise SystemExit(f"bprop: {exc}") from None
    task = f"{len(classes)}-class classification" if classify else "regression"
    sizes = "-".join(str(s) for s in [x.shape[1], *args.hidden, n_out])
    info = cpu_info()
    ranks = f", {distributed.world().Get_size()} MPI ranks" if args.distributed else ""
    print(
        f"{name}: {len(x)} rows, {x.shape[1]} features, {task}; "
        f"training {sizes} on {len(train_rows)} rows, testing on {len(test_rows)} "
        f"[{info['simd']}, {info['threads']} thread(s){ranks}]"
    )

    if args.plot is not None:
        try:
            from .plots import _matplotlib

            _matplotlib()
        except ImportError as exc:
            raise SystemExit(f"bprop: --plot: {exc}") from None

    start = time.perf_counter()
    try:
        history = model.fit(
            x[train_rows], y[train_rows],
            loss="cross_entropy" if classify else "mse",
            optimizer=optimizer,
            epochs=args.epochs,
            batch_size=None if args.full_batch else args.batch_size or 32,
            seed=args.seed,
            validation_data=(x[test_rows], y[test_rows]),
            verbose=not args.quiet,
            distributed=args.distributed,
            diagnostics=args.plot is not None,
        )
    except DivergenceError as exc:
        print(f"bprop: {exc}", file=sys.stderr)
        return 1
    seconds = time.perf_counter() - start

    metric = "val_accuracy" if classify else "val_r2"
    score = history.history[metric][-1]
    print(
        f"epochs: {args.epochs} in {seconds:.2f} s ({1e3 * seconds / args.epochs:.1f} ms each); "
        f"final training loss {history.history['loss'][-1]:.4f}"
    )
    if classify:
        print(f"test accuracy: {100 * score:.2f}%")
    else:
        print(f"test R^2: {score:.4f}")
    if args.plot is not None:
        from .plots import plot_history

        try:
            plot_history(history, args.plot, title=f"{name}: {sizes}")
        except (OSError, ValueError) as exc:
            raise SystemExit(f"bprop: --plot: cannot write {args.plot}: {exc}") from None
        print(f"curves written to {args.plot}")
    return 0


def _train_distributed(args: argparse.Namespace) -> int:
    """``bprop train`` in one rank of an MPI job: every rank trains, only
    rank 0 prints."""
    try:
        rank = distributed.world().Get_rank()
    except ImportError as exc:
        raise SystemExit(f"bprop: --distributed: {exc}") from None
    if rank == 0:
        return _train(args)
    args.plot = None  # rank 0 writes it
    with open(os.devnull, "w") as sink:
        try:
            with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
                return _train(args)
        except SystemExit as exc:  # rank 0 says why
            raise SystemExit(exc.code if isinstance(exc.code, int) else 1) from None


def _info() -> int:
    info = cpu_info()
    print(f"bprop {__version__}")
    print(f"SIMD: {info['simd']} (best on this CPU: {info['best']})")
    print(f"threads: {info['threads']} (OpenMP: {'yes' if info['openmp'] else 'no'})")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from . import bench

    if bench.load_torch() is None and not args.json:
        print("PyTorch is not installed: its columns are skipped (pip install torch)")
    rows = bench.run(args.only, quick=args.quick, networks=args.networks, threads=args.threads)
    if args.json:
        print(bench.to_json(rows))
    else:
        env = bench.environment()
        print(
            f"bprop {__version__}, SIMD {env['simd']}, {env['threads']} thread(s); "
            f"numpy {env['numpy']}, torch {env['torch'] or 'not installed'}"
        )
        print(bench.format_table(rows))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    try:
        if args.command == "train":
            return _train_distributed(args) if args.distributed else _train(args)
        if args.command == "bench":
            return _bench(args)
        return _info()
    except KeyboardInterrupt:
        print("bprop: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
