"""Evaluating a finished run or a checkpoint with the config saved with it."""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import OmegaConf

from nkat_lightning.config.compose import CONFIG_DIR
from nkat_lightning.config.instantiate import build
from nkat_lightning.data import build_datamodule
from nkat_lightning.errors import UserError
from nkat_lightning.training.metrics import tpe
from nkat_lightning.training.module import NKATLitModule
from nkat_lightning.training.results import CONFIG_FILE, RESULTS_FILE, print_results, write_json

EVAL_KEYS = ["data", "split", "params", "lambda", "acc", "loss", "tpe", "checkpoint"]


def find_checkpoint(run_dir: Path) -> Path:
    """The run's best checkpoint (as recorded in results.json), else its last one."""
    results = run_dir / RESULTS_FILE
    if results.is_file():
        best = json.loads(results.read_text()).get("best_ckpt")
        if best and Path(best).is_file():
            return Path(best)
    candidates = sorted((run_dir / "checkpoints").glob("best-*.ckpt")) or sorted(
        (run_dir / "checkpoints").glob("last.ckpt"))
    if not candidates:
        raise UserError(f"no checkpoint in {run_dir / 'checkpoints'}; is this a run folder?")
    return candidates[-1]


def load_module(ckpt: Path) -> NKATLitModule:
    """The trained module of a checkpoint, on the CPU; a file that is none is one line."""
    NKATLitModule.hparams_from_checkpoint(ckpt)
    return NKATLitModule.load_from_checkpoint(ckpt, map_location="cpu", weights_only=True)


def load_run(target: Path, overrides: list[str]):
    """Checkpoint path and config of a run folder or a checkpoint file."""
    if not target.exists():
        raise UserError(f"{target} does not exist; give a run folder or a .ckpt file")
    ckpt = find_checkpoint(target) if target.is_dir() else target
    run_dir = target if target.is_dir() else ckpt.parent.parent
    if (run_dir / CONFIG_FILE).is_file():
        cfg = OmegaConf.load(run_dir / CONFIG_FILE)
    else:  # a checkpoint on its own carries the model, optim and data config
        cfg = OmegaConf.create(NKATLitModule.hparams_from_checkpoint(ckpt))
    if "trainer" not in cfg:  # a checkpoint on its own: the default trainer, writing nothing
        cfg.trainer = OmegaConf.load(Path(CONFIG_DIR) / "trainer" / "default.yaml")
        cfg.trainer.default_root_dir = str(ckpt.parent)
    cfg.merge_with_dotlist(overrides)  # a bad override is an OmegaConf error: one line
    return ckpt, cfg, run_dir


def evaluate(target: Path, split: str = "test", overrides: list[str] | None = None) -> dict:
    ckpt, cfg, run_dir = load_run(target, overrides or [])
    data_cfg = OmegaConf.to_container(cfg.data, resolve=True)
    datamodule = build_datamodule(data_cfg)  # evaluation uses no augmentation
    datamodule.prepare_data()
    module = load_module(ckpt)
    # the run's own trainer settings (precision, accelerator, limits), on one device
    trainer = build(cfg.trainer, devices=1, num_nodes=1, strategy="auto", logger=False,
                    callbacks=[], enable_checkpointing=False, enable_model_summary=False)
    run = trainer.validate if split == "val" else trainer.test
    metrics = run(module, datamodule=datamodule, verbose=False)[0]
    acc = float(metrics[f"{split}/acc"])
    results = {
        "data": data_cfg["name"], "split": split, "params": module.num_params,
        "lambda": module.lam, "acc": acc, "loss": float(metrics[f"{split}/loss"]),
        "tpe": tpe(acc, module.lam), "checkpoint": str(ckpt),
    }
    if run_dir.is_dir():
        write_json(run_dir / f"eval_{split}.json", results)
    print_results(f"eval: {ckpt}", results, EVAL_KEYS)
    return results
