"""Config resolvers and the checks that run before any work starts."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

from nkat_lightning.data.emnist import emnist_num_classes
from nkat_lightning.errors import ConfigError, describe
from nkat_lightning.models import check_patch_grid
from nkat_lightning.models.attention import FILTER_MODES
from nkat_lightning.models.embedding import CONV_STEMS
from nkat_lightning.models.nkat_vit import RUNTIME_OPTIONS
from nkat_lightning.module import LOGGED_METRICS

CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "conf")
MAX_RUN_NAME = 100
SELECTION_ON_VALIDATION = ("selection reads validation metrics only (e.g. val/acc_best, "
                           "val_acc_best); test metrics are reported beside them")


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


def _fail(key: str, value, allowed: str) -> None:
    raise ConfigError(f"{key}={value!r} is invalid: {allowed}")


def _validate_aug(aug: dict, data: dict) -> None:
    for key in ("hflip", "mix_prob", "switch_prob", "channel_shuffle"):
        if not 0 <= aug.get(key, 0) <= 1:
            _fail(f"aug.{key}", aug[key], "is a probability: must be in [0, 1]")
    for key in ("mixup", "cutmix", "crop_padding", "affine_degrees", "affine_translate", "cutout"):
        if aug.get(key, 0) < 0:
            _fail(f"aug.{key}", aug[key], "must be >= 0 (0 switches it off)")
    if aug.get("cutout", 0) >= data["img_size"]:
        _fail("aug.cutout", aug["cutout"], f"must be smaller than the {data['img_size']}-px image")
    randaugment = aug.get("randaugment") or {}
    if randaugment.get("n", 0) < 0 or not 0 <= randaugment.get("m", 0) <= 30:
        _fail("aug.randaugment", randaugment, "n must be >= 0 and m in 0..30")
    if (aug.get("mixup", 0) or aug.get("cutmix", 0)) and data["batch_size"] % 2:
        _fail("data.batch_size", data["batch_size"], "must be even when Mixup/CutMix is on")


def stem_name(value) -> str:
    """YAML 1.1 reads a bare ``off`` as false."""
    return "off" if value is False else value


def _check_before_resolving(cfg: DictConfig) -> None:
    """Values that other values are computed from (the patch size from the stem, the classes
    from the EMNIST split): checked first, so the error names them and not what they broke."""
    stem = stem_name(cfg.model.get("conv_stem"))
    if stem not in CONV_STEMS:
        _fail("model.conv_stem", stem, f"allowed: {', '.join(CONV_STEMS)}")
    if cfg.data.get("split") is not None:
        try:
            emnist_num_classes(cfg.data.split)
        except ValueError as error:
            raise ConfigError(str(error)) from None


def validate_config(cfg: DictConfig) -> dict:
    """Resolve ``cfg`` and check the values a run depends on; raise ``ConfigError`` with one
    line naming the key, the value and what is allowed. Returns the resolved container."""
    _check_before_resolving(cfg)
    try:
        resolved = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except Exception as error:  # OmegaConf wraps resolver errors; show the cause only
        raise ConfigError(f"config cannot be resolved: {describe(error.__cause__ or error)}") from None
    model, data, optim = resolved["model"], resolved["data"], resolved["optim"]

    model["conv_stem"] = stem_name(model["conv_stem"])
    try:
        check_patch_grid(model["img_size"], model["conv_stem"], model["patch_size"])
    except ValueError as error:
        raise ConfigError(str(error)) from None
    if model["embed_dim"] % model["num_heads"]:
        _fail("model.embed_dim", model["embed_dim"],
              f"must be divisible by model.num_heads={model['num_heads']}")
    for key in ("embed_dim", "depth", "num_heads"):
        if model[key] < 1:
            _fail(f"model.{key}", model[key], "must be >= 1")
    if model["split_heads"] and (model["in_chans"] != 3 or model["num_heads"] % 4):
        _fail("model.split_heads", True, "needs RGB input and model.num_heads divisible by 4 "
              f"(3 colour groups + 1 shared); got in_chans={model['in_chans']}, "
              f"num_heads={model['num_heads']}")
    if model["temperature"] <= 0:
        _fail("model.temperature", model["temperature"], "must be > 0")
    if model["top_k"] is not None and model["top_k"] < 1:
        _fail("model.top_k", model["top_k"], "must be >= 1, or null for off")
    if model["top_p"] is not None and not 0 < model["top_p"] <= 1:
        _fail("model.top_p", model["top_p"], "must be in (0, 1], or null for off")
    if model["filter_mode"] not in FILTER_MODES:
        _fail("model.filter_mode", model["filter_mode"], f"allowed: {', '.join(FILTER_MODES)}")
    for key in RUNTIME_OPTIONS:
        if not isinstance(model.get(key, False), bool):
            _fail(f"model.{key}", model[key], "must be true or false")
    for key in ("dropout_attn", "dropout_embed", "drop_path"):
        if not 0 <= model[key] < 1:
            _fail(f"model.{key}", model[key], "must be in [0, 1)")
    if optim["lr"] <= 0:
        _fail("optim.lr", optim["lr"], "must be > 0")
    if optim["weight_decay"] < 0:
        _fail("optim.weight_decay", optim["weight_decay"], "must be >= 0")
    if not 0 <= optim.get("label_smoothing", 0) < 1:
        _fail("optim.label_smoothing", optim["label_smoothing"], "must be in [0, 1)")
    if not 0 <= optim.get("ema", 0) < 1:
        _fail("optim.ema", optim["ema"], "must be in [0, 1); 0 switches EMA off")
    _validate_aug(resolved["aug"], data)
    for key in ("batch_size", "val_size"):
        if data[key] < 1:
            _fail(f"data.{key}", data[key], "must be >= 1")
    if data["num_workers"] < 0:
        _fail("data.num_workers", data["num_workers"], "must be >= 0")
    metric = resolved.get("optimized_metric")
    for name in [metric] if isinstance(metric, str) else metric or []:
        if name not in LOGGED_METRICS:
            _fail("optimized_metric", name, f"not a logged metric; allowed: {', '.join(LOGGED_METRICS)}")
        if name.startswith("test"):
            _fail("optimized_metric", name, SELECTION_ON_VALIDATION)
    if str((resolved.get("gate") or {}).get("metric")).startswith("test"):
        _fail("gate.metric", resolved["gate"]["metric"], SELECTION_ON_VALIDATION)
    if resolved.get("resume") not in (None, "auto", "never") and not Path(resolved["resume"]).is_file():
        _fail("resume", resolved["resume"], "use auto, never, or the path of an existing checkpoint")
    return resolved
