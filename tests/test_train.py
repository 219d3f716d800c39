"""Training in-process on synthetic data: results, resume, checkpoints, eval."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from helpers import FAST, TINY_MODEL, compose_train
from nkat_lightning.training.evaluate import evaluate
from nkat_lightning.training.fit import objective, train

RESULT_KEYS = {"data", "params", "lambda", "val_acc_best", "test_acc", "test_tpe"}


OVERRIDES = ["data=mnist", *TINY_MODEL, *FAST, "trainer.max_epochs=2"]


@pytest.fixture(scope="module")
def tiny_run(synthetic_root, tmp_path_factory):
    """One training run that every test here reads; tests that change a run use a copy."""
    cfg = compose_train(OVERRIDES, tmp_path_factory.mktemp("tiny"), data_root=synthetic_root)
    return cfg, train(cfg)


def test_run_writes_results_config_checkpoints_and_metrics(tiny_run):
    cfg, results = tiny_run
    run_dir = cfg.paths.output_dir
    saved = json.loads(open(f"{run_dir}/results.json").read())
    assert RESULT_KEYS <= set(saved)
    assert saved["data"] == "mnist" and saved["epochs"] == 2
    assert saved["lambda"] == pytest.approx(saved["params"] / 1e6)
    assert 0 <= saved["test_acc"] <= 1
    assert saved["test_tpe"] == pytest.approx(
        saved["test_acc"] / torch.log10(torch.tensor(1 + saved["lambda"])).item(), rel=1e-5)
    for name in ("config.yaml", "checkpoints/last.ckpt", "csv/metrics.csv", "curves.png"):
        assert Path(run_dir, name).is_file()
    assert saved["best_ckpt"].startswith(run_dir)
    assert objective(results, "val/acc_best") == results["val_acc_best"]


def test_checkpoint_loads_with_weights_only(tiny_run):
    cfg, results = tiny_run
    checkpoint = torch.load(results["best_ckpt"], weights_only=True)
    assert checkpoint["hyper_parameters"]["model"]["embed_dim"] == 32
    assert checkpoint["hyper_parameters"]["data"]["name"] == "mnist"


def test_finished_run_is_not_trained_again(tiny_run):
    cfg, results = tiny_run
    again = train(cfg)
    assert again == json.loads(json.dumps(results))


def test_resume_continues_from_last_checkpoint(tiny_run, synthetic_root, tmp_path):
    cfg, results = tiny_run
    shutil.copytree(cfg.paths.output_dir, tmp_path / "run")
    (tmp_path / "run" / "results.json").unlink()
    longer = compose_train([*OVERRIDES, "trainer.max_epochs=3"], tmp_path, data_root=synthetic_root)
    resumed = train(longer)
    assert resumed["epochs"] == 3
    assert resumed["global_step"] == results["global_step"] * 3 // 2


def test_eval_reuses_the_runs_config(tiny_run):
    cfg, results = tiny_run
    evaluated = evaluate(Path(cfg.paths.output_dir))
    assert evaluated["acc"] == pytest.approx(results["test_acc"])
    val = evaluate(Path(results["best_ckpt"]), split="val")
    assert val["acc"] == pytest.approx(results["val_acc_best"])


def test_unknown_optimized_metric_is_a_clear_error(tiny_run):
    from nkat_lightning.errors import ConfigError
    with pytest.raises(ConfigError, match="val/nope"):
        objective(tiny_run[1], "val/nope")


def test_curves_hold_every_epoch_of_train_and_val(tiny_run):
    from nkat_lightning.training.curves import epoch_series
    series = epoch_series(Path(tiny_run[0].paths.output_dir) / "csv")
    assert {name: sorted(values) for name, values in series.items()} == {
        name: [0, 1] for name in ("train/loss_epoch", "train/acc", "val/acc", "val/loss")}
    assert series["val/acc"][1] == pytest.approx(tiny_run[1]["metrics"]["val/acc"])


def test_logged_metrics_list_is_what_a_run_logs(tiny_run):
    from nkat_lightning.config.checks import LOGGED_METRICS
    logged = {k for k in tiny_run[1]["metrics"] if not k.startswith("lr-")}
    assert logged == set(LOGGED_METRICS)


def test_step_loss_reaches_the_csv_at_every_logging_step(synthetic_root, tmp_path):
    """The step loss is logged only on the steps the loggers write: every
    trainer.log_every_n_steps-th step; the epoch figures once per epoch."""
    import csv
    cfg = compose_train([*OVERRIDES, "trainer.limit_train_batches=5", "trainer.log_every_n_steps=2",
                         "test_after_fit=false"], tmp_path, data_root=synthetic_root)
    results = train(cfg)
    with open(Path(cfg.paths.output_dir) / "csv" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    step_rows = [int(r["step"]) for r in rows if r["train/loss_step"]]
    assert step_rows == [1, 3, 5, 7, 9]  # 10 steps: Lightning writes after steps 2, 4, ... 10
    epoch_rows = [int(r["epoch"]) for r in rows if r["train/loss_epoch"]]
    assert epoch_rows == [0, 1] and [int(r["epoch"]) for r in rows if r["train/acc"]] == [0, 1]
    assert results["metrics"]["train/loss"] == pytest.approx(float(
        [r for r in rows if r["train/loss_epoch"]][-1]["train/loss_epoch"]))


def test_a_finished_run_of_other_settings_is_not_taken_for_this_one(tiny_run, tmp_path):
    """A command whose folder holds a finished run trained with other settings (a default
    changed since) stops with one line naming the changes; the same settings get the stored
    results back."""
    from nkat_lightning.training.results import OtherRunError
    cfg, results = tiny_run
    run_dir = Path(cfg.paths.output_dir)
    changed = compose_train([*OVERRIDES, "model.depth=3", "optim.lr=0.01"], tmp_path,
                            data_root=Path(cfg.paths.data_dir))
    changed.paths.output_dir = str(run_dir)
    with pytest.raises(OtherRunError, match=r"model\.depth: 2 -> 3; optim\.lr: .* -> 0\.01"):
        train(changed)
    assert train(cfg) == results
