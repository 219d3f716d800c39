"""Interruption and reproducibility: SIGKILL / SIGTERM mid-epoch then the same command
resumes; seeds make runs identical; a NaN loss stops a run and keeps its last checkpoint."""

import json
import signal
import subprocess
from pathlib import Path

import pytest
import torch

from helpers import (
    FAST,
    SUBPROCESS_ENV,
    TINY_MODEL,
    assert_checkpoint_loads,
    compose_train,
    module_command,
    start_then_signal,
)
from nkat_lightning.data.synthetic import write_mnist_like
from nkat_lightning.errors import NonFiniteLossError
from nkat_lightning.training.fit import train

N_TRAIN, VAL, BATCH, EPOCHS = 2032, 32, 16, 2
STEPS_PER_EPOCH = (N_TRAIN - VAL) // BATCH


def saved_step(path: Path) -> int:
    return torch.load(path, map_location="cpu", weights_only=True)["global_step"]


def resumable_command(tmp_path: Path, run_dir: Path, *extra: str) -> list[str]:
    """A small MNIST run in a fresh interpreter that writes last.ckpt every ~12 ms of training."""
    write_mnist_like(tmp_path / "data", "MNIST", n_train=N_TRAIN, n_test=32)
    return module_command(
        "nkat_lightning.train", "data=mnist", *TINY_MODEL, "trainer.accelerator=cpu",
        "trainer.devices=1", f"data.batch_size={BATCH}", f"data.val_size={VAL}",
        "trainer.limit_val_batches=1", "trainer.limit_test_batches=1",
        "trainer.enable_progress_bar=false", "callbacks.newest_checkpoint.minutes=0.0002",
        f"paths.data_dir={tmp_path / 'data'}", f"hydra.run.dir={run_dir}", *extra)


@pytest.mark.slow
def test_sigkill_then_sigterm_mid_epoch_and_the_same_command_finishes_the_run(tmp_path):
    run_dir = tmp_path / "run"
    command = resumable_command(tmp_path, run_dir, f"trainer.max_epochs={EPOCHS}",
                                "trainer.log_every_n_steps=1")
    checkpoints = run_dir / "checkpoints"

    last, interrupted = checkpoints / "last.ckpt", checkpoints / "interrupted.ckpt"

    start_then_signal(command, tmp_path, last.is_file, signal.SIGKILL)
    killed_at = saved_step(last)
    assert 0 < killed_at < EPOCHS * STEPS_PER_EPOCH and not (run_dir / "results.json").exists()

    code = start_then_signal(command, tmp_path, lambda: saved_step(last) > killed_at,
                             signal.SIGTERM)
    assert code == 143 and interrupted.is_file()
    interrupted_at = saved_step(interrupted)
    assert_checkpoint_loads(interrupted)

    done = subprocess.run(command, cwd=tmp_path, env=SUBPROCESS_ENV, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    log = (run_dir / "train.log").read_text()
    assert f"resuming from {last}" in log and f"resuming from {interrupted}" in log
    # the SIGTERM run flushed its metrics on the way out; the run that resumed it kept them
    assert list((run_dir / "csv").glob("metrics.*.csv"))
    results = json.loads((run_dir / "results.json").read_text())
    assert results["epochs"] == EPOCHS
    assert results["global_step"] == EPOCHS * STEPS_PER_EPOCH  # as an uninterrupted run
    assert not (checkpoints / "interrupted.ckpt").exists()  # removed once the run finished
    resumed_metrics = (run_dir / "csv" / "metrics.csv").read_text().splitlines()
    header = resumed_metrics[0].split(",")
    step_column = header.index("step")
    logged_steps = [int(row.split(",")[step_column]) for row in resumed_metrics[1:]]
    assert min(logged_steps) >= interrupted_at  # counters continued, not restarted


def test_a_seed_makes_two_runs_identical(synthetic_root, tmp_path):
    runs = [train(compose_train(["data=mnist", "seed=0", *TINY_MODEL, *FAST], tmp_path / name,
                                data_root=synthetic_root)) for name in ("a", "b")]
    assert runs[0]["metrics"] == runs[1]["metrics"]
    assert runs[0]["seed"] == 0


def test_a_nan_loss_stops_the_run_and_keeps_the_last_checkpoint(synthetic_root, tmp_path,
                                                                 monkeypatch):
    overrides = ["data=mnist", *TINY_MODEL, *FAST]
    first = train(compose_train(overrides, tmp_path, data_root=synthetic_root))
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    good = last.read_bytes()
    (tmp_path / "run" / "results.json").unlink()
    monkeypatch.setattr(torch.nn.CrossEntropyLoss, "forward",
                        lambda self, logits, target: logits.sum() * float("nan"))
    cfg = compose_train([*overrides, "trainer.max_epochs=2"], tmp_path, data_root=synthetic_root)
    with pytest.raises(NonFiniteLossError, match=r"loss became nan at step 2 .*last good"):
        train(cfg)
    assert last.read_bytes() == good and first["global_step"] == 2
    assert not (tmp_path / "run" / "results.json").exists()
    assert not (tmp_path / "run" / "checkpoints" / "interrupted.ckpt").exists()


@pytest.mark.slow
def test_sigterm_with_loader_workers_saves_interrupted_ckpt_and_exits_143(tmp_path):
    """A scheduler's stop reaches the whole process group, loader workers included."""
    run_dir = tmp_path / "run"
    command = resumable_command(tmp_path, run_dir, "data.num_workers=2", "trainer.max_epochs=20")
    last = run_dir / "checkpoints" / "last.ckpt"
    code = start_then_signal(command, tmp_path, lambda: last.is_file() and saved_step(last) > 5,
                             signal.SIGTERM)
    assert code == 143
    assert (run_dir / "checkpoints" / "interrupted.ckpt").is_file()
