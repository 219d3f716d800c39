"""The entry points as a user types them: ``python -m ...`` in a subprocess where a fresh
interpreter matters, and the same ``main`` in-process where it does not (each subprocess pays
the full import of torch and Lightning)."""

import json
import subprocess
from pathlib import Path

import pytest

from helpers import FAST, SUBPROCESS_ENV, TINY_MODEL, module_command, run_hydra_main
from nkat_lightning import train as train_entry

DATA_SETS = ["mnist", "fashion_mnist", "emnist", "cifar10"]


def run(module: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(module_command(module, *args), cwd=cwd, env=SUBPROCESS_ENV,
                          capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_every_data_set_trains_then_a_run_evaluates(synthetic_root, tmp_path):
    sweep = tmp_path / "sweep"
    done = run("nkat_lightning.train", "-m", f"data={','.join(DATA_SETS)}", "model.conv_stem=tiny",
               "model.top_k=4", "model.top_p=0.9", "model.nkat_strength=0.01", *TINY_MODEL,
               *FAST, f"paths.data_dir={synthetic_root}", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = {json.loads(p.read_text())["data"]: p.parent for p in sweep.glob("*/results.json")}
    assert sorted(runs) == sorted(DATA_SETS)
    assert done.stdout.count("test_acc") >= len(DATA_SETS)
    cifar = json.loads((runs["cifar10"] / "results.json").read_text())
    evaluated = run("nkat_lightning.eval", str(runs["cifar10"]), cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert json.loads((runs["cifar10"] / "eval_test.json").read_text())["acc"] == pytest.approx(
        cifar["test_acc"])


def test_missing_data_prints_one_error_without_traceback(tmp_path):
    done = run("nkat_lightning.train", f"paths.data_dir={tmp_path / 'no-data'}", "data=cifar10",
               "data.offline_dirs=[]", "data.download=false", f"hydra.run.dir={tmp_path / 'run'}",
               cwd=tmp_path)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "error: data set 'cifar10' is not available" in done.stderr
    assert "Fix:" in done.stderr


def test_bad_patch_size_fails_before_work(monkeypatch, capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        run_hydra_main(monkeypatch, train_entry.main, "model.conv_stem=tiny", "data=mnist",
                       "model.patch_size=2", f"hydra.run.dir={tmp_path / 'run'}")
    assert exit_info.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "28-px" in errors[0]
    assert not (tmp_path / "run" / "checkpoints").exists()

