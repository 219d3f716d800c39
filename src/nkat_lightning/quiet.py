"""Third-party messages that this framework's normal use always triggers and that tell its
user nothing, each silenced with its reason beside it. Every other warning stays."""

from __future__ import annotations

import logging
import warnings

#: Warnings (message regex, reason).
WARNINGS = [
    (r"`\.\w+\(ckpt_path=None\)` was called without a model",
     "train picks the checkpoint to resume itself (resume=auto|never|<path>) and passes it; "
     "with the Ctrl-C checkpoint callback present Lightning rereads None as 'last' and says so"),
    (r"\.\w+\(ckpt_path=\"last\"\) is set, but there is no last checkpoint available",
     "the same rereading of None, on a fresh run"),
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated",
     "raised inside Lightning 2.6 under torch >= 2.10; nothing a user can change"),
]
#: Lines of Lightning's rank-zero info logger (message prefix, reason).
INFO_LINES = [
    ("💡 Tip: For seamless cloud logging", "an advertisement for a cloud logger"),
    ("Trainer already configured with model summary callbacks",
     "the callbacks group chooses RichModelSummary on purpose"),
]
LIGHTNING_INFO_LOGGERS = ("lightning.pytorch.utilities.rank_zero",
                          "lightning.fabric.utilities.rank_zero")


class DropInfoLines(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        return not any(message.startswith(prefix) for prefix, _ in INFO_LINES)


def quiet_third_party_noise() -> None:
    """Install the filters (idempotent); call before the training stack runs."""
    for pattern, _reason in WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    for name in LIGHTNING_INFO_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, DropInfoLines) for f in logger.filters):
            logger.addFilter(DropInfoLines())
