"""Weights & Biases: the decisions Lightning's ``WandbLogger`` does not make itself (offline
without a key, the group of a sweep or suite)."""

from __future__ import annotations

import netrc
import os
import socket
import urllib.parse
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_info

from nkat_lightning.config.compose import in_multirun

SUITE_GROUP_PREFIX = "suite-"
DEFAULT_WANDB_SERVER = "https://api.wandb.ai"
PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


def wandb_api_key_present() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def wandb_server_unreachable(timeout: float = 3.0) -> str | None:
    """Why the W&B server (``WANDB_BASE_URL``, default api.wandb.ai) took no connection within
    ``timeout`` seconds, or None when it did. (wandb itself retries for about two minutes and
    then raises.)"""
    if any(os.environ.get(name) for name in PROXY_VARIABLES):
        return None  # the server is reached through a proxy: leave the decision to wandb
    try:
        url = urllib.parse.urlsplit(os.environ.get("WANDB_BASE_URL", DEFAULT_WANDB_SERVER))
        port = url.port or (443 if url.scheme == "https" else 80)
    except ValueError:  # a malformed port: wandb reports it
        return None
    if not url.hostname:
        return None
    try:
        with socket.create_connection((url.hostname, port), timeout=timeout):
            return None
    except OSError as error:
        return f"{url.hostname}:{port} is unreachable ({error.strerror or error})"


def resolve_offline(offline: bool | str, save_dir: str) -> bool:
    """``auto``: offline, with one notice naming the sync command, when no API key is set (or
    WANDB_MODE=offline) or the W&B server does not answer within seconds, so a run never
    waits on a login prompt or the network."""
    if offline != "auto":
        return bool(offline)
    sync = f"Upload later with `wandb sync {save_dir}/wandb/offline-run-*`."
    if os.environ.get("WANDB_MODE") == "offline" or not wandb_api_key_present():
        rank_zero_info(f"W&B: no API key found, logging offline. {sync}")
        return True
    problem = wandb_server_unreachable()
    if problem:
        rank_zero_info(f"W&B: {problem}, logging offline. {sync}")
        return True
    return False


def group_and_tags(group: str | None, tags: list[str] | None) -> tuple[str | None, list[str]]:
    """``group=auto``: a multirun's runs share its sweep folder's name and carry the tag
    ``sweep``; a suite's group (``suite-...``) adds the tag ``suite``."""
    tags = list(tags or [])
    if group == "auto":
        group = None
        if in_multirun():
            group = Path(HydraConfig.get().sweep.dir).name
            tags.append("sweep")
    elif group and group.startswith(SUITE_GROUP_PREFIX):
        tags.append("suite")
    return group, tags


def wandb_logger(offline: bool | str = "auto", save_dir: str = ".", group: str | None = "auto",
                 tags: list[str] | None = None, **kwargs) -> WandbLogger:
    """``WandbLogger`` that goes offline by itself and groups the runs of a sweep or suite."""
    offline = resolve_offline(offline, save_dir)
    if offline:
        kwargs["log_model"] = False  # offline runs cannot upload model artifacts
    group, tags = group_and_tags(group, tags)
    return WandbLogger(offline=offline, save_dir=save_dir, group=group, tags=tags, **kwargs)


def finish_loggers(loggers: list) -> None:
    """Close W&B runs so the next run of a multirun gets its own."""
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            import wandb

            wandb.finish()
