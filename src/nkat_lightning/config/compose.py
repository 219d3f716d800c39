"""Composing the train config: Hydra's resolvers, run folder names, and the config as
``@hydra.main`` would give it, for use from Python."""

from __future__ import annotations

import hashlib
import importlib.resources
import re
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict

from nkat_lightning.config.schema import EMNIST_SPLITS

CONFIG_DIR = str(importlib.resources.files("nkat_lightning.conf"))  # in the wheel or the checkout
MAX_RUN_NAME = 100


def run_name(override_dirname: str) -> str:
    """Folder name of a run: its overrides ('default' when none), made path-safe and short."""
    if not override_dirname:
        return "default"
    name = re.sub(r"[^A-Za-z0-9=,._+-]", "_", override_dirname)
    if len(name) > MAX_RUN_NAME:
        digest = hashlib.sha1(override_dirname.encode()).hexdigest()[:10]
        name = f"{name[: MAX_RUN_NAME - 11]}-{digest}"
    return name


def sqlite_url(path: str) -> str:
    """Optuna storage URL of an SQLite file; creates its folder, which SQLite does not."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{Path(path).resolve()}"


def emnist_num_classes(split: str) -> int:
    """Classes of an EMNIST split (its check is the schema's ``data.split`` choices)."""
    return EMNIST_SPLITS[split]


def in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def register_resolvers() -> None:
    resolvers = {"run_name": run_name, "emnist_classes": emnist_num_classes, "sqlite_url": sqlite_url}
    for name, fn in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_resolver(name, fn)


register_resolvers()


def compose_train_config(
    overrides: list[str], output_dir: Path, data_root: Path | None = None
) -> DictConfig:
    """The train config as ``@hydra.main`` would give it, for use from Python (suite, tests,
    benchmarks): Hydra's runtime fields are set and the run writes into ``output_dir``; data
    stays where the composed config puts it unless ``data_root`` says otherwise."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        data_dir = str(data_root) if data_root is not None else cfg.paths.data_dir  # as composed
        cfg.paths.output_dir = str(output_dir / "run")
        cfg.paths.log_dir = str(output_dir / "logs")
        cfg.paths.root_dir = str(output_dir)
        cfg.paths.data_dir = data_dir
        del cfg.hydra
    return cfg
