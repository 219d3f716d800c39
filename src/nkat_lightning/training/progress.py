"""Lightning's Rich progress bar, its training bar updated every ``every_n_batches`` batches
and at each epoch's last. Lightning's own updates the bar and gathers the metrics at every
batch (its ``refresh_rate`` is the redraws per second): 2-3 % of a small CPU model's training
step (``benchmarks/pipeline.py``)."""

from __future__ import annotations

from lightning.pytorch.callbacks import RichProgressBar


class ThrottledRichProgressBar(RichProgressBar):
    def __init__(self, *args, every_n_batches: int = 10, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.every_n_batches = max(int(every_n_batches), 1)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if (batch_idx + 1) % self.every_n_batches == 0 or trainer.is_last_batch:
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
