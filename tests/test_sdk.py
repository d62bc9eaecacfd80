"""The C SDK: the examples in examples/ built against the installed
package by the pkg-config route and the CMake route, and against a
stand-alone ``cmake --install`` of the C library, then run.

Each build's predictions for a model saved from Python equal Python's
bit for bit (the C program prints floats with %.9g, which identifies a
float32 exactly), and models trained by the C program load in Python
and predict the same bits there.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import bprop
import numpy as np
import pytest
from bprop import datasets

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
TIMEOUT = 600


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed; it is needed to build the examples this way")
    return path


def _compiler() -> list[str]:
    for candidate in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if candidate and shutil.which(candidate.split()[0]):
            return candidate.split()
    pytest.skip("no C compiler found: set CC or install cc, gcc or clang")


def _check(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT, **kwargs)
    assert result.returncode == 0, f"{' '.join(map(str, cmd))}\n{result.stdout}{result.stderr}"
    return result


def _pkgconfig_build(out: Path, pc_dir: str, rpath: str | None) -> dict[str, Path]:
    """Both examples compiled with the flags pkg-config gives."""
    if sys.platform == "win32":
        pytest.skip("the pkg-config route uses GCC-style flags")
    pkg_config = _tool("pkg-config")
    env = {**os.environ, "PKG_CONFIG_PATH": pc_dir}
    cflags = _check([pkg_config, "--cflags", "bprop"], env=env).stdout.split()
    libs = _check([pkg_config, "--libs", "bprop"], env=env).stdout.split()
    if rpath is not None:
        libs.append(f"-Wl,-rpath,{rpath}")
    out.mkdir(parents=True, exist_ok=True)
    exes = {}
    for name in ("predict", "train"):
        exe = out / name
        _check(
            [
                *_compiler(),
                "-std=c11",
                "-O2",
                "-Wall",
                "-Wextra",
                "-Werror",
                *cflags,
                str(EXAMPLES / f"{name}.c"),
                "-o",
                str(exe),
                *libs,
                "-lm",
            ]
        )
        exes[name] = exe
    return exes


def _cmake_build(out: Path, prefix_path: str) -> dict[str, Path]:
    """Both examples built by examples/CMakeLists.txt with find_package."""
    cmake = _tool("cmake")
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    _check(
        [
            cmake,
            "-S",
            str(EXAMPLES),
            "-B",
            str(out),
            *generator,
            f"-DCMAKE_PREFIX_PATH={prefix_path}",
            "-DCMAKE_BUILD_TYPE=Release",
        ]
    )
    _check([cmake, "--build", str(out)])
    return {name: out / name for name in ("predict", "train")}


@pytest.fixture(scope="module")
def standalone_prefix(tmp_path_factory) -> Path:
    """The C library alone, built and installed as a C user would."""
    cmake = _tool("cmake")
    _compiler()
    work = tmp_path_factory.mktemp("standalone")
    prefix = work / "prefix"
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    _check(
        [
            cmake,
            "-S",
            str(ROOT),
            "-B",
            str(work / "build"),
            *generator,
            "-DBPROP_BUILD_PYTHON=OFF",
            f"-DCMAKE_INSTALL_PREFIX={prefix}",
        ]
    )
    _check([cmake, "--build", str(work / "build")])
    _check([cmake, "--install", str(work / "build")])
    return prefix


def _standalone_libdir(prefix: Path) -> Path:
    (pc,) = prefix.glob("lib*/pkgconfig/bprop.pc")
    return pc.parent.parent


@pytest.fixture(scope="module", params=["pkg-config", "cmake", "standalone"])
def examples(request, tmp_path_factory) -> dict[str, Path]:
    """The examples built one way: against the wheel by pkg-config or by
    CMake, or by pkg-config against the stand-alone install."""
    out = tmp_path_factory.mktemp(f"examples-{request.param}")
    if request.param == "pkg-config":
        return _pkgconfig_build(out, bprop.get_pkgconfig_dir(), None)
    if request.param == "cmake":
        return _cmake_build(out / "build", bprop.get_cmake_dir())
    libdir = _standalone_libdir(request.getfixturevalue("standalone_prefix"))
    return _pkgconfig_build(out, str(libdir / "pkgconfig"), str(libdir))


def _outputs(stdout: str, n_out: int) -> tuple[np.ndarray, list[str]]:
    """The float32 outputs and the labels a run of predict printed."""
    rows, labels = [], []
    for line in stdout.splitlines():
        numbers, _, label = line.partition("\t")
        rows.append([np.float32(v) for v in numbers.split()])
        labels.append(label)
    out = np.array(rows, dtype=np.float32).reshape(-1, n_out)
    return out, labels


def _write_csv(path: Path, X: np.ndarray, extra: np.ndarray | None = None) -> None:
    """X (and a last column) with a header, every float exactly (%.17g)."""
    columns = X if extra is None else np.column_stack([X, extra])
    header = ",".join(f"f{j}" for j in range(columns.shape[1]))
    np.savetxt(path, columns, delimiter=",", header=header, comments="", fmt="%.17g")


def _classifier(X, y):
    model = bprop.Sequential(
        [bprop.Dense(24, activation="tanh"), bprop.Dense(10, activation="softmax")], seed=2
    )
    std = X.std(axis=0)
    model.input_scaling = (X.mean(axis=0), np.where(std > 0, std, 1.0))
    model.fit(X, y, optimizer=bprop.SGD(0.05, momentum=0.9), epochs=3, seed=0)
    model.class_labels = [f"digit-{i}" for i in range(10)]
    return model


def test_the_wheel_holds_the_sdk():
    include, libdir = Path(bprop.get_include()), Path(bprop.get_library_dir())
    assert (include / "bprop.h").is_file()
    assert any(libdir.glob("libbprop.*"))
    assert (Path(bprop.get_cmake_dir()) / "bpropConfig.cmake").is_file()
    assert (Path(bprop.get_cmake_dir()) / "bpropConfigVersion.cmake").is_file()
    assert (Path(bprop.get_pkgconfig_dir()) / "bprop.pc").is_file()

    config = _check([sys.executable, "-m", "bprop.config", "--cflags", "--libs"]).stdout.split()
    assert config == [f"-I{include}", f"-L{libdir}", "-lbprop", f"-Wl,-rpath,{libdir}"]
    dirs = _check([sys.executable, "-m", "bprop.config", "--cmake-dir", "--pkgconfig-dir"])
    assert dirs.stdout.split() == [bprop.get_cmake_dir(), bprop.get_pkgconfig_dir()]


def test_pkg_config_gives_the_wheels_folders():
    pkg_config = _tool("pkg-config")
    env = {**os.environ, "PKG_CONFIG_PATH": bprop.get_pkgconfig_dir()}
    flags = _check([pkg_config, "--cflags", "--libs", "bprop"], env=env).stdout.split()
    include = next(f[2:] for f in flags if f.startswith("-I"))
    libdir = next(f[2:] for f in flags if f.startswith("-L"))
    assert Path(include).resolve() == Path(bprop.get_include()).resolve()
    assert Path(libdir).resolve() == Path(bprop.get_library_dir()).resolve()
    version = _check([pkg_config, "--modversion", "bprop"], env=env).stdout.strip()
    assert version == bprop.__version__


def test_the_standalone_install_has_a_versioned_soname(standalone_prefix):
    if not sys.platform.startswith("linux"):
        pytest.skip("SONAME symlinks are checked on Linux")
    libdir = _standalone_libdir(standalone_prefix)
    major = bprop.__version__.split(".")[0]
    assert (libdir / f"libbprop.so.{bprop.__version__}").is_file()
    assert os.readlink(libdir / f"libbprop.so.{major}") == f"libbprop.so.{bprop.__version__}"
    assert (standalone_prefix / "include" / "bprop.h").is_file()
    assert (libdir / "cmake" / "bprop" / "bpropConfig.cmake").is_file()
    readelf = shutil.which("readelf")
    if readelf is not None:
        dynamic = _check([readelf, "-d", str(libdir / f"libbprop.so.{major}")]).stdout
        assert f"[libbprop.so.{major}]" in dynamic


def test_c_predictions_of_a_python_model_equal_pythons(examples, tmp_path):
    X, y = datasets.load_digits()
    model = _classifier(X[:1200], y[:1200])
    model.save(tmp_path / "digits.bpm")
    _write_csv(tmp_path / "rows.csv", X[1200:], y[1200:])

    run = _check(
        [str(examples["predict"]), str(tmp_path / "digits.bpm"), str(tmp_path / "rows.csv")]
    )
    out, labels = _outputs(run.stdout, 10)
    assert out.shape == (len(X) - 1200, 10)
    assert np.array_equal(out, model.predict_proba(X[1200:]))
    assert labels == list(model.predict(X[1200:]))


@pytest.mark.parametrize("kind", ["mse", "binary_cross_entropy"])
def test_c_predictions_equal_pythons_for_other_losses(examples, tmp_path, kind):
    X, y = datasets.load_breast_cancer()
    X = (X - X.mean(axis=0)) / X.std(axis=0)
    targets = y if kind == "binary_cross_entropy" else X[:, :2].sum(axis=1)
    model = bprop.Sequential([bprop.Dense(8, activation="relu"), bprop.Dense(1)], seed=4)
    model.fit(X, targets, loss=kind, optimizer=bprop.SGD(0.01), epochs=3, seed=1)
    model.save(tmp_path / "model.bpm")
    _write_csv(tmp_path / "rows.csv", X)

    run = _check(
        [str(examples["predict"]), str(tmp_path / "model.bpm"), str(tmp_path / "rows.csv")]
    )
    out, _ = _outputs(run.stdout, 1)
    assert np.array_equal(out, model._outputs(X.astype(np.float32)))


def test_xor_trained_in_c_loads_in_python(examples, tmp_path):
    path = tmp_path / "xor.bpm"
    run = _check([str(examples["train"]), "xor", str(path)])
    fields = dict(line.split(" ", 1) for line in run.stdout.splitlines())
    c_out = np.array([np.float32(v) for v in fields["out"].split()])

    model = bprop.load(path)
    xor = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float32)
    assert np.array_equal(model.predict_proba(xor)[:, 0], c_out)
    assert list(model.predict(xor)) == [0, 1, 1, 0]
    assert model.metadata == {"trained_by": "examples/train.c"}
    assert repr(model.optimizer) == "SGD(lr=0.5, momentum=0.5, nesterov=False, l2=0.0)"
    assert model._epochs_done == 500


def test_a_csv_trained_in_c_predicts_the_same_in_python_and_c(examples, tmp_path):
    X, y = datasets.load_breast_cancer()
    labels = np.where(y == 1, 7, 3)
    _write_csv(tmp_path / "data.csv", X, labels)
    _check([str(examples["train"]), "csv", str(tmp_path / "data.csv"), str(tmp_path / "csv.bpm")])

    model = bprop.load(tmp_path / "csv.bpm")
    assert list(model.class_labels) == [3, 7]
    assert model.input_scaling is not None
    predicted = model.predict(X)
    assert np.mean(predicted == labels) > 0.95

    run = _check([str(examples["predict"]), str(tmp_path / "csv.bpm"), str(tmp_path / "data.csv")])
    out, c_labels = _outputs(run.stdout, 2)
    assert np.array_equal(out, model.predict_proba(X))
    assert c_labels == [str(v) for v in predicted]


def test_predict_reports_a_damaged_model_file(examples, tmp_path):
    path = tmp_path / "broken.bpm"
    path.write_bytes(b"\x89BPM\r\n\x1a\n" + b"\0" * 10)
    result = subprocess.run(
        [str(examples["predict"]), str(path)],
        input="",
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert result.returncode == 1
    assert "truncated" in result.stderr and str(path) in result.stderr
