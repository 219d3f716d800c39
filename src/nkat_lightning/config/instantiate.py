"""Objects from the config: ``hydra.utils.instantiate`` limited to trusted packages, with a
library's refusal of the user's settings (a Trainer argument, a logger option) turned into one
line that names the config key."""

from __future__ import annotations

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.fabric.utilities.exceptions import MisconfigurationException
from omegaconf import DictConfig

from nkat_lightning.errors import ConfigError, UserError, describe

#: Packages whose classes a config may name as ``_target_`` (Hydra 1.4's execution whitelist).
TRUSTED_TARGETS = ["nkat_lightning.*", "lightning.*", "torch.*", "timm.*", "optuna.*"]
#: What a library raises when it refuses an argument or lacks an optional package for it.
REFUSALS = (TypeError, ValueError, ImportError, MisconfigurationException)


def build(config, **kwargs):
    """``hydra.utils.instantiate`` limited to the trusted packages."""
    try:
        return instantiate(config, _execution_whitelist_=TRUSTED_TARGETS, **kwargs)
    except Exception as error:  # Hydra 1.4 re-raises the target's own error, with full_key
        cause = error.__cause__ if isinstance(error, InstantiationException) else error
        if isinstance(cause, UserError):
            raise cause from None
        target = str(config.get("_target_", "")) if hasattr(config, "get") else ""
        if not isinstance(cause, REFUSALS) or target.startswith("nkat_lightning."):
            raise
        key = config._get_full_key("") if isinstance(config, DictConfig) else ""
        raise ConfigError(f"{key or target}: {target.rsplit('.', 1)[-1]} refused the settings "
                          f"({describe(cause, limit=400)}); fix or remove the value it names") from None


def instantiate_all(group: DictConfig | None) -> list:
    """Instantiate each ``_target_`` entry of a callbacks/logger group."""
    if not group:
        return []
    return [build(entry) for entry in group.values() if entry and "_target_" in entry]
