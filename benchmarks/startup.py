"""How fast the commands answer ``--help`` and a config error, beside ``import lightning``,
side by side in one run (rounds interleaved, medians), as ratios against the target.

The commands import torch and Lightning only after their arguments and config are checked, so
these answers should cost a fraction of that import (target: at most 0.3 of it, i.e. 3 s where
the import takes 10 s).

    python benchmarks/startup.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import tomllib

TARGET = 0.3
SCRIPTS = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())[
    "project"]["scripts"]


def seconds(command: list[str], cwd: str) -> float:
    start = time.perf_counter()
    subprocess.run(command, cwd=cwd, capture_output=True, timeout=600, check=False)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    python = [sys.executable]
    cases = {"import lightning": [*python, "-c", "import lightning"]}
    for script, target in SCRIPTS.items():
        cases[f"{script} --help"] = [*python, "-m", target.split(":")[0], "--help"]
    cases["nkat-train model.depth=0 (config error)"] = [*python, "-m", "nkat_lightning.train",
                                                        "model.depth=0"]
    times: dict[str, list[float]] = {name: [] for name in cases}
    with tempfile.TemporaryDirectory() as cwd:
        for _ in range(args.rounds):
            for name, command in cases.items():
                times[name].append(seconds(command, cwd))
    base = statistics.median(times["import lightning"])
    print(f"{'command':45s} {'median s':>9s} {'/ import lightning':>19s}")
    met = 0
    for name, values in times.items():
        median = statistics.median(values)
        ratio = median / base
        verdict = "" if name == "import lightning" else (
            " OK" if ratio <= TARGET else " ABOVE") + f" (target <= {TARGET})"
        met += verdict.startswith(" OK")
        print(f"{name:45s} {median:9.2f} {ratio:19.3f}{verdict}")
    print(f"targets met: {met} of {len(cases) - 1}")


if __name__ == "__main__":
    main()
