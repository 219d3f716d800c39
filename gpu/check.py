"""``make gpu-check``: the GPU path end to end on an offline CUDA host, in one command.

Builds the checkout's own wheel (with the host's setuptools, offline) and installs it with the
wheels of ``make gpu-wheels`` that the host lacks into a temporary folder (never over the
host's torch), so the check runs the package as users install it; then runs, each part timed
and logged into one output folder: ``pytest -m gpu``; ``benchmarks/throughput.py --device
cuda`` in fp32, bf16-mixed and bf16-mixed + compile; the default job on the real Fashion-MNIST
with ``trainer=gpu trainer.precision=bf16-mixed``. Standard library only until the wheels are in.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

GPU_DIR = Path(__file__).resolve().parent
ROOT = GPU_DIR.parent
WHEELS = GPU_DIR / "wheels"
DATA = GPU_DIR / "data" / "fashion-mnist"
# the memory figures (a fresh process with its own CUDA start per model) once, in fp32
THROUGHPUT = {"fp32": ["--memory-rounds", "1", "--memory-all"],
              "bf16": ["--precision", "bf16-mixed", "--memory-rounds", "0"],
              "bf16_compile": ["--precision", "bf16-mixed", "--compile", "--memory-rounds", "0"]}


@dataclass
class Part:
    name: str
    argv: list[str]
    log: str  # file name inside the output folder


def no_cuda_reason() -> str | None:
    """Why this host cannot run the check, or None when it has a CUDA device."""
    try:
        import torch
    except ImportError:
        return f"{sys.executable} has no torch"
    if not torch.cuda.is_available():
        return f"torch {torch.__version__} sees no CUDA device"
    return None


def distribution_name(wheel: Path) -> str:
    return wheel.name.split("-")[0].replace("_", "-").lower()


def is_installed(name: str) -> bool:
    try:
        version(name)
    except PackageNotFoundError:
        return False
    return True


def wheels_to_install(wheel_dir: Path = WHEELS, installed=is_installed) -> list[Path]:
    """The bundle's wheels whose package this Python lacks: what the host has stays its own."""
    return sorted(w for w in wheel_dir.glob("*.whl") if not installed(distribution_name(w)))


def install(wheels: list[Path], target: Path) -> None:
    """Offline, without dependencies (the bundle holds exactly what is needed), into ``target``."""
    if wheels:
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index",
                        "--no-deps", "--no-compile", "--no-cache-dir", "--target", str(target),
                        *map(str, wheels)], check=True)


def build_project_wheel(dest: Path) -> Path:
    """The checkout as a wheel (its configs inside), built offline with this Python's own
    setuptools."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-index",
                    "--no-build-isolation", "--wheel-dir", str(dest), str(ROOT)], check=True)
    return next(dest.glob("nkat_lightning-*.whl"))


def job_environment(site: Path) -> dict[str, str]:
    """The installed wheels (the project's among them) first on the path of every part."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", WANDB_MODE="offline")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), env.get("PYTHONPATH", "")) if p)
    return env


def parts(out: Path, scratch: Path, python: str = sys.executable, data: Path = DATA) -> list[Part]:
    """Every part of the check, writing its logs and run inside ``out`` and the unpacked data
    set inside ``scratch``."""
    bench = [python, str(ROOT / "benchmarks" / "throughput.py"), "--device", "cuda",
             "--rounds", "3", "--min-seconds", "0.3", "--no-startup"]
    return [
        Part("gpu tests", [python, "-m", "pytest", "-m", "gpu", "-q", "-rs", "-p",
                           "no:cacheprovider", str(ROOT / "tests")], "pytest.txt"),
        *(Part(f"throughput {name}", [*bench, *flags], f"throughput_{name}.txt")
          for name, flags in THROUGHPUT.items()),
        Part("default job", [python, "-m", "nkat_lightning.train", "trainer=gpu",
                             "trainer.precision=bf16-mixed", "trainer.enable_progress_bar=false",
                             f"data.offline_dirs=[{data}]", f"paths.data_dir={scratch / 'data'}",
                             f"hydra.run.dir={out / 'default_job'}"], "default_job.txt"),
    ]


def run_part(part: Part, out: Path, env: dict[str, str]) -> tuple[int, float]:
    print(f"== {part.name}: {' '.join(part.argv[1:])}", flush=True)
    start = time.perf_counter()
    with open(out / part.log, "w") as log:
        process = subprocess.Popen(part.argv, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True)
        for line in process.stdout:
            sys.stdout.write(line)
            log.write(line)
        code = process.wait()
    return code, time.perf_counter() - start


def describe_host(env: dict[str, str]) -> str:
    probe = ("import torch, lightning, timm, hydra, optuna; p = torch.cuda.get_device_properties(0);"
             "print(f'{p.name}, {p.total_memory / 2**30:.0f} GiB; torch {torch.__version__} "
             "(CUDA {torch.version.cuda}), lightning {lightning.__version__}, timm "
             "{timm.__version__}, hydra {hydra.__version__}, optuna {optuna.__version__}')")
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True)
    if done.returncode:
        missing = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "unknown"
        sys.exit(f"error: the GPU host cannot import the stack ({missing}); run make gpu-wheels "
                 "on a machine with package access and carry gpu/wheels")
    return done.stdout.strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="output folder (default gpu/out/<time>)")
    args = parser.parse_args(argv)
    reason = no_cuda_reason()
    if reason:
        print(f"error: no CUDA device: {reason}; make gpu-check runs on a GPU machine "
              "(make gpu-wheels prepares what it carries)", file=sys.stderr)
        return 1
    if not DATA.is_dir():
        print(f"error: {DATA.relative_to(ROOT)} is missing; run make gpu-wheels where the data "
              "is and carry gpu/wheels and gpu/data", file=sys.stderr)
        return 1
    out = (args.out or GPU_DIR / "out" / time.strftime("%Y%m%d-%H%M%S")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="nkat-gpu-check-"))
    site = scratch / "site"
    wheels = [build_project_wheel(scratch / "dist"), *wheels_to_install()]
    install(wheels, site)
    env = job_environment(site)
    host = describe_host(env)
    summary = [f"# make gpu-check, {time.strftime('%Y-%m-%d %H:%M:%S')}", "", host,
               f"wheels installed into {site}: {', '.join(w.name for w in wheels) or 'none'}",
               "", "| part | exit | seconds | log |", "|---|---|---|---|"]
    failed = 0
    for part in parts(out, scratch):
        code, seconds = run_part(part, out, env)
        failed += code != 0
        summary.append(f"| {part.name} | {code} | {seconds:.0f} | {part.log} |")
    (out / "summary.md").write_text("\n".join(summary) + "\n")
    print("\n".join(summary))
    print(f"everything is in {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
