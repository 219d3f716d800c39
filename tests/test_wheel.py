"""The package as users install it: the wheel built from this checkout, installed into a fresh
environment, runs every kind of command from another folder with the configs it ships, and a
user's own config folder adds an experiment and a model on top of the package's groups.

The fresh environment borrows the dependencies of the test's own environment through a path
entry (installing torch and the rest again would take minutes and gigabytes); nkat-lightning
itself, its configs and its console scripts come from the wheel alone."""

import json
import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TINY = ["model.embed_dim=32", "model.depth=1", "model.num_heads=2", "trainer.max_epochs=1",
        "trainer.limit_train_batches=3", "trainer.limit_val_batches=2",
        "trainer.limit_test_batches=2", "trainer.accelerator=cpu"]
MY_MODEL = """\
# A model of the user's own: the package's NKAT-ViT, smaller.
defaults:
  - nkat_vit
  - _self_

embed_dim: 32
depth: 1
num_heads: 2
"""
MY_STUDY = """\
# @package _global_
# An experiment of the user's own, composed over the package's groups.
defaults:
  - override /model: my_vit
  - override /aug: none

tags: [my_study]
model:
  top_k: 4
trainer:
  max_epochs: 1
  limit_train_batches: 3
  limit_val_batches: 2
  limit_test_batches: 2
  accelerator: cpu
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh virtual environment holding the wheel; returns its bin folder."""
    work = tmp_path_factory.mktemp("wheel")
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True,
                             check=True).stdout.decode().split("\0")
    source = work / "source"  # built from a copy: setuptools writes its build files in the tree
    for name in filter(None, tracked):
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "--quiet", "--wheel-dir", str(work / "dist"), str(source)], check=True,
                   cwd=work, timeout=600)
    wheel = next((work / "dist").glob("nkat_lightning-*.whl"))
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    purelib = next(venv.glob("lib/python*/site-packages"))
    (purelib / "borrowed_dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"),
                    "install", "--no-deps", "--quiet", str(wheel)], check=True, timeout=600)
    return venv / "bin"


def run(bin_dir: Path, cwd: Path, *command: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(WANDB_MODE="offline", PATH=f"{bin_dir}:{env['PATH']}")
    done = subprocess.run([str(bin_dir / command[0]), *command[1:]], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{command}: {done.stderr[-3000:]}"
    return done


@pytest.mark.slow
def test_the_package_comes_from_the_wheel_with_its_configs(installed, tmp_path):
    where = run(installed, tmp_path, "python", "-c", "import nkat_lightning.config.compose as c, "
                "nkat_lightning; print(nkat_lightning.__file__); print(c.CONFIG_DIR)").stdout
    package, configs = where.split()
    assert package.startswith(str(installed.parent)) and configs.startswith(str(installed.parent))
    assert (Path(configs) / "train.yaml").is_file()


@pytest.mark.slow
def test_installed_commands_train_eval_and_export_from_another_folder(installed, tmp_path):
    """The default job (shrunk), then a user's own experiment and model from their folder, an
    eval and an ONNX export of it."""
    run(installed, tmp_path, "nkat-train", *TINY)
    default = json.loads(next((tmp_path / "logs").rglob("results.json")).read_text())
    assert default["data"] == "fashion_mnist" and default["test_acc"] is not None

    (tmp_path / "my_conf" / "experiment").mkdir(parents=True)
    (tmp_path / "my_conf" / "model").mkdir()
    (tmp_path / "my_conf" / "model" / "my_vit.yaml").write_text(MY_MODEL)
    (tmp_path / "my_conf" / "experiment" / "my_study.yaml").write_text(MY_STUDY)
    run(installed, tmp_path, "nkat-train", "--config-dir", "my_conf", "experiment=my_study")
    run_dir = tmp_path / "logs" / "train" / "fashion_mnist" / "experiment=my_study"
    config = (run_dir / "config.yaml").read_text()
    assert "my_study" in config and "top_k: 4" in config and "embed_dim: 32" in config

    run(installed, tmp_path, "nkat-eval", str(run_dir))
    assert json.loads((run_dir / "eval_test.json").read_text())["acc"] is not None
    exported = run(installed, tmp_path, "nkat-export", str(run_dir), "--check-images", "32")
    assert (run_dir / "export" / "model.onnx").is_file() and "max_abs_diff" in exported.stdout
