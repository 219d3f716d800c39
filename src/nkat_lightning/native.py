"""The project's C++ CPU kernels, each built on first use by torch's C++ extension loader
(about 15 s once, then cached under ``~/.cache/torch_extensions``) and registered as
``torch.ops.nkat.<name>``. Where one cannot be built (no compiler, no headers, a read-only
cache) a warning says so once and its caller runs torch's own ops instead."""

from __future__ import annotations

import logging
import os
import platform
import sys
from pathlib import Path

import torch

log = logging.getLogger(__name__)


def simd_flags() -> list[str]:
    """Compiler flags for the SIMD this CPU has (AVX-512, or AVX2 + FMA, on x86-64), so the
    cached build differs where the CPU does."""
    if platform.machine() not in ("x86_64", "AMD64"):
        return []
    try:
        cpu = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = cpu.split("flags", 1)[-1].split("\n", 1)[0].split()
    if {"avx512f", "avx512dq"} <= set(flags):
        return ["-mavx512f", "-mavx512dq", "-mavx2", "-mfma"]
    return ["-mavx2", "-mfma"] if {"avx2", "fma"} <= set(flags) else []


def say_if_building(library: str, what: str) -> None:
    """One line on screen before a first build (about 15 s), which would otherwise look like a
    hang; nothing when the cached build is there."""
    from torch.utils.cpp_extension import _get_build_directory

    if not list(Path(_get_build_directory(library, verbose=False)).glob(f"{library}*.so")):
        print(f"building the {what} kernel once (about 15-40 s; cached in "
              "~/.cache/torch_extensions)", file=sys.stderr, flush=True)


def build_cpu_op(name: str, sources: list[Path], switch: str, fallback: str, what: str):
    """``torch.ops.nkat.<name>`` built from ``sources``; None where the environment variable
    ``switch`` is "0", or, with one warning (``fallback``: what runs instead; ``what``: the
    kernel), where it cannot be built. Callers cache the answer."""
    if os.environ.get(switch, "1") == "0":
        return None
    quiet = logging.getLogger("torch.utils.cpp_extension")  # "No CUDA runtime is found" on import
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        from torch.utils.cpp_extension import load

        simd = simd_flags()
        library = f"nkat_{name}" + "".join("_" + flag.strip("-") for flag in simd)
        say_if_building(library, what)
        load(name=library, sources=[str(path) for path in sources],
             extra_cflags=["-O3", "-fopenmp", *simd],
             is_python_module=False, verbose=False)
        return getattr(torch.ops.nkat, name)
    except Exception as error:  # no compiler, no headers, a read-only cache: all mean "not here"
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        log.warning("%s: the %s could not be built (%s)", fallback, what, first_line)
        return None
    finally:
        quiet.setLevel(level)
