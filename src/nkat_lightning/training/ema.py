"""EMA of the weights with a decay warm-up, as Lightning's ``WeightAveraging`` callback.

Lightning's ``EMAWeightAveraging`` uses a fixed decay from the first step, so with 0.9995 the
validated weights stay mostly the random initial ones for thousands of steps. The decay here
ramps up as ``min(decay, (1 + n) / (10 + n))`` over the first ``n`` updates, the
``num_updates`` form of TensorFlow's ``ExponentialMovingAverage`` (timm's ``ModelEmaV3`` warms
up too, but is not a Lightning callback).
"""

from __future__ import annotations

import torch
from lightning.pytorch.callbacks import WeightAveraging
from lightning.pytorch.trainer.states import TrainerFn


def warmup_decay(decay: float, updates: int) -> float:
    return min(decay, (1 + updates) / (10 + updates))


def ema_multi_avg_fn(decay: float):
    """``multi_avg_fn`` for ``torch.optim.swa_utils.AveragedModel``: one fused lerp per step."""

    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged) -> None:
        weight = 1.0 - warmup_decay(decay, int(num_averaged))
        pairs = [(a, c) for a, c in zip(averaged, current, strict=True) if a.is_floating_point()]
        if pairs:
            torch._foreach_lerp_([a for a, _ in pairs], [c for _, c in pairs], weight)
        for a, c in zip(averaged, current, strict=True):
            if not a.is_floating_point():  # counters such as BatchNorm's num_batches_tracked
                a.copy_(c)

    return update


class EMAWithWarmup(WeightAveraging):
    """Validation, test and the saved checkpoints use the EMA weights (Lightning's swap)."""

    def __init__(self, decay: float) -> None:
        super().__init__(multi_avg_fn=ema_multi_avg_fn(decay))

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        """Resuming a fit restores both models; testing or validating a checkpoint keeps its
        ``state_dict``, the EMA weights (Lightning's callback would load the raw ones after
        a fit in the same process, and test those)."""
        if trainer.state.fn == TrainerFn.FITTING:
            super().on_load_checkpoint(trainer, pl_module, checkpoint)
