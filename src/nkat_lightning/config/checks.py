"""The check of a composed train config before any work starts: every schema group through its
dataclass, then the few checks that span groups."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import get_type_hints

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from nkat_lightning.config.schema import (
    GROUP_SCHEMAS,
    RunConfig,
    Schema,
    schema_of,
)
from nkat_lightning.errors import ConfigError, describe

#: What a run logs (train/loss: the epoch mean, as Lightning names it for callbacks).
LOGGED_METRICS = ("train/loss", "train/loss_step", "train/loss_epoch", "train/acc", "val/loss",
                  "val/acc", "val/acc_best", "val/tpe", "val/tpe_best", "test/loss", "test/acc",
                  "test/tpe", "model/params", "model/lambda")
#: What ``optimized_metric`` may name: validation figures, and the model's size for a
#: multi-objective search.
SELECTABLE_METRICS = tuple(name for name in LOGGED_METRICS if name.startswith(("val/", "model/")))
SELECTION_ON_VALIDATION = ("selection reads validation metrics only (e.g. val/acc_best, "
                           "val_acc_best); test metrics are reported beside them")


def check_written_values(node: DictConfig, schema: type[Schema]) -> None:
    """The ranges of the values written out (not interpolated) in ``node``: checked before
    resolving, so a bad value that others are computed from (the conv stem, the EMNIST split)
    is named itself, not what it broke."""
    hints = get_type_hints(schema)
    for f in dataclasses.fields(schema):
        if f.name not in node or OmegaConf.is_interpolation(node, f.name):
            continue
        value = node[f.name]
        if isinstance(value, DictConfig) and dataclasses.is_dataclass(hints[f.name]):
            check_written_values(value, hints[f.name])
        elif not isinstance(value, DictConfig | list):
            schema.check_range(f, value)


def resolve(cfg: DictConfig) -> dict:
    try:
        return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as error:  # resolver errors: show the cause, with the key
        key = getattr(error, "full_key", None)
        cause = describe(error.__cause__) if error.__cause__ else str(error).splitlines()[0]
        raise ConfigError(f"{key or 'config'}: cannot be resolved ({cause}); check the "
                          "interpolation ${...} it uses") from None


def check_across_groups(resolved: dict) -> None:
    aug, data = resolved["aug"], resolved["data"]
    if aug["cutout"] >= data["img_size"]:
        raise ConfigError(f"aug.cutout: {aug['cutout']} is not smaller than the "
                          f"{data['img_size']}-px image; give 0 (off) to {data['img_size'] - 1}")
    if (aug["mixup"] or aug["cutmix"]) and data["batch_size"] % 2:
        raise ConfigError(f"data.batch_size: {data['batch_size']} is odd; Mixup/CutMix pair "
                          "the images of a batch, give an even size")


def check_selection(resolved: dict) -> None:
    metric = resolved.get("optimized_metric")
    for name in [metric] if isinstance(metric, str) else metric or []:
        if name not in LOGGED_METRICS:
            raise ConfigError(f"optimized_metric: {name!r} is not a logged metric; give one "
                              f"of {', '.join(SELECTABLE_METRICS)}")
        if name not in SELECTABLE_METRICS:  # a test or a training figure
            raise ConfigError(f"optimized_metric: {name!r} is a {name.split('/')[0]} metric; "
                              f"{SELECTION_ON_VALIDATION}")
    gate_metric = str((resolved.get("gate") or {}).get("metric"))
    if gate_metric.startswith("test"):
        raise ConfigError(f"gate.metric: {gate_metric!r} is a test metric; "
                          f"{SELECTION_ON_VALIDATION}")


def validate_config(cfg: DictConfig) -> dict:
    """Check ``cfg`` against the schema and resolve it; raise ``ConfigError`` with one line
    naming the key, what is wrong and how to fix it. Returns the resolved container."""
    for group in GROUP_SCHEMAS:
        check_written_values(cfg[group], schema_of(group, cfg[group]))
    resolved = resolve(cfg)
    for group in GROUP_SCHEMAS:
        schema_of(group, resolved[group]).from_dict(resolved[group])
    RunConfig.of(resolved)
    check_across_groups(resolved)
    check_selection(resolved)
    if resolved["resume"] not in ("auto", "never") and not Path(resolved["resume"]).is_file():
        raise ConfigError(f"resume: {resolved['resume']!r} is not a file; give auto, never, "
                          "or the path of an existing checkpoint")
    return resolved
