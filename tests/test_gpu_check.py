"""The CPU side of ``make gpu-wheels`` and ``make gpu-check``: which wheels, how they are
installed, where every part writes, and the one-line refusal without CUDA."""

import subprocess
import sys
import zipfile
from importlib.metadata import version
from pathlib import Path

import pytest

from nkat_lightning.config.compose import compose_train_config

ROOT = Path(__file__).resolve().parents[1]


sys.path.insert(0, str(ROOT / "gpu"))  # the scripts import each other as `python gpu/<x>.py` does
import bundle  # noqa: E402
import check  # noqa: E402


def make_wheel(folder: Path, name: str, ver: str = "1.0") -> Path:
    """A minimal pure-Python wheel holding a module ``name`` with ``VALUE = 42``."""
    path = folder / f"{name}-{ver}-py3-none-any.whl"
    info = f"{name}-{ver}.dist-info"
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr(f"{name}/__init__.py", "VALUE = 42\n")
        wheel.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {ver}\n")
        wheel.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                        "Tag: py3-none-any\n")
        wheel.writestr(f"{info}/RECORD", "")
    return path


def test_without_cuda_the_check_says_so_in_one_line_and_fails():
    done = subprocess.run([sys.executable, str(ROOT / "gpu" / "check.py")], capture_output=True,
                          text=True, timeout=120)
    lines = done.stderr.strip().splitlines()
    assert done.returncode != 0 and len(lines) == 1, done.stderr
    assert lines[0].startswith("error: no CUDA device: ") and "make gpu-check" in lines[0]
    assert not (ROOT / "gpu" / "out").exists() or not any((ROOT / "gpu" / "out").iterdir())


def test_only_wheels_of_packages_this_python_lacks_are_installed(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    ours = make_wheel(wheels, "nkat_gpu_probe")
    make_wheel(wheels, "torch", version("torch"))  # the host's torch: never replaced
    assert check.wheels_to_install(wheels) == [ours]

    site = tmp_path / "site"
    project_wheel = check.build_project_wheel(tmp_path / "dist")
    check.install([project_wheel, *check.wheels_to_install(wheels)], site)
    assert (site / "nkat_gpu_probe" / "__init__.py").is_file() and not (site / "torch").exists()
    env = check.job_environment(site)
    done = subprocess.run([sys.executable, "-c", "import nkat_gpu_probe, nkat_lightning, torch;"
                           "print(nkat_gpu_probe.VALUE, nkat_lightning.__file__, torch.__file__)"],
                          env=env, capture_output=True, text=True, cwd=tmp_path, check=True)
    value, project, torch_file = done.stdout.split()
    assert value == "42" and project.startswith(str(site))  # the package as users install it
    assert not torch_file.startswith(str(site))


def test_every_part_writes_inside_its_output_folder_and_its_flags_exist(tmp_path):
    out, scratch = tmp_path / "out", tmp_path / "scratch"
    parts = check.parts(out, scratch, python=sys.executable)
    names = [part.name for part in parts]
    assert names[0] == "gpu tests" and names[-1] == "default job"
    assert {f"throughput {n}" for n in check.THROUGHPUT} <= set(names)
    assert len({part.log for part in parts}) == len(parts)
    for part in parts:
        for arg in part.argv:
            if "=" in arg and str(tmp_path) in arg:
                assert arg.split("=", 1)[1].startswith((str(out), str(scratch))), arg
    bench_help = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "throughput.py"),
                                 "--help"], capture_output=True, text=True, check=True).stdout
    for part in parts:
        if part.name.startswith("throughput"):
            assert all(flag in bench_help for flag in part.argv if flag.startswith("--"))
    job = next(part for part in parts if part.name == "default job")
    overrides = job.argv[job.argv.index("nkat_lightning.train") + 1:]
    cfg = compose_train_config(overrides, tmp_path)  # every override is a real key
    assert cfg.trainer.accelerator == "gpu" and cfg.trainer.precision == "bf16-mixed"
    assert cfg.data.name == "fashion_mnist" and list(cfg.data.offline_dirs) == [str(check.DATA)]
    gpu_tests = next(part for part in parts if part.name == "gpu tests")
    after = gpu_tests.argv.index("pytest") + 1
    assert gpu_tests.argv[after:after + 2] == ["-m", "gpu"]


def test_the_bundle_is_what_the_host_lacks_at_the_versions_installed_here():
    host = bundle.read_names(bundle.HOST_PACKAGES)
    needed = bundle.needed_packages()
    assert {"hydra-core", "omegaconf", "optuna", "hydra-optuna-sweeper"} <= set(needed)
    assert not set(needed) & host and not set(needed) & bundle.NOT_FOR_THE_CHECK
    assert all(version(name) == ver for name, ver in needed.items())
    command = bundle.download_command(needed, Path("/tmp/w"))
    assert {"--no-deps", "--only-binary=:all:", "3.12"} <= set(command)
    assert all(f"{name}=={ver}" in command for name, ver in needed.items())


def test_stale_wheels_are_dropped_so_one_version_of_each_travels(tmp_path):
    keep = make_wheel(tmp_path, "alembic", "1.20.1")
    old = make_wheel(tmp_path, "alembic", "1.13.0")
    gone = make_wheel(tmp_path, "nkat_gpu_probe")
    bundle.prune_stale(tmp_path, {"alembic": "1.20.1"})
    assert keep.exists() and not old.exists() and not gone.exists()


def test_the_data_copy_names_what_is_missing(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    for name in bundle.FASHION_MNIST_FILES[:-1]:
        (source / name).write_bytes(b"x")
    with pytest.raises(SystemExit, match="t10k-labels-idx1-ubyte.gz missing"):
        bundle.copy_data(source, tmp_path / "dest")
    (source / bundle.FASHION_MNIST_FILES[-1]).write_bytes(b"x")
    bundle.copy_data(source, tmp_path / "dest")
    assert sorted(p.name for p in (tmp_path / "dest").iterdir()) == sorted(
        bundle.FASHION_MNIST_FILES)


def test_the_bundle_folders_are_git_ignored():
    for path in ("gpu/wheels/x.whl", "gpu/data/fashion-mnist/x.gz", "gpu/out/x/summary.md"):
        assert subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT).returncode == 0
