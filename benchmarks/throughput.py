"""NKAT-ViT against timm's VisionTransformer of identical dimensions, side by side in one run.

For each preset (the MNIST- and CIFAR-shaped compact presets, the stage-2 preset) prints
training and inference images/s and peak memory of timm's ViT and of NKAT-ViT with
(a) filters and modulation off, (b) top-k + top-p on, (c) NKAT modulation on, then the ratios
against the targets: (a)/timm >= 0.95, (b)/(a) >= 0.6, (c)/(a) >= 0.9. Timings interleave the
models over several rounds and take the median, so machine noise hits all of them alike. Peak
memory is the CUDA allocator's peak on a GPU and the growth of the process's peak RSS on the
CPU (each model measured in a fresh process, Linux). It also times ``--help`` and a command's path to
its first training step.

    python benchmarks/throughput.py [--device cpu|cuda] [--precision 32-true|bf16-mixed]
                                    [--compile] [--channels-last]
                                    [--presets mnist cifar10 stage2] [--rounds 5]
"""

from __future__ import annotations

import argparse
import functools
import multiprocessing
import random
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from pathlib import Path

import torch
from timm.models.vision_transformer import VisionTransformer
from timm.models.vision_transformer_hybrid import HybridEmbed

from nkat_lightning.config.checks import validate_config
from nkat_lightning.config.compose import compose_train_config
from nkat_lightning.models import ModelConfig, NKATViT
from nkat_lightning.models.embedding import build_conv_stem

PRESETS = {  # name -> overrides of the train config
    "mnist": ["experiment=compact_mnist"],
    "cifar10": ["experiment=compact_cifar10"],
    "stage2": ["experiment=stage2_cifar10"],
}
VARIANTS = {  # NKAT-ViT settings on top of the preset's model, filters and modulation off
    "(a) plain": {"top_k": None, "top_p": None, "nkat_strength": 0.0},
    "(b) top-k+top-p": {"top_k": 6, "top_p": 0.8, "nkat_strength": 0.0},
    "(c) modulation": {"top_k": None, "top_p": None, "nkat_strength": 0.0024, "nkat_decay": 0.99},
}
TARGETS = [("(a) plain", "timm", 0.95), ("(b) top-k+top-p", "(a) plain", 0.6),
           ("(c) modulation", "(a) plain", 0.9)]


def preset_model_config(preset: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose_train_config(PRESETS[preset], Path(tmp))
        return validate_config(cfg)["model"]


def build(model_cfg: dict, variant: str) -> torch.nn.Module:
    """NKAT-ViT for a variant, or timm's ViT ("timm") with the same stem, dimensions and
    dropout rates (NKAT-ViT's colour-wise LayerNorm, on for RGB, has no timm counterpart)."""
    if variant != "timm":
        return NKATViT(ModelConfig.from_dict({**model_cfg, **VARIANTS[variant]}))
    stem, _ = build_conv_stem(ModelConfig.from_dict(model_cfg))
    return VisionTransformer(
        img_size=model_cfg["img_size"], patch_size=model_cfg["patch_size"],
        in_chans=model_cfg["in_chans"], num_classes=model_cfg["num_classes"],
        embed_dim=model_cfg["embed_dim"], depth=model_cfg["depth"],
        num_heads=model_cfg["num_heads"], mlp_ratio=model_cfg["mlp_ratio"],
        attn_drop_rate=model_cfg["dropout_attn"], pos_drop_rate=model_cfg["dropout_embed"],
        drop_path_rate=model_cfg["drop_path"],  # the preset's regularisation, as NKAT-ViT gets
        embed_layer=functools.partial(HybridEmbed, backbone=stem),
    )


class Bench:
    """One model's training step (AdamW) and inference pass on a fixed random batch."""

    def __init__(self, model_cfg: dict, variant: str, args) -> None:
        self.device = torch.device(args.device)
        self.model = build(model_cfg, variant).to(self.device)
        if args.compile:
            self.model.compile()  # in place, as model.compile=true does
        size, chans = model_cfg["img_size"], model_cfg["in_chans"]
        self.x = torch.randn(args.batch, chans, size, size, device=self.device)
        if args.channels_last:  # as model.channels_last=true does
            self.model.to(memory_format=torch.channels_last)
            self.x = self.x.contiguous(memory_format=torch.channels_last)
        self.y = torch.randint(0, model_cfg["num_classes"], (args.batch,), device=self.device)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-4,
                                           fused=self.device.type == "cuda" or None)
        self.autocast = (torch.autocast(self.device.type, dtype=torch.bfloat16)
                         if args.precision == "bf16-mixed" else nullcontext())

    def train_step(self) -> None:
        self.model.train()
        with self.autocast:
            loss = torch.nn.functional.cross_entropy(self.model(self.x), self.y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    @torch.inference_mode()
    def infer_step(self) -> None:
        self.model.eval()
        with self.autocast:
            self.model(self.x)

    def rate(self, step, steps: int, min_seconds: float) -> float:
        """Images/s over at least ``steps`` calls and ``min_seconds``, after 2 warm-up calls
        (short timings of small models are mostly noise)."""
        for _ in range(2):
            step()
        self.sync()
        calls, start = 0, time.perf_counter()
        while calls < steps or time.perf_counter() - start < min_seconds:
            step()
            calls += 1
        self.sync()
        return calls * len(self.x) / (time.perf_counter() - start)

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()


def rss_kib(field: str) -> int:
    """VmRSS (now) or VmHWM (peak since the last reset) of this process, in KiB (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def peak_memory_mb(model_cfg: dict, variant: str, args, train: bool) -> float:
    """Peak memory of building the model and running a few steps: the CUDA allocator's peak,
    or on the CPU the rise of the process's peak RSS above its RSS before (the peak is reset
    through /proc/self/clear_refs, so the imports' own peak does not hide it)."""
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        before = rss_kib("VmRSS")
    bench = Bench(model_cfg, variant, args)
    for _ in range(3):
        bench.train_step() if train else bench.infer_step()
    if args.device == "cuda":
        return (torch.cuda.max_memory_allocated() - before) / 2**20
    return (rss_kib("VmHWM") - before) / 1024


def command_seconds(*args: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "nkat_lightning.train", *args], check=True,
                   capture_output=True, timeout=900)
    return time.perf_counter() - start


def startup_times() -> dict[str, float]:
    """Wall time of ``--help`` and of a run that stops after its first training step (on
    synthetic MNIST files)."""
    from nkat_lightning.data.synthetic import write_mnist_like

    with tempfile.TemporaryDirectory() as tmp:
        write_mnist_like(Path(tmp) / "data", "MNIST")
        first_step = command_seconds(
            "data=mnist", "trainer.max_steps=1", "trainer.limit_val_batches=0",
            "test_after_fit=false", "callbacks=minimal", "trainer.accelerator=cpu", "data.val_size=32",
            f"paths.data_dir={tmp}/data", f"hydra.run.dir={tmp}/run")
    return {"--help": command_seconds("--help"), "to first training step": first_step}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", default="32-true", choices=["32-true", "bf16-mixed"])
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--presets", nargs="+", default=list(PRESETS), choices=list(PRESETS))
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--min-seconds", type=float, default=1.0,
                        help="least time per timing (more steps for fast models)")
    parser.add_argument("--no-startup", action="store_true", help="skip the command timings")
    args = parser.parse_args()
    variants = ["timm", *VARIANTS]
    spawn = multiprocessing.get_context("spawn")
    print(f"device {args.device}, {args.precision}, compile={args.compile}, "
          f"channels_last={args.channels_last}, batch {args.batch}, {torch.get_num_threads()} "
          f"threads; median of {args.rounds} rounds of >= {args.steps} steps and >= "
          f"{args.min_seconds} s")
    for preset in args.presets:
        model_cfg = preset_model_config(preset)
        benches = {v: Bench(model_cfg, v, args) for v in variants}
        rates = {(v, kind): [] for v in variants for kind in ("train", "infer")}
        order = random.Random(0)
        for _ in range(args.rounds):  # interleaved, in a new order each round: noise hits all
            jobs = [(v, kind) for v in variants for kind in ("train", "infer")]
            order.shuffle(jobs)
            for v, kind in jobs:
                bench = benches[v]
                step = bench.train_step if kind == "train" else bench.infer_step
                rates[v, kind].append(bench.rate(step, args.steps, args.min_seconds))
        median = {key: statistics.median(values) for key, values in rates.items()}
        memory = {}
        for v in variants:
            for kind in ("train", "infer"):  # a fresh process each: peak RSS only grows
                with ProcessPoolExecutor(1, mp_context=spawn) as pool:
                    memory[v, kind] = pool.submit(peak_memory_mb, model_cfg, v, args,
                                                  kind == "train").result()
        params = sum(p.numel() for p in benches["(a) plain"].model.parameters())
        print(f"\n{preset}: {model_cfg['img_size']}px x{model_cfg['in_chans']}, stem "
              f"{model_cfg['conv_stem']}, patch {model_cfg['patch_size']}, dim "
              f"{model_cfg['embed_dim']} x {model_cfg['depth']}, {params / 1e6:.2f}M parameters")
        print(f"  {'model':18} {'train img/s':>12} {'infer img/s':>12} {'train MB':>9} "
              f"{'infer MB':>9}   spread over rounds (max-min)/median: train, infer")
        for v in variants:
            spread = [(max(rates[v, k]) - min(rates[v, k])) / median[v, k] for k in ("train", "infer")]
            print(f"  {v:18} {median[v, 'train']:12.0f} {median[v, 'infer']:12.0f} "
                  f"{memory[v, 'train']:9.0f} {memory[v, 'infer']:9.0f}   "
                  f"{spread[0]:.0%}, {spread[1]:.0%}")
        for model, peer, target in TARGETS:
            for kind in ("train", "infer"):
                ratio = median[model, kind] / median[peer, kind]
                verdict = "OK" if ratio >= target else "BELOW"
                print(f"  {kind:5} {model} / {peer}: {ratio:.3f} (target >= {target}) {verdict}")
    if not args.no_startup:
        print()
        for name, seconds in startup_times().items():
            print(f"command {name}: {seconds:.1f} s")


if __name__ == "__main__":
    main()
