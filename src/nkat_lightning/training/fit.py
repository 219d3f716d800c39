"""One run: fit, then test the best checkpoint, in a run folder that resumes where it stopped."""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Checkpoint, ModelCheckpoint, ModelSummary, ProgressBar
from lightning.pytorch.plugins.io import CheckpointIO
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only
from omegaconf import DictConfig

from nkat_lightning.config.checks import validate_config
from nkat_lightning.config.instantiate import build, instantiate_all
from nkat_lightning.config.schema import OptimConfig, RunConfig
from nkat_lightning.data import build_datamodule
from nkat_lightning.errors import ConfigError, UserError
from nkat_lightning.training.checkpointing import (
    INTERRUPTED,
    AtomicCheckpointIO,
    check_checkpoint_fits,
    checkpoint_to_resume,
)
from nkat_lightning.training.curves import plot_curves
from nkat_lightning.training.ema import EMAWithWarmup
from nkat_lightning.training.loggers import finish_loggers
from nkat_lightning.training.module import NKATLitModule
from nkat_lightning.training.pruning import PruneOnValidation, SweepTrial
from nkat_lightning.training.results import (
    RESULTS_FILE,
    check_same_run,
    print_results,
    save_resolved_config,
    write_json,
)
from nkat_lightning.training.run_lock import (
    RunFolderInUse,
    remove_if_empty_run_folder,
    run_folder_lock,
)

log = logging.getLogger(__name__)  # Hydra writes it to <run folder>/train.log
SUMMARY_KEYS = ["data", "params", "lambda", "val_acc_best", "test_acc", "test_tpe", "epochs",
                "wall_time_s", "gate"]


def prepare_resume(resume: str, run_dir: Path, is_global_zero: bool) -> str | None:
    """The checkpoint to resume from: ``auto``, this run's newest of interrupted.ckpt /
    last.ckpt; ``never``, none (the old checkpoints are removed); else the given path. When
    resuming, the earlier metrics.csv is kept (before any logger would delete it)."""
    if resume == "never":
        if is_global_zero:
            shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
        return None
    found = checkpoint_to_resume(run_dir / "checkpoints") if resume == "auto" else resume
    if found is not None and is_global_zero:
        keep_csv_history(run_dir / "csv")
    return None if found is None else str(found)


def switched_off_removed(callbacks: list, trainer_cfg: dict) -> list:
    """Drop the callbacks of what the trainer switches off (``trainer.enable_progress_bar``,
    ``enable_model_summary``, ``enable_checkpointing`` = false), which Lightning would reject."""
    off = tuple(kind for key, kind in (("enable_progress_bar", ProgressBar),
                                       ("enable_model_summary", ModelSummary),
                                       ("enable_checkpointing", Checkpoint))
                if trainer_cfg.get(key) is False)
    return [c for c in callbacks if not isinstance(c, off)] if off else callbacks


def sync_batchnorm_setting(trainer_cfg: dict) -> dict:
    """``sync_batchnorm=False`` for a run without CUDA devices: torch's SyncBatchNorm refuses
    CPU modules under DDP (``trainer=ddp trainer.accelerator=cpu`` with a conv stem's
    BatchNorm), and on one process there is nothing to sync."""
    if not trainer_cfg.get("sync_batchnorm"):
        return {}
    accelerator = str(trainer_cfg.get("accelerator", "auto"))
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return {}
    rank_zero_info("trainer.sync_batchnorm is off for this run: it syncs BatchNorm across GPUs "
                   "and this run has none")
    return {"sync_batchnorm": False}


@contextlib.contextmanager
def stop_cleanly_on_interrupt(trainer: L.Trainer, run_dir: Path):
    """Ctrl-C or SIGTERM end in SystemExit from Lightning (after the current batch): say what
    was saved and how to resume, and exit with 130 / 143 as an interrupted program does."""
    try:
        yield
    except SystemExit:
        saved = run_dir / "checkpoints" / f"{INTERRUPTED}.ckpt"
        where = f"saved {saved}" if saved.is_file() else "the newest checkpoint stays"
        message = (f"interrupted at step {trainer.global_step}; {where}. Run the same command "
                   "again to resume.")
        log.info(message)
        rank_zero_info(message)
        raise SystemExit(143 if trainer.received_sigterm else 130) from None


def with_atomic_checkpoints(plugins: list | None) -> list:
    """The trainer's plugins, plus atomic checkpoint writes unless one of them is a
    CheckpointIO already."""
    plugins = list(plugins or [])
    if not any(isinstance(p, CheckpointIO) for p in plugins):
        plugins.append(AtomicCheckpointIO())
    return plugins


def keep_csv_history(csv_dir: Path) -> None:
    """Lightning's CSVLogger deletes an existing metrics.csv; keep it as metrics.<n>.csv."""
    metrics = csv_dir / "metrics.csv"
    if metrics.is_file():
        index = len(list(csv_dir.glob("metrics.*.csv")))
        metrics.replace(csv_dir / f"metrics.{index}.csv")


def _metric(metrics: dict, key: str) -> float | None:
    value = metrics.get(key)
    return None if value is None else float(value)


def train(cfg: DictConfig, trial: SweepTrial | None = None, step_offset: int = 0) -> dict:
    """Fit and test one configuration; returns (and writes) the run's results. With the
    ``trial`` of a pruning sweep, ``optimized_metric`` is reported to it after every epoch
    (at step ``step_offset + epoch``); a pruned run stops there, is not tested, and its results
    say ``pruned``. The run folder is held for this process (global rank zero) meanwhile."""
    try:
        resolved = validate_config(cfg)
        run_dir = Path(resolved["paths"]["output_dir"])
        with run_folder_lock(run_dir) if rank_zero_only.rank == 0 else contextlib.nullcontext():
            return fit_and_test(cfg, resolved, run_dir, trial, step_offset)
    except RunFolderInUse:  # the folder is another live run's
        raise
    except UserError:
        if rank_zero_only.rank == 0:
            remove_if_empty_run_folder(Path(cfg.paths.output_dir))
        raise


def build_trainer(cfg: DictConfig, resolved: dict, extra_callbacks: list, **settings) -> L.Trainer:
    """The run's Trainer: the config's trainer, callbacks (EMA when ``optim.ema``) and
    loggers, then ``extra_callbacks``; ``settings`` override trainer arguments."""
    callbacks = switched_off_removed(instantiate_all(cfg.get("callbacks")), resolved["trainer"])
    ema = OptimConfig.coerce(resolved["optim"]).ema
    if ema:  # validation, test and checkpoints see the EMA weights
        callbacks.append(EMAWithWarmup(decay=ema))
    loggers = instantiate_all(cfg.get("logger"))
    return build(cfg.trainer, callbacks=[*callbacks, *extra_callbacks], logger=loggers or False,
                 plugins=with_atomic_checkpoints(build(cfg.trainer.get("plugins"))),
                 **{**sync_batchnorm_setting(resolved["trainer"]), **settings})


def fit_and_test(cfg: DictConfig, resolved: dict, run_dir: Path, trial: SweepTrial | None,
                 step_offset: int) -> dict:
    run = RunConfig.of(resolved)
    results_path = run_dir / RESULTS_FILE
    if run.resume == "auto" and results_path.is_file():
        results = json.loads(results_path.read_text())
        if not results.get("pruned"):  # a pruned run resumes like an interrupted one
            check_same_run(run_dir, resolved)
            rank_zero_info(f"This run already finished: {results_path} (resume=never trains again).")
            return results
    if run.seed is not None:
        L.seed_everything(run.seed, workers=True)

    datamodule = build_datamodule(resolved["data"], resolved["aug"])
    datamodule.prepare_data()  # fail on missing data before building anything else
    module = NKATLitModule(resolved["model"], resolved["optim"], datamodule.config, datamodule.aug)
    rank_zero_info(f"NKAT-ViT: {module.num_params:,} trainable parameters, "
                   f"lambda = {module.lam:.4f}")
    pruning = None
    if trial is not None and isinstance(run.optimized_metric, str):
        pruning = PruneOnValidation(trial, run.optimized_metric, step_offset)
    trainer = build_trainer(cfg, resolved, [pruning] if pruning else [])
    callbacks, loggers = trainer.callbacks, trainer.loggers
    ckpt_path = prepare_resume(run.resume, run_dir, trainer.is_global_zero)
    if trainer.is_global_zero:
        save_resolved_config(resolved, run_dir)
        log.info("fit %s (%d parameters) in %s%s", resolved["data"]["name"], module.num_params,
                 run_dir, f", resuming from {ckpt_path}" if ckpt_path else "")
    if ckpt_path:
        check_checkpoint_fits(module, ckpt_path)
        rank_zero_info(f"Resuming from {ckpt_path}")
    try:
        for logger in trainer.loggers:  # the whole resolved config, not only the module's part
            logger.log_hyperparams(resolved)
        start = time.perf_counter()
        with stop_cleanly_on_interrupt(trainer, run_dir):
            trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
        # the best so far from the checkpoint when this fit validated nothing (resumed after
        # its last epoch, e.g. killed while testing)
        fit_metrics = {**module.best_so_far(), **trainer.callback_metrics}
        checkpoint = next((c for c in callbacks if isinstance(c, ModelCheckpoint) and c.monitor),
                          None)
        best = checkpoint.best_model_path if checkpoint else ""
        test_metrics: dict = {}
        pruned = pruning.pruned if pruning else None
        if pruned:
            rank_zero_info(f"Pruned by the sweep's pruner after epoch {pruned['epoch']}: "
                           f"{pruned['metric']} = {pruned['value']:.4f}")
            for logger in trainer.loggers:  # CSV, TensorBoard and W&B say where it stopped
                logger.log_metrics({"trial/pruned_at_epoch": pruned["epoch"]}, trainer.global_step)
                logger.save()
        elif run.test_after_fit:
            with stop_cleanly_on_interrupt(trainer, run_dir):
                trainer.test(module, datamodule=datamodule, ckpt_path=best or None)
            test_metrics = dict(trainer.callback_metrics)
    finally:  # a failed run closes its W&B run too, so the next run of a sweep gets its own
        finish_loggers(loggers)

    results = {
        "data": resolved["data"]["name"],
        "params": module.num_params,
        "lambda": module.lam,
        "val_acc_best": _metric(fit_metrics, "val/acc_best"),
        "val_tpe_best": _metric(fit_metrics, "val/tpe_best"),
        "test_acc": _metric(test_metrics, "test/acc"),
        "test_loss": _metric(test_metrics, "test/loss"),
        "test_tpe": _metric(test_metrics, "test/tpe"),
        "epochs": trainer.current_epoch,
        "global_step": trainer.global_step,
        "wall_time_s": round(time.perf_counter() - start, 1),
        "best_ckpt": best,
        "seed": run.seed,
        "run_dir": str(run_dir),
        "metrics": {k: float(v) for k, v in {**fit_metrics, **test_metrics}.items()},
    }
    if pruned:
        results["pruned"] = pruned
    if run.gate is not None:
        results["gate"] = gate_verdict(results, run.gate.metric, run.gate.threshold)
    if trainer.is_global_zero:
        write_json(results_path, results)
        plot_curves(run_dir)
        log.info("finished: %s", {key: results.get(key) for key in SUMMARY_KEYS})
        print_results(f"{results['data']}: {run_dir}", results, SUMMARY_KEYS)
    return results


def gate_verdict(results: dict, metric: str, threshold: float) -> dict:
    """Whether ``results[metric]`` reached ``threshold`` (e.g. the seed's 45 % smoke gate)."""
    value = results.get(metric)
    return {"metric": metric, "threshold": threshold, "value": value,
            "passed": value is not None and value >= threshold}


def objective(results: dict, metric_name) -> float | list[float] | None:
    """The value a sweeper optimises: ``optimized_metric`` from the run's metrics; a list of
    names (a multi-objective sweep) gives a list of values."""
    if not metric_name:
        return None
    if not isinstance(metric_name, str):
        return [objective(results, name) for name in metric_name]
    if metric_name not in results["metrics"]:
        available = ", ".join(sorted(results["metrics"]))
        raise ConfigError(
            f"optimized_metric={metric_name!r} was not logged by this run; available: {available}"
        )
    return results["metrics"][metric_name]
