"""``make gpu-wheels``: what an offline GPU host needs beyond its own packages, into git-ignored
folders that travel with the checkout (at most 64 MiB in all).

- ``gpu/wheels/``: one wheel per package for CPython 3.12, manylinux x86_64, at the exact
  version installed here (the versions CI tests). The packages are the project's requirement
  closure, evaluated for that host, minus what the host has (``gpu/host_packages.txt``) and
  minus ``NOT_FOR_THE_CHECK``.
- ``gpu/data/fashion-mnist/``: the four Fashion-MNIST ``.gz`` files the default job reads.

Run on a machine with PyPI access and the project's environment (``make gpu-wheels``).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

from check import DATA, GPU_DIR, ROOT, WHEELS, distribution_name  # the folders the check reads
from packaging.requirements import Requirement

PROJECT = "nkat-lightning"
HOST_PACKAGES = GPU_DIR / "host_packages.txt"
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                       "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
# wandb's wheel alone is about 20 MB; the check logs to CSV, so the bundle stays under 64 MiB.
NOT_FOR_THE_CHECK = {"wandb"}
# The GPU host: CPython 3.12 on Linux x86_64 (markers are evaluated for it, not for here).
HOST_MARKERS = {"python_version": "3.12", "python_full_version": "3.12.3", "os_name": "posix",
                "sys_platform": "linux", "platform_system": "Linux",
                "platform_machine": "x86_64", "implementation_name": "cpython",
                "platform_python_implementation": "CPython", "extra": ""}
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64",
             "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64")
LIMIT_BYTES = 64 * 2**20


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_names(path: Path) -> set[str]:
    lines = (line.split("#")[0].strip() for line in path.read_text().splitlines())
    return {canonical(line) for line in lines if line}


def needed_packages(project: str = PROJECT, host: set[str] | None = None,
                    skip: set[str] = NOT_FOR_THE_CHECK) -> dict[str, str]:
    """{package: version installed here} of the project's requirements for the host that the
    host lacks. A host package's own requirements are the host's business and not followed."""
    host = read_names(HOST_PACKAGES) if host is None else host
    found: dict[str, str] = {}

    def follow(name: str) -> None:
        for text in distribution(name).requires or []:
            requirement = Requirement(text)
            key = canonical(requirement.name)
            if (requirement.marker and not requirement.marker.evaluate(HOST_MARKERS)) \
                    or key in host or key in skip or key in found:
                continue
            try:
                found[key] = distribution(key).version
            except PackageNotFoundError:
                sys.exit(f"error: {key} (needed by {name}) is not installed here; run "
                         "`make install` first, the bundle takes the versions installed here")
            follow(key)

    follow(project)
    return dict(sorted(found.items()))


def download_command(packages: dict[str, str], dest: Path) -> list[str]:
    platforms = [arg for platform in PLATFORMS for arg in ("--platform", platform)]
    return [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
            "--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp",
            *platforms, "--dest", str(dest), *(f"{name}=={v}" for name, v in packages.items())]


def prune_stale(dest: Path, packages: dict[str, str]) -> None:
    """Drop wheels of packages or versions no longer wanted: two versions stop an install."""
    for wheel in dest.glob("*.whl"):
        version = wheel.name.split("-")[1]
        if packages.get(distribution_name(wheel)) != version:
            wheel.unlink()


def copy_data(source: Path = FASHION_MNIST, dest: Path = DATA) -> None:
    missing = [name for name in FASHION_MNIST_FILES if not (source / name).is_file()]
    if missing:
        sys.exit(f"error: {source}: {', '.join(missing)} missing; install Debian's "
                 "dataset-fashion-mnist (make data)")
    dest.mkdir(parents=True, exist_ok=True)
    for name in FASHION_MNIST_FILES:
        shutil.copy2(source / name, dest / name)


def travelling_bytes() -> int:
    """The checkout's files (tracked and untracked, not ignored) plus the bundle."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=ROOT, capture_output=True, check=True).stdout.split(b"\0")
    files = [ROOT / name.decode() for name in listed if name]
    files += [p for folder in (WHEELS, DATA) for p in folder.rglob("*")]
    return sum(p.stat().st_size for p in files if p.is_file())


def main() -> None:
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args()
    packages = needed_packages()
    WHEELS.mkdir(parents=True, exist_ok=True)
    prune_stale(WHEELS, packages)
    subprocess.run(download_command(packages, WHEELS), check=True)
    copy_data()
    size = travelling_bytes()
    print(f"{len(packages)} wheels in {WHEELS.relative_to(ROOT)}: "
          + ", ".join(f"{n} {v}" for n, v in packages.items()))
    print(f"Fashion-MNIST in {DATA.relative_to(ROOT)}; checkout + bundle {size / 2**20:.1f} MiB "
          f"of {LIMIT_BYTES / 2**20:.0f} MiB")
    if size > LIMIT_BYTES:
        sys.exit("error: the checkout and the bundle are over 64 MiB; remove large untracked "
                 "files from the checkout")


if __name__ == "__main__":
    main()
