"""The LightningModule: NKAT-ViT, loss, accuracy / TPE logging, AdamW + warm-up/cosine."""

from __future__ import annotations

import math

import lightning as L
import torch
from lightning.pytorch.plugins.precision import MixedPrecision
from timm.data import Mixup
from timm.loss import SoftTargetCrossEntropy
from timm.optim import param_groups_weight_decay
from torch import nn
from torchmetrics import MaxMetric, MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from nkat_lightning.config.schema import AugConfig, DataConfig, ModelConfig, OptimConfig, schema_of
from nkat_lightning.errors import NonFiniteLossError
from nkat_lightning.models import NKATViT
from nkat_lightning.training.checkpointing import read_checkpoint
from nkat_lightning.training.metrics import count_parameters, lambda_theory, tpe

FUSED_ADAMW_DEVICES = ("cpu", "cuda", "mps", "xpu")  # where torch has a fused AdamW kernel


def warmup_cosine_factor(step: int, warmup_steps: int, total_steps: int, floor: float) -> float:
    """LR multiplier: linear warm-up from ~0 to 1, then cosine from 1 down to ``floor``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


class NKATLitModule(L.LightningModule):
    """Wraps ``NKATViT``; logs loss, top-1 accuracy, parameters, lambda and TPE.

    ``model``, ``optim``, ``aug`` and (for provenance and eval) ``data`` are their checked
    configs (``ModelConfig``, ...; a dict is checked into one), saved as plain dicts in the
    hyperparameters, so a checkpoint alone rebuilds the module and loads under
    ``torch.load(weights_only=True)``. ``model.compile`` compiles the network in place
    (``nn.Module.compile``), so parameter names and checkpoints stay those of the plain model;
    ``model.channels_last`` keeps the conv weights and the input batch channels-last.
    Training uses label smoothing, and timm's Mixup/CutMix with soft targets when
    ``aug.mixup`` or ``aug.cutmix`` is on; val/test use plain cross-entropy.
    """

    def __init__(self, model: ModelConfig | dict | None = None,
                 optim: OptimConfig | dict | None = None, data: DataConfig | dict | None = None,
                 aug: AugConfig | dict | None = None) -> None:
        super().__init__()
        model = ModelConfig.coerce(model or {})
        optim = OptimConfig.coerce(optim or {})
        aug = AugConfig.coerce(aug or {})
        data = None if data is None else schema_of("data", data).coerce(data)
        self.save_hyperparameters({"model": model.to_dict(), "optim": optim.to_dict(),
                                   "data": data and data.to_dict(), "aug": aug.to_dict()})
        self.net = NKATViT(model)
        self.compile_net = model.compile
        self.channels_last = model.channels_last
        if self.channels_last:
            self.net.to(memory_format=torch.channels_last)
        self.optim_cfg = optim
        self.mixup = None
        if aug.mixup or aug.cutmix:
            self.mixup = Mixup(
                mixup_alpha=aug.mixup, cutmix_alpha=aug.cutmix, prob=aug.mix_prob,
                switch_prob=aug.switch_prob, label_smoothing=optim.label_smoothing,
                num_classes=model.num_classes,
            )
            self.criterion = SoftTargetCrossEntropy()
        else:
            self.criterion = nn.CrossEntropyLoss(label_smoothing=optim.label_smoothing)
        self.eval_criterion = nn.CrossEntropyLoss()
        num_classes = model.num_classes
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")
        self.train_loss, self.val_loss, self.test_loss = MeanMetric(), MeanMetric(), MeanMetric()
        self.val_acc_best = MaxMetric()
        self.val_acc_best.persistent(True)  # in checkpoints: a resumed run keeps its best so far
        self.num_params = count_parameters(self.net)
        self.lam = lambda_theory(self.num_params)

    @staticmethod
    def hparams_from_checkpoint(path) -> dict:
        return read_checkpoint(path)["hyper_parameters"]

    def setup(self, stage: str) -> None:
        """Compile for fitting (the test after it keeps the compiled network), after callbacks'
        setup (the EMA copy) and not in ``configure_model``, which Lightning's
        ``WeightAveraging`` warns about. ``eval`` and ``analyze`` run the plain network."""
        if stage == "fit" and self.compile_net and self.net._compiled_call_impl is None:
            self.net.compile()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Checkpoints from before ``val_acc_best`` was saved load with a fresh one."""
        for key, value in self.val_acc_best.state_dict(prefix="val_acc_best.").items():
            for weights in ("state_dict", "current_model_state"):  # the latter: with EMA
                if weights in checkpoint:
                    checkpoint[weights].setdefault(key, value)

    def on_train_start(self) -> None:
        self.log_dict({"model/params": float(self.num_params), "model/lambda": self.lam})

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y = batch
        targets = y
        if self.mixup is not None:
            x, targets = self.mixup(x, y)
        logits = self(x)
        loss = self.criterion(logits, targets)
        if not torch.isfinite(loss):  # before backward: the weights are still the good ones
            raise NonFiniteLossError(
                f"the training loss became {float(loss.detach())} at step {self.global_step} (epoch "
                f"{self.current_epoch}); the run stopped and kept its last good checkpoint. "
                "Lower optim.lr, or clip gradients (trainer.gradient_clip_val=1.0)")
        self.train_loss.update(loss.detach())
        self.train_acc.update(logits.detach(), y)
        # Lightning's self.log costs about 0.5-1 ms a call on the CPU (its result collection
        # moves and checks the value every step); the step loss is logged only on the steps the
        # loggers write (trainer.log_every_n_steps) and on each epoch's last, the epoch figures
        # once in on_train_epoch_end.
        if self.loggers_write_this_step():
            self.log("train/loss_step", loss.detach(), on_step=True, on_epoch=False, prog_bar=True)
        return loss

    def loggers_write_this_step(self) -> bool:
        trainer = self._trainer  # None outside a Trainer (benchmarks/pipeline.py's bare step)
        return trainer is not None and (trainer._logger_connector.should_update_logs
                                        or trainer.is_last_batch or bool(trainer.fast_dev_run))

    def on_train_epoch_end(self) -> None:
        if not self.train_loss.update_called:  # no training batch this epoch
            return
        loss, acc = self.train_loss.compute(), self.train_acc.compute()  # reduced over processes
        # sync_dist: a mean of equal values, said so that Lightning does not warn under DDP
        self.log("train/loss_epoch", loss, prog_bar=True, sync_dist=True)
        self.log("train/loss", loss, logger=False, sync_dist=True)  # Lightning's callback name
        self.log("train/acc", acc, sync_dist=True)
        self.train_loss.reset()
        self.train_acc.reset()

    def _eval_step(self, batch, loss_metric: MeanMetric, acc_metric: MulticlassAccuracy, stage: str):
        x, y = batch
        logits = self(x)
        loss_metric(self.eval_criterion(logits, y))
        acc_metric(logits, y)
        self.log(f"{stage}/loss", loss_metric, on_step=False, on_epoch=True, prog_bar=True)
        self.log(f"{stage}/acc", acc_metric, on_step=False, on_epoch=True, prog_bar=True)

    def validation_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, self.val_loss, self.val_acc, "val")

    def on_validation_epoch_end(self) -> None:
        acc = self.val_acc.compute()
        if self.trainer.sanity_checking:  # a few batches of the untrained model: no best
            return
        self.val_acc_best(acc)
        best = self.best_so_far()
        self.log("val/acc_best", best["val/acc_best"], sync_dist=True, prog_bar=True)
        self.log("val/tpe", tpe(float(acc), self.lam), sync_dist=True)
        self.log("val/tpe_best", best["val/tpe_best"], sync_dist=True)

    def best_so_far(self) -> dict[str, float]:
        """``val/acc_best`` and ``val/tpe_best`` over the whole run (restored on resume); empty
        before the first validation."""
        best = float(self.val_acc_best.max_value)
        return {"val/acc_best": best, "val/tpe_best": tpe(best, self.lam)} if math.isfinite(best) else {}

    def test_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, self.test_loss, self.test_acc, "test")

    def on_test_epoch_end(self) -> None:
        self.log("test/tpe", tpe(float(self.test_acc.compute()), self.lam), sync_dist=True)
        self.log_dict({"model/params": float(self.num_params), "model/lambda": self.lam})

    def build_optimizer(self) -> torch.optim.AdamW:
        """AdamW without weight decay on norms, biases and tokens. torch's fused kernel (one
        call for all tensors) where it has one: on the CPU it took 0.9 ms a step against 4 ms
        for the default per-tensor loop, about 4 % of the default job's step. Not under mixed
        precision with gradient clipping: Lightning refuses to clip for an optimizer that
        unscales its gradients itself, as the fused one does."""
        cfg = self.optim_cfg
        groups = param_groups_weight_decay(
            self.net, cfg.weight_decay, no_weight_decay_list=self.net.no_weight_decay()
        )
        trainer = self._trainer
        clipped_amp = (trainer is not None and bool(trainer.gradient_clip_val)
                       and isinstance(trainer.precision_plugin, MixedPrecision))
        fused = self.device.type in FUSED_ADAMW_DEVICES and not clipped_amp
        return torch.optim.AdamW(
            groups, lr=cfg.lr, betas=tuple(cfg.betas), fused=fused or None,
        )

    def configure_optimizers(self):
        cfg = self.optim_cfg
        optimizer = self.build_optimizer()
        total = int(self.trainer.estimated_stepping_batches)
        epochs = max(1, self.trainer.max_epochs or 1)
        warmup = min(total, round(cfg.warmup_epochs * total / epochs))
        floor = cfg.min_lr_ratio
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: warmup_cosine_factor(step, warmup, total, floor)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
