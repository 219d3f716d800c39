"""Lightning's Rich progress bar, updated every ``refresh_rate`` training batches as its
docstring says. Lightning's own updates the bar and gathers the metrics at every batch whatever
the rate: 2-3 % of a small CPU model's training step (``benchmarks/pipeline.py``)."""

from __future__ import annotations

from lightning.pytorch.callbacks import RichProgressBar


class ThrottledRichProgressBar(RichProgressBar):
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if (batch_idx + 1) % max(self.refresh_rate, 1) == 0 or trainer.is_last_batch:
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
