"""The C tests, built against the installed package.

Every ``tests/c/*.c`` is compiled with the header and shared library that
``pip install`` put inside the package (``bprop.get_include()`` and
``bprop.get_library_dir()``) and run three times: as the environment
has it, with ``BPROP_SIMD=generic`` so that the portable kernels run,
and with ``OMP_NUM_THREADS=1``. A last test builds a small program the
way a C user would embed bprop and checks what it learns.

Design decisions:
- The flags are strict (``-Wall -Wextra -Werror``): a warning in a test
  or in ``bprop.h`` fails here rather than in a user's build.
- Each source is compiled once per session and reused by its three runs;
  a compile error fails those runs with the compiler's output.
- The library is found at run time through an rpath, never through
  ``LD_LIBRARY_PATH``, as an installed program would find it.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import bprop
import pytest

C_DIR = Path(__file__).parent / "c"
C_SOURCES = sorted(C_DIR.glob("*.c"))
TIMEOUT = 600

ENVIRONMENTS = {
    "default": {},
    "simd-generic": {"BPROP_SIMD": "generic"},
    "one-thread": {"OMP_NUM_THREADS": "1"},
}

EMBED_SOURCE = r"""
#include <bprop.h>

#include <stdio.h>

/* Stops with bprop's message when a call fails. */
#define TRY(call)                                                 \
    do {                                                          \
        if ((call) != BP_STATUS_OK) {                             \
            fprintf(stderr, "%s: %s\n", #call, bp_last_error());  \
            return 2;                                             \
        }                                                         \
    } while (0)

int main(void)
{
    static const float x[] = {0, 0, 0, 1, 1, 0, 1, 1};
    static const float y[] = {0, 1, 1, 0};
    bp_layer_spec layers[] = {
        {.units = 4, .activation = BP_ACTIVATION_TANH},
        {.units = 1, .activation = BP_ACTIVATION_SIGMOID}};
    bp_sgd_config sgd = {0.5f, 0.5f, 0, 0.0f};
    bp_net *net;
    bp_workspace *ws;
    float out[4];
    double loss = 0.0;

    TRY(bp_net_create(&net, 2, layers, 2, BP_LOSS_BINARY_CROSS_ENTROPY));
    TRY(bp_net_init(net, BP_INIT_AUTO, 1));
    for (int epoch = 0; epoch < 500; epoch++)
        TRY(bp_net_train_epoch(net, &sgd, x, y, NULL, 4, 4, 1, 1,
                               (uint64_t)epoch, &loss));
    TRY(bp_workspace_create(&ws, net, 4));
    TRY(bp_net_predict(net, ws, out, x, 4));
    printf("version %s\nsimd %s\nloss %.6f\nout %.6f %.6f %.6f %.6f\n",
           bp_version(), bp_simd_name(bp_simd_level()), loss, out[0],
           out[1], out[2], out[3]);
    bp_workspace_free(ws);
    bp_net_free(net);
    return 0;
}
"""


def _find_compiler() -> list[str] | None:
    """The first of $CC, cc, gcc and clang found, split into words."""
    for candidate in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if not candidate:
            continue
        words = shlex.split(candidate)
        path = shutil.which(words[0]) if words else None
        if path is not None:
            return [path, *words[1:]]
    return None


@pytest.fixture(scope="session")
def compile_c(tmp_path_factory):
    """Returns a function that builds one C file into an executable."""
    if sys.platform == "win32":
        pytest.skip("the C tests use GCC-style compiler flags")
    compiler = _find_compiler()
    if compiler is None:
        pytest.skip("no C compiler found: set CC or install cc, gcc or clang")

    include = bprop.get_include()
    libdir = bprop.get_library_dir()
    assert (Path(include) / "bprop.h").is_file(), f"no bprop.h in {include}"
    assert any(Path(libdir).glob("libbprop.*")), f"no libbprop in {libdir}"

    out_dir = tmp_path_factory.mktemp("c-tests")
    built: dict[Path, Path | str] = {}

    def build(source: Path) -> Path:
        if source not in built:
            exe = out_dir / source.stem
            cmd = [
                *compiler, "-std=c11", "-O1", "-Wall", "-Wextra", "-Werror",
                f"-I{include}", str(source), "-o", str(exe),
                f"-L{libdir}", "-lbprop", "-lm", f"-Wl,-rpath,{libdir}",
            ]  # fmt: skip
            result = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT)
            if result.returncode == 0:
                built[source] = exe
            else:
                built[source] = (
                    f"compiling {source.name} failed ({result.returncode}):\n"
                    f"{shlex.join(cmd)}\n{result.stdout}{result.stderr}"
                )
        if isinstance(built[source], str):
            pytest.fail(built[source], pytrace=False)
        return built[source]

    return build


def _run(exe: Path, overrides: dict[str, str]) -> subprocess.CompletedProcess:
    """Runs `exe` with `overrides` on top of the environment.

    BPROP_SIMD is dropped first, so that "default" means the best level
    this CPU supports whatever the caller's shell sets.
    """
    env = {k: v for k, v in os.environ.items() if k != "BPROP_SIMD"}
    env.update(overrides)
    return subprocess.run([str(exe)], capture_output=True, text=True, env=env, timeout=TIMEOUT)


def test_c_sources_exist():
    names = [p.name for p in C_SOURCES]
    assert "test_net.c" in names and "test_gemm.c" in names, names


@pytest.mark.parametrize("env", ENVIRONMENTS.values(), ids=list(ENVIRONMENTS))
@pytest.mark.parametrize("source", C_SOURCES, ids=[p.name for p in C_SOURCES])
def test_c_program(compile_c, source, env):
    result = _run(compile_c(source), env)
    if result.returncode != 0 or "FAIL" in result.stdout:
        pytest.fail(
            f"{source.name} with {env or 'the default environment'} exited "
            f"with {result.returncode}:\n{result.stdout}{result.stderr}",
            pytrace=False,
        )


@pytest.fixture(scope="module")
def embed_source(tmp_path_factory) -> Path:
    """EMBED_SOURCE in a file, written once for its three runs."""
    source = tmp_path_factory.mktemp("embed") / "embed_xor.c"
    source.write_text(EMBED_SOURCE)
    return source


@pytest.mark.parametrize("env", ENVIRONMENTS.values(), ids=list(ENVIRONMENTS))
def test_embedded_xor(compile_c, embed_source, env):
    """A user's program: train XOR through bprop.h and predict."""
    result = _run(compile_c(embed_source), env)
    assert result.returncode == 0, result.stdout + result.stderr

    fields = dict(line.split(" ", 1) for line in result.stdout.splitlines())
    out = [float(v) for v in fields["out"].split()]
    assert fields["version"] == bprop.__version__
    assert float(fields["loss"]) < 0.2, result.stdout
    assert [round(v) for v in out] == [0, 1, 1, 0], result.stdout
    if env.get("BPROP_SIMD") == "generic":
        assert fields["simd"] == "generic"
