"""Scale-out on existing engines: Lightning DDP over gloo with 2 CPU processes, Hydra's
submitit launcher (local mode; the SLURM config composes), and two Optuna workers sharing one
real PostgreSQL study."""

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import optuna
import postgres
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from helpers import FAST, SUBPROCESS_ENV, TINY_MODEL, module_command, run_hydra_main
from nkat_lightning import train as train_entry
from nkat_lightning.config.compose import CONFIG_DIR
from nkat_lightning.training.evaluate import evaluate


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


@pytest.fixture(scope="module")
def postgres_url():
    if postgres.server_binaries() is None:
        pytest.skip("PostgreSQL is not installed (Debian: apt-get install postgresql)")
    pytest.importorskip("psycopg2", reason="the PostgreSQL driver: pip install psycopg2-binary")
    # not under pytest's tmp folder: that is private to root, and the server runs as postgres
    folder = Path(tempfile.mkdtemp(prefix="nkat-postgres-"))
    try:
        url, stop = postgres.start_postgres(folder)
        yield url
        stop()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow
def test_two_sweep_workers_share_one_postgresql_study(postgres_url, synthetic_root, tmp_path):
    """Two processes run the same study on one PostgreSQL storage at the same time: every
    trial is recorded once, none is lost, and each reported its epochs to it (for pruning)."""
    def worker(index: int) -> subprocess.Popen:
        return subprocess.Popen(module_command(
            "nkat_lightning.train", "-m", "hparams_search=compact", "hydra.sweeper.n_trials=2",
            f"hydra.sweeper.storage={postgres_url}", "hydra.sweeper.study_name=shared",
            f"hydra.sweeper.sampler.seed={index}", "hydra/sweeper/pruner=median", "data=mnist",
            "model.depth=1", *TINY_MODEL[:1], *FAST, "trainer.max_epochs=2",
            f"paths.data_dir={synthetic_root}",
            f"hydra.sweep.dir={tmp_path / f'worker{index}'}"),
            cwd=tmp_path, env=SUBPROCESS_ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True)

    # as the README says: create the study (and its tables) once, then start the workers
    subprocess.run([str(Path(sys.executable).parent / "optuna"), "create-study", "--storage",
                    postgres_url, "--study-name", "shared", "--direction", "maximize"],
                   check=True, capture_output=True, timeout=120)
    workers = [worker(1), worker(2)]
    outputs = [w.communicate(timeout=600)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]
    study = optuna.load_study(study_name="shared", storage=postgres_url)
    assert sorted(t.number for t in study.trials) == [0, 1, 2, 3]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    assert all(list(t.intermediate_values) == [0, 1] for t in study.trials)  # reported per epoch
    runs = [json.loads(p.read_text()) for p in tmp_path.glob("worker*/*/results.json")]
    assert sorted(round(r["val_acc_best"], 6) for r in runs) == sorted(
        round(t.value, 6) for t in study.trials)


@pytest.mark.parametrize(("accelerator", "cuda", "synced"), [
    ("cpu", True, False), ("auto", False, False), ("auto", True, True), ("gpu", True, True)])
def test_sync_batchnorm_stays_on_only_where_there_are_cuda_devices(accelerator, cuda, synced,
                                                                   monkeypatch):
    from nkat_lightning.training.fit import sync_batchnorm_setting

    monkeypatch.setattr("torch.cuda.is_available", lambda: cuda)
    setting = sync_batchnorm_setting({"accelerator": accelerator, "sync_batchnorm": True})
    assert setting.get("sync_batchnorm", True) is synced
    assert sync_batchnorm_setting({"accelerator": accelerator, "sync_batchnorm": False}) == {}
