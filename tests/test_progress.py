"""The default callbacks' progress bar updates every every_n_batches training batches and at
each epoch's last, not at every batch."""

from lightning.pytorch.callbacks import RichProgressBar

from helpers import FAST, TINY_MODEL, compose_train
from nkat_lightning.training.fit import train
from nkat_lightning.training.progress import ThrottledRichProgressBar


def test_default_progress_bar_updates_every_n_batches(synthetic_root, tmp_path, monkeypatch):
    updates = []
    update = RichProgressBar.on_train_batch_end

    def record(self, trainer, pl_module, outputs, batch, batch_idx):
        updates.append((trainer.current_epoch, batch_idx))
        update(self, trainer, pl_module, outputs, batch, batch_idx)

    monkeypatch.setattr(RichProgressBar, "on_train_batch_end", record)
    cfg = compose_train(["data=mnist", *TINY_MODEL, *FAST, "callbacks=default",
                         "trainer.enable_progress_bar=true", "callbacks.progress_bar.every_n_batches=3",
                         "trainer.max_epochs=2", "trainer.limit_train_batches=7",
                         "test_after_fit=false"], tmp_path, data_root=synthetic_root)
    assert cfg.callbacks.progress_bar._target_.endswith(ThrottledRichProgressBar.__name__)
    train(cfg)
    assert updates == [(epoch, batch) for epoch in (0, 1) for batch in (2, 5, 6)]
