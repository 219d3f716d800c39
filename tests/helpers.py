"""Compose configs as the entry points do, for tests."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from nkat_lightning.config import CONFIG_DIR

TINY_MODEL = ["model.embed_dim=32", "model.depth=2", "model.num_heads=2"]
FAST = ["trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1", "trainer.accelerator=cpu", "trainer.devices=1",
        "data.num_workers=0", "data.batch_size=16", "data.val_size=32", "callbacks=minimal",
        "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]


def compose_train(overrides: list[str], tmp_path: Path | None = None,
                  data_root: Path | None = None) -> DictConfig:
    """The train config with Hydra's runtime fields set, like ``@hydra.main`` would."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        if tmp_path is not None:
            cfg.paths.output_dir = str(tmp_path / "run")
            cfg.paths.log_dir = str(tmp_path / "logs")
        cfg.paths.root_dir = str(tmp_path or ".")
        if data_root is not None:
            cfg.paths.data_dir = str(data_root)
        del cfg.hydra
    return cfg
