"""Where the C SDK inside the package lives, for build scripts.

    cc prog.c $(python -m bprop.config --cflags --libs)
    cmake -DCMAKE_PREFIX_PATH="$(python -m bprop.config --cmake-dir)" ...
    PKG_CONFIG_PATH="$(python -m bprop.config --pkgconfig-dir)" pkg-config ...

The flags hold real paths, and ``--libs`` adds an rpath, so a program
built with them finds the library at run time without LD_LIBRARY_PATH.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import __version__, get_cmake_dir, get_include, get_library_dir, get_pkgconfig_dir


def cflags() -> list[str]:
    """Compiler flags: the folder of bprop.h."""
    return [f"-I{get_include()}"]


def libs() -> list[str]:
    """Linker flags: the shared library and an rpath to its folder."""
    libdir = get_library_dir()
    return [f"-L{libdir}", "-lbprop", f"-Wl,-rpath,{libdir}"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bprop.config",
        description="Print the flags and folders for building C programs against bprop.",
    )
    parser.add_argument("--cflags", action="store_true", help="compiler flags")
    parser.add_argument("--libs", action="store_true", help="linker flags")
    parser.add_argument("--includedir", action="store_true", help="the folder of bprop.h")
    parser.add_argument("--libdir", action="store_true", help="the folder of libbprop")
    parser.add_argument("--cmake-dir", action="store_true", help="the folder of bpropConfig.cmake")
    parser.add_argument("--pkgconfig-dir", action="store_true", help="the folder of bprop.pc")
    parser.add_argument("--version", action="store_true", help="the version of bprop")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    flags = []
    if args.cflags:
        flags += cflags()
    if args.libs:
        flags += libs()
    lines = [" ".join(flags)] if flags else []
    for wanted, value in (
        (args.includedir, get_include()),
        (args.libdir, get_library_dir()),
        (args.cmake_dir, get_cmake_dir()),
        (args.pkgconfig_dir, get_pkgconfig_dir()),
        (args.version, __version__),
    ):
        if wanted:
            lines.append(value)
    if not lines:
        parser.print_help()
        return 2
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
