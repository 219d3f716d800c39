"""Scale-out on existing engines: Lightning DDP over gloo with 2 CPU processes, Hydra's
submitit launcher (local mode; the SLURM config composes), and two Optuna workers sharing one
real PostgreSQL study."""

import json
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from helpers import FAST, SUBPROCESS_ENV, TINY_MODEL, run_hydra_main
from nkat_lightning import train as train_entry
from nkat_lightning.config import CONFIG_DIR
from nkat_lightning.eval import evaluate


@pytest.mark.slow
def test_ddp_two_cpu_processes_write_one_run_that_a_single_process_confirms(synthetic_root,
                                                                            tmp_path):
    run_dir = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-m", "nkat_lightning.train", "trainer=ddp", "trainer.accelerator=cpu",
         "trainer.devices=2", "data=mnist", *TINY_MODEL, "data.batch_size=16",
         "data.val_size=32", "trainer.max_epochs=2", "trainer.limit_train_batches=4",
         "trainer.enable_progress_bar=false", f"paths.data_dir={synthetic_root}",
         f"hydra.run.dir={run_dir}"],
        cwd=tmp_path, env=SUBPROCESS_ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # one run folder, no rank-1 copy
    results = json.loads((run_dir / "results.json").read_text())
    assert results["global_step"] == 2 * 4  # 4 steps of 2 x 16 images per epoch
    assert done.stdout.count("┃ metric ") == 1  # the results table: rank zero only
    assert len((run_dir / "csv" / "metrics.csv").read_text().splitlines()) > 1
    # the 80 test images split 40 + 40 over the ranks; metrics synced across them equal a
    # single process's evaluation of the same checkpoint
    single = evaluate(run_dir)
    assert single["acc"] == pytest.approx(results["test_acc"], abs=1e-6)
    assert single["loss"] == pytest.approx(results["test_loss"], rel=1e-4)


@pytest.mark.slow
def test_submitit_local_launcher_runs_a_two_job_sweep(monkeypatch, synthetic_root, tmp_path):
    sweep = tmp_path / "sweep"
    run_hydra_main(monkeypatch, train_entry.main, "-m", "hydra/launcher=submitit_local",
                   "hydra.launcher.timeout_min=10", "seed=1,2", "data=mnist", *TINY_MODEL,
                   *FAST, f"paths.data_dir={synthetic_root}", f"hydra.sweep.dir={sweep}")
    runs = sorted(sweep.glob("*/results.json"))
    assert [json.loads(p.read_text())["seed"] for p in runs] == [1, 2]
    assert len(list((sweep / ".submitit").glob("*/*_result.pkl"))) == 2  # ran as submitit jobs


def test_slurm_launcher_config_composes_with_the_usual_keys():
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR):
        cfg = compose("train", return_hydra_config=True, overrides=[
            "hydra/launcher=slurm", "hydra.launcher.partition=gpu",
            "hydra.launcher.gpus_per_node=4", "hydra.launcher.timeout_min=30"])
    launcher = OmegaConf.to_container(cfg.hydra.launcher)
    assert launcher["_target_"].endswith("SlurmLauncher")
    assert (launcher["partition"], launcher["gpus_per_node"], launcher["timeout_min"]) == (
        "gpu", 4, 30)
