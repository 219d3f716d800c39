"""Logger factories that need a decision Lightning's loggers do not make themselves."""

from __future__ import annotations

import netrc
import os

from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_info


def wandb_api_key_present() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def wandb_logger(offline: bool | str = "auto", save_dir: str = ".", **kwargs) -> WandbLogger:
    """``WandbLogger`` that goes offline, with one notice, when no API key is configured
    (``offline=auto``), so a run never waits on a login prompt or the network."""
    if offline == "auto":
        offline = os.environ.get("WANDB_MODE") == "offline" or not wandb_api_key_present()
        if offline:
            rank_zero_info(
                "W&B: no API key found, logging offline. Upload later with "
                f"`wandb sync {save_dir}/wandb/offline-run-*`."
            )
    if offline:
        kwargs["log_model"] = False  # offline runs cannot upload model artifacts
    return WandbLogger(offline=bool(offline), save_dir=save_dir, **kwargs)
