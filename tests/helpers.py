"""Compose configs as the entry points do, for tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from hydra.core.global_hydra import GlobalHydra

from nkat_lightning.config.compose import compose_train_config as compose_train  # noqa: F401

TINY_MODEL = ["model.embed_dim=32", "model.depth=2", "model.num_heads=2"]
FAST = ["trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1", "trainer.accelerator=cpu", "trainer.devices=1",
        "data.num_workers=0", "data.batch_size=16", "data.val_size=32", "callbacks=minimal",
        "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]


def run_hydra_main(monkeypatch, main, *args: str):
    """``python -m <app> ARGS`` for a ``@hydra.main`` app, without a new interpreter."""
    monkeypatch.setattr(sys, "argv", ["app", *args])
    GlobalHydra.instance().clear()
    return main()


# Synthetic CIFAR-10 pickles cannot match the real MD5 sums: the test launcher skips that check.
LAUNCH = ("import os, sys, runpy; from torchvision.datasets import cifar; "
          "cifar.check_integrity = lambda path, md5=None: os.path.isfile(path); "
          "sys.argv[0] = sys.argv[1]; del sys.argv[1]; "
          "runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)")
SUBPROCESS_ENV = {**os.environ, "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "0"}


def module_command(module: str, *args: str) -> list[str]:
    """argv of ``python -m <module> ARGS`` in a fresh interpreter (for subprocess)."""
    return [sys.executable, "-c", LAUNCH, module, *args]


def start_then_signal(command: list[str], cwd, ready, sig: int = signal.SIGKILL,
                      timeout: float = 300) -> int:
    """Run ``command`` in its own process group; once ``ready()`` is true send ``sig`` to the
    group; return the exit code."""
    process = subprocess.Popen(command, cwd=cwd, env=SUBPROCESS_ENV, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    while not ready() and time.time() < deadline:
        assert process.poll() is None, "the run ended before it could be interrupted"
        time.sleep(0.05)
    os.killpg(process.pid, sig)
    return process.wait(timeout=120)


def finished_run(val_acc: float, test_acc: float, lam: float = 0.5) -> dict:
    """A suite entry of a finished run, as ``run_one`` returns it."""
    from nkat_lightning.training.metrics import tpe

    return {"status": "ok", "val_acc_best": val_acc, "val_tpe_best": tpe(val_acc, lam),
            "test_acc": test_acc, "test_tpe": tpe(test_acc, lam), "params": int(lam * 1e6),
            "lambda": lam, "run_dir": "r"}


def assert_checkpoint_loads(path) -> None:
    """Both ways a user loads a checkpoint: torch's safe load and Lightning's standard call."""
    import torch

    from nkat_lightning.training.module import NKATLitModule

    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    module = NKATLitModule.load_from_checkpoint(path, map_location="cpu")
    state = module.state_dict()
    for key, value in checkpoint["state_dict"].items():
        torch.testing.assert_close(state[key], value, msg=f"{path}: {key}")


def probe_forward(monkeypatch) -> list[dict]:
    """What each forward of the LightningModule saw in a run, appended to the returned list:
    the autocast state and dtype, the logits' dtype, whether the input and a conv's
    weights were channels-last, and whether the network ran compiled."""
    import torch

    from nkat_lightning.training.module import NKATLitModule

    seen: list[dict] = []
    original = NKATLitModule.forward

    def forward(self, x):
        logits = original(self, x)
        device = x.device.type
        conv = next((m for m in self.net.modules() if isinstance(m, torch.nn.Conv2d) and
                     m.in_channels > 1 and m.weight[0, 0].numel() > 1), None)  # has a layout
        seen.append({
            "autocast": torch.is_autocast_enabled(device) and torch.get_autocast_dtype(device),
            "logits": logits.dtype,
            "input_channels_last": x.is_contiguous(memory_format=torch.channels_last)
            and (x.shape[1] == 1 or not x.is_contiguous()),  # one channel: both layouts alike
            "weight_channels_last": conv is not None and conv.weight.is_contiguous(
                memory_format=torch.channels_last) and not conv.weight.is_contiguous(),
            "compiled": self.net._compiled_call_impl is not None,
        })
        return logits

    monkeypatch.setattr(NKATLitModule, "forward", forward)
    return seen
