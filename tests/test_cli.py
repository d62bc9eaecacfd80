"""Tests of the ``bprop`` command line, mostly in-process through
bprop.cli.main, and once each through ``python -m bprop.cli`` and the
installed console script."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import bprop
import numpy as np
import pytest
from bprop.cli import main


def accuracy_of(output: str) -> float:
    match = re.search(r"^test accuracy: (\d+\.\d+)%$", output, re.MULTILINE)
    assert match is not None, output
    return float(match.group(1))


def r2_of(output: str) -> float:
    match = re.search(r"^test R\^2: (-?\d+\.\d+)$", output, re.MULTILINE)
    assert match is not None, output
    return float(match.group(1))


def fail(argv: list[str], capsys) -> tuple[int, str]:
    """Run main(argv), which must exit with an error: (status, message)."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    code = info.value.code
    # SystemExit("text") prints the text and exits with status 1.
    if isinstance(code, str):
        return 1, code
    return code, capsys.readouterr().err


# ----------------------------------------------------------------------
# Bundled data sets
# ----------------------------------------------------------------------


def test_train_digits_by_default_from_a_subprocess():
    result = subprocess.run(
        [sys.executable, "-m", "bprop.cli", "train", "--quiet"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("digits: 1797 rows, 64 features, 10-class classification")
    assert accuracy_of(result.stdout) >= 97.0
    assert result.stderr == ""


def test_train_breast_cancer(capsys):
    assert main(["train", "--quiet", "--dataset", "breast_cancer"]) == 0
    out = capsys.readouterr().out
    assert "569 rows, 30 features, 2-class classification" in out
    assert accuracy_of(out) >= 95.0


def test_train_diabetes_prints_r2_with_the_defaults(capsys):
    assert main(["train", "--quiet", "--dataset", "diabetes"]) == 0
    out = capsys.readouterr().out
    assert "442 rows, 10 features, regression" in out
    assert "accuracy" not in out
    assert r2_of(out) >= 0.45


def test_train_diabetes_with_a_small_tanh_network(capsys):
    argv = ["train", "--quiet", "--dataset", "diabetes", "--hidden", "16",
            "--activation", "tanh", "--lr", "0.002", "--l2", "0.01"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "training 10-16-1 on 354 rows, testing on 88" in out
    assert r2_of(out) >= 0.45


def test_progress_bar_goes_to_stderr_unless_quiet(capsys):
    assert main(["train", "--dataset", "breast_cancer", "--epochs", "3"]) == 0
    captured = capsys.readouterr()
    assert "3/3" in captured.err
    assert "3/3" not in captured.out
    assert main(["train", "--dataset", "breast_cancer", "--epochs", "3", "--quiet"]) == 0
    assert capsys.readouterr().err == ""


def test_training_options_reach_the_model(capsys):
    argv = ["train", "--quiet", "--dataset", "breast_cancer", "--hidden", "8,4",
            "--activation", "tanh", "--epochs", "5", "--full-batch", "--lr", "0.1",
            "--nesterov", "--test-size", "0.5", "--seed", "3"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "training 30-8-4-2 on 285 rows, testing on 284" in out
    assert "epochs: 5 in" in out
    assert accuracy_of(out) >= 90.0


def test_same_seed_gives_the_same_score(capsys):
    argv = ["train", "--quiet", "--dataset", "breast_cancer", "--epochs", "5", "--seed", "4"]
    assert main(argv) == 0
    first = accuracy_of(capsys.readouterr().out)
    assert main(argv) == 0
    assert accuracy_of(capsys.readouterr().out) == first


@pytest.mark.parametrize("norm", ["batch", "layer"])
def test_normalised_hidden_layers_with_dropout(norm, capsys):
    argv = ["train", "--quiet", "--norm", norm, "--dropout", "0.1", "--optimizer", "adam"]
    assert main(argv) == 0
    assert accuracy_of(capsys.readouterr().out) >= 95.0


def test_bad_dropout_rate_is_refused(capsys):
    status, err = fail(["train", "--dropout", "1.5"], capsys)
    assert status != 0 and "--dropout: rate must be in [0, 1), got 1.5" in err


def test_divergence_is_reported_with_status_1(capsys):
    assert main(["train", "--quiet", "--dataset", "diabetes", "--lr", "1000"]) == 1
    captured = capsys.readouterr()
    assert "bprop: training diverged in epoch" in captured.err
    assert "test R^2" not in captured.out


# ----------------------------------------------------------------------
# CSV files
# ----------------------------------------------------------------------


@pytest.fixture
def species_csv(tmp_path: Path) -> Path:
    """200 rows: the class name first, then three numeric features, of
    which the first two separate the classes."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(200, 3))
    names = np.where(x[:, 0] + x[:, 1] > 0, "dog", "cat")
    path = tmp_path / "species.csv"
    lines = ["species,length,height,noise"]
    lines += [f"{name},{a:.5f},{b:.5f},{c:.5f}" for name, (a, b, c) in zip(names, x)]
    path.write_text("\n".join(lines) + "\n")
    return path


def _result_lines(output: str) -> list[str]:
    """The output without the line of timings, which vary."""
    return [line for line in output.splitlines() if not line.startswith("epochs:")]


def test_csv_target_by_name_and_by_index_agree(species_csv, capsys):
    base = ["train", "--quiet", "--csv", str(species_csv)]
    assert main([*base, "--target", "species"]) == 0
    by_name = capsys.readouterr().out
    assert "200 rows, 3 features, 2-class classification" in by_name
    assert accuracy_of(by_name) >= 90.0
    assert main([*base, "--target", "0"]) == 0
    assert _result_lines(capsys.readouterr().out) == _result_lines(by_name)


def test_csv_as_positional_argument(species_csv, capsys):
    assert main(["train", "--quiet", str(species_csv), "--target", "species"]) == 0
    positional = _result_lines(capsys.readouterr().out)
    assert main(["train", "--quiet", "--csv", str(species_csv), "--target", "species"]) == 0
    assert _result_lines(capsys.readouterr().out) == positional
    assert any(line.startswith("test accuracy") for line in positional)
    status, message = fail(["train", str(species_csv), "--dataset", "digits"], capsys)
    assert status != 0 and "one data source" in message


def test_csv_regression_on_the_last_column_by_default(tmp_path, capsys):
    rng = np.random.default_rng(6)
    x = rng.normal(size=(150, 2))
    y = 3.0 * x[:, 0] - x[:, 1] + 0.05 * rng.normal(size=150)
    path = tmp_path / "linear.csv"
    rows = ["a,b,y"] + [f"{a:.6f},{b:.6f},{t:.6f}" for (a, b), t in zip(x, y)]
    path.write_text("\n".join(rows) + "\n")
    assert main(["train", "--quiet", "--csv", str(path)]) == 0
    out = capsys.readouterr().out
    assert "150 rows, 2 features, regression" in out
    assert r2_of(out) >= 0.9


def test_csv_missing_file(tmp_path, capsys):
    missing = tmp_path / "nothere.csv"
    status, message = fail(["train", "--csv", str(missing)], capsys)
    assert status != 0
    assert f"cannot read {missing}: No such file or directory" in message


def test_csv_non_numeric_feature(tmp_path, capsys):
    path = tmp_path / "words.csv"
    path.write_text("a,b,label\n1,2,0\n3,four,1\n5,6,0\n")
    status, message = fail(["train", "--csv", str(path)], capsys)
    assert status != 0
    assert "line 3, column 'b': 'four' is not a finite number" in message


def test_csv_ragged_row(tmp_path, capsys):
    path = tmp_path / "ragged.csv"
    path.write_text("a,b,label\n1,2,0\n3,1\n5,6,0\n")
    status, message = fail(["train", "--csv", str(path)], capsys)
    assert status != 0
    assert "line 3 has 2 fields; the header has 3" in message


def test_csv_unknown_target_column(species_csv, capsys):
    status, message = fail(["train", "--csv", str(species_csv), "--target", "weight"], capsys)
    assert status != 0
    assert "--target 'weight' is not a column of" in message and "species" in message


def test_csv_target_index_out_of_range(species_csv, capsys):
    status, message = fail(["train", "--csv", str(species_csv), "--target", "4"], capsys)
    assert status != 0
    assert "--target '4' is not a column" in message


def test_csv_with_missing_values(tmp_path, capsys):
    path = tmp_path / "nan.csv"
    path.write_text("a,b,label\n1,2,0\nnan,1,1\n5,6,0\n")
    status, message = fail(["train", "--csv", str(path)], capsys)
    assert status != 0
    assert "line 3, column 'a': 'nan' is not a finite number" in message


# ----------------------------------------------------------------------
# Bad options
# ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--hidden", "abc"], "--hidden must be comma-separated layer sizes such as 64,32"),
        (["--hidden", "8,-2"], "--hidden sizes must be >= 1, got '8,-2'"),
        (["--epochs", "0"], "--epochs must be >= 1, got 0"),
        (["--epochs", "many"], "argument --epochs: invalid int value: 'many'"),
        (["--lr", "-1"], "argument --lr: must be > 0, got '-1'"),
        (["--lr", "0"], "argument --lr: must be > 0, got '0'"),
        (["--batch-size", "0"], "argument --batch-size: must be > 0, got '0'"),
        (["--momentum", "1.5"], r"momentum must be in [0, 1), got 1.5"),
        (["--l2", "-1"], "l2 must be a finite number >= 0, got -1.0"),
        (["--momentum", "0", "--nesterov"], "nesterov=True needs momentum > 0"),
        (["--seed", "-1"], "--seed must be in [0, 2**63), got -1"),
        (["--test-size", "1.5"], "--test-size must be in (0, 1), got 1.5"),
        (["--dataset", "iris"], "argument --dataset: invalid choice: 'iris'"),
        (["--target", "0"], "--target only applies to --csv"),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else None,
)
def test_bad_options_exit_with_a_message(argv, expected, capsys):
    status, message = fail(["train", "--quiet", *argv], capsys)
    assert status != 0
    assert expected in message
    assert "Traceback" not in message


def test_a_command_is_required(capsys):
    status, message = fail([], capsys)
    assert status == 2
    assert "COMMAND" in message


# ----------------------------------------------------------------------
# info and --version
# ----------------------------------------------------------------------


def test_info_prints_the_simd_level(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    info = bprop.cpu_info()
    assert out.splitlines()[0] == f"bprop {bprop.__version__}"
    assert f"SIMD: {info['simd']} (best on this CPU: {info['best']})" in out
    assert info["simd"] in ("generic", "avx2", "avx512")
    assert f"threads: {info['threads']}" in out


def test_version_in_process(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"bprop {bprop.__version__}"


def test_version_from_the_console_script():
    script = Path(sys.executable).with_name("bprop")
    assert script.is_file(), f"the bprop console script is not installed next to {sys.executable}"
    result = subprocess.run(
        [str(script), "--version"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"bprop {bprop.__version__}"
    assert re.fullmatch(r"\d+\.\d+\.\d+", bprop.__version__)


# A header, then rows whose label depends on the first two features.
_GOOD_ROWS = [f"{a},{b},{int(a + b > 0)}" for a, b in np.random.default_rng(3).normal(size=(60, 2))]


@pytest.mark.parametrize(
    "text, message",
    [
        ("a,b,y\n" + "\n".join(_GOOD_ROWS[:5]) + "\n1,2,\n", "line 7: the target 'y' is empty"),
        ("a,b,y\n" + "\n".join(_GOOD_ROWS[:5]) + "\n1,2,nan\n", "'nan', not a finite number"),
        ("a,b,y\n" + "\n".join(_GOOD_ROWS[:5]) + "\n1,NA,0\n", "line 7, column 'b': 'NA'"),
        ("a,b,y\n" + "\n".join(_GOOD_ROWS[:5]) + "\n1e300,2,0\n", "fits in float32"),
        ("1,2,0\n" + "\n".join(_GOOD_ROWS[:5]) + "\n", "needs a header row"),
        ("y\n1\n2\n", "needs at least one feature column"),
    ],
    ids=["empty-target", "nan-target", "na-feature", "huge-feature", "no-header", "one-column"],
)
def test_csv_problems_name_the_line_and_column(tmp_path, capsys, text, message):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    status, error = fail(["train", "--quiet", str(path)], capsys)
    assert status != 0
    assert message in error


def test_csv_not_utf8(tmp_path, capsys):
    path = tmp_path / "latin1.csv"
    path.write_bytes("caf\xe9,b,y\n1,2,0\n3,4,1\n".encode("latin-1"))
    status, error = fail(["train", "--quiet", str(path)], capsys)
    assert status != 0 and "is not UTF-8 text" in error


@pytest.mark.parametrize(
    "header, separator, prefix",
    [("a,b,y", ",", "\ufeff"), ("a ; b ; y", ";", ""), ("a\tb\ty", "\t", "")],
    ids=["bom", "semicolons-and-spaces", "tabs"],
)
def test_csv_dialects_give_the_same_result(tmp_path, capsys, header, separator, prefix):
    plain = tmp_path / "plain.csv"
    plain.write_text("a,b,y\n" + "\n".join(_GOOD_ROWS) + "\n")
    other = tmp_path / "other.csv"
    rows = [row.replace(",", separator) for row in _GOOD_ROWS]
    other.write_text(prefix + header + "\n" + "\n".join(rows) + "\n", encoding="utf-8")
    assert main(["train", "--quiet", str(plain), "--target", "y"]) == 0
    expected = _result_lines(capsys.readouterr().out)[1:]
    assert main(["train", "--quiet", str(other), "--target", "y"]) == 0
    assert _result_lines(capsys.readouterr().out)[1:] == expected


def test_unique_integer_targets_are_regression(tmp_path, capsys):
    path = tmp_path / "ids.csv"
    rows = [f"{i / 40},{i}" for i in range(40)]
    path.write_text("x,y\n" + "\n".join(rows) + "\n")
    assert main(["train", "--quiet", str(path)]) == 0
    assert "regression" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--lr", "1e-50"], "out of float32's range"),
        (["--lr", "1e39"], "out of float32's range"),
        (["--threads", "99999999999"], "<= 4096"),
        (["--seed", str(2**64)], "--seed must be in [0, 2**63)"),
        (["--full-batch", "--batch-size", "5"], "not both"),
    ],
)
def test_out_of_range_options(capsys, argv, message):
    status, error = fail(["train", "--quiet", *argv], capsys)
    assert status != 0 and message in error
