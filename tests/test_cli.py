"""The entry points run as a user types them, in a subprocess."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import FAST, TINY_MODEL

# Synthetic CIFAR-10 pickles cannot match the real MD5 sums: the test launcher skips that check.
LAUNCH = ("import os, sys, runpy; from torchvision.datasets import cifar; "
          "cifar.check_integrity = lambda path, md5=None: os.path.isfile(path); "
          "sys.argv[0] = sys.argv[1]; del sys.argv[1]; "
          "runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)")


def run(module: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "0"}
    return subprocess.run([sys.executable, "-c", LAUNCH, module, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def train_cli(tmp_path: Path, data_root: Path, *overrides: str) -> subprocess.CompletedProcess:
    return run("nkat_lightning.train", *TINY_MODEL, *FAST, f"paths.data_dir={data_root}",
               f"hydra.run.dir={tmp_path / 'run'}", *overrides, cwd=tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("overrides", [
    ["data=mnist"],
    ["data=fashion_mnist", "model.conv_stem=small"],
    ["data=emnist", "data.split=letters"],
    ["model.conv_stem=tiny", "data=cifar10", "model.top_k=4", "model.top_p=0.9",
     "model.nkat_strength=0.01"],
])
def test_train_each_data_set_then_eval(overrides, synthetic_root, tmp_path):
    done = train_cli(tmp_path, synthetic_root, *overrides)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert f"data={results['data']}" in overrides
    assert "test_acc" in done.stdout and results["test_acc"] is not None
    if "data=cifar10" not in overrides:
        return  # eval as a subprocess once is enough; tests/test_train.py covers it in-process
    evaluated = run("nkat_lightning.eval", str(tmp_path / "run"), cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert json.loads((tmp_path / "run" / "eval_test.json").read_text())["acc"] == pytest.approx(
        results["test_acc"])


def test_missing_data_prints_one_error_without_traceback(tmp_path):
    done = train_cli(tmp_path, tmp_path / "no-data", "data=cifar10",
                     "data.offline_dirs=[]", "data.download=false")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "error: data set 'cifar10' is not available" in done.stderr
    assert "Fix:" in done.stderr


def test_bad_patch_size_fails_before_work(tmp_path):
    done = train_cli(tmp_path, tmp_path, "model.conv_stem=tiny", "data=mnist",
                     "model.patch_size=2")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "28-px" in errors[0]
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.slow
def test_optuna_sweep_runs_trials_and_reports_best(synthetic_root, tmp_path):
    done = run("nkat_lightning.train", "-m", "hparams_search=fashion_mnist_optuna",
               "hydra.sweeper.n_trials=2", "data=mnist", f"paths.data_dir={synthetic_root}",
               *TINY_MODEL[:1], "model.depth=1", *FAST[:4], "data.val_size=32",
               "callbacks=minimal", "trainer.enable_progress_bar=false",
               f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    best = (tmp_path / "sweep" / "optimization_results.yaml").read_text()
    assert "best_value" in best and "optim.lr" in best
    assert len(list((tmp_path / "sweep").glob("*/results.json"))) == 2
