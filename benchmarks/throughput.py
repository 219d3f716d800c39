"""NKAT-ViT against timm's VisionTransformer of identical dimensions, side by side in one run.

For each shape (the default job, the MNIST- and CIFAR-shaped compact presets, the stage-2
preset, and no-stem shapes of ``--tokens`` patches) prints its token count, then training and
inference images/s and peak memory of timm's ViT and of NKAT-ViT with (a) filters and
modulation off, (b) top-k 6 + top-p 0.8, (c) NKAT modulation on, (d) all the seed's NKAT
settings (learned temperature 0.65, the filters, the modulation), then every ratio against its
target (``TARGETS``, and peak training memory (a)/timm <= 1.05 at the stage-2 preset) and a
last line that counts the targets met. Timings interleave the models over several rounds and
take the median, so machine noise hits all of them alike. Peak memory is the CUDA allocator's
peak on a GPU and the growth of the process's peak RSS on the CPU (each model measured in a
fresh process, Linux; (a) and timm in training ``--memory-rounds`` times, median; the other
variants with ``--memory-all``). It also
times a command's path to its first training step.

    python benchmarks/throughput.py [--device cpu|cuda] [--precision 32-true|bf16-mixed]
                                    [--compile] [--channels-last] [--rounds 5]
                                    [--presets default mnist cifar10 stage2] [--tokens 49 64]
"""

from __future__ import annotations

import argparse
import functools
import math
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
from nkat_lightning.training.module import FUSED_ADAMW_DEVICES

PRESETS = {  # name -> overrides of the train config
    "default": [],
    "mnist": ["experiment=compact_mnist"],
    "cifar10": ["experiment=compact_cifar10"],
    "stage2": ["experiment=stage2_cifar10"],
}
TOKEN_SHAPES = [(28, "experiment=compact_mnist"), (32, "experiment=compact_cifar10")]  # no stem
PLAIN = {"temperature": 1.0, "learnable_temperature": False, "top_k": None, "top_p": None,
         "nkat_strength": 0.0}
VARIANTS = {  # NKAT-ViT settings on top of the shape's model
    "(a) plain": PLAIN,
    "(b) top-k+top-p": {**PLAIN, "top_k": 6, "top_p": 0.8},
    "(c) modulation": {**PLAIN, "nkat_strength": 0.0024, "nkat_decay": 0.99},
    "(d) all NKAT": {"temperature": 0.65, "learnable_temperature": True, "top_k": 6,
                     "top_p": 0.8, "nkat_strength": 0.0024, "nkat_decay": 0.99},
}
TARGETS = [  # (model, peer, least ratio in training, least ratio in inference)
    ("(a) plain", "timm", 0.95, 0.95),
    ("(b) top-k+top-p", "(a) plain", 0.85, 0.75),
    ("(c) modulation", "(a) plain", 0.9, 0.9),
    ("(d) all NKAT", "(a) plain", 0.7, 0.7),
]
MEMORY_TARGET = ("stage2", 1.05)  # peak training memory of (a) over timm's, at this shape


def token_shape(patches: int) -> list[str]:
    """Overrides for a no-stem shape with ``patches`` patch tokens (plus the class token): the
    compact preset of the first image size that a patch size divides into that many."""
    for size, experiment in TOKEN_SHAPES:
        for patch in range(1, size + 1):
            if size % patch == 0 and (size // patch) ** 2 == patches:
                return [experiment, "model/conv_stem=off", f"model.patch_size={patch}"]
    possible = sorted({(size // patch) ** 2 for size, _ in TOKEN_SHAPES
                       for patch in range(1, size + 1) if size % patch == 0})
    raise SystemExit(f"error: --tokens {patches}: no patch size cuts 28- or 32-px images into "
                     f"{patches} patches; give one of {', '.join(map(str, possible))}")


def shape_model_config(overrides: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose_train_config(overrides, Path(tmp))
        return validate_config(cfg)["model"]


def token_count(model: torch.nn.Module) -> int:
    """Tokens the blocks see: patches plus the class token."""
    return model.patch_embed.num_patches + model.num_prefix_tokens


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
        global_pool=model_cfg["global_pool"],
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
        self.optimizer = torch.optim.AdamW(  # fused where the framework's runs use it
            self.model.parameters(), lr=1e-4,
            fused=self.device.type in FUSED_ADAMW_DEVICES or None)
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
    """Wall time of a run that stops after its first training step (on synthetic MNIST files;
    ``--help`` and config errors: benchmarks/startup.py)."""
    from nkat_lightning.data.synthetic import write_mnist_like

    with tempfile.TemporaryDirectory() as tmp:
        write_mnist_like(Path(tmp) / "data", "MNIST")
        first_step = command_seconds(
            "data=mnist", "trainer.max_steps=1", "trainer.limit_val_batches=0",
            "test_after_fit=false", "callbacks=minimal", "trainer.accelerator=cpu", "data.val_size=32",
            f"paths.data_dir={tmp}/data", f"hydra.run.dir={tmp}/run")
    return {"to first training step": first_step}


def measure_memory(model_cfg: dict, variant: str, args, train: bool, rounds: int) -> float:
    """Median peak memory over ``rounds`` fresh processes (peak RSS only grows in one)."""
    spawn = multiprocessing.get_context("spawn")
    values = []
    for _ in range(rounds):
        with ProcessPoolExecutor(1, mp_context=spawn) as pool:
            values.append(pool.submit(peak_memory_mb, model_cfg, variant, args, train).result())
    return statistics.median(values)


def megabytes(value: float) -> str:
    return f"{'-':>9}" if math.isnan(value) else f"{value:9.0f}"


def run_shape(name: str, model_cfg: dict, args, verdicts: list[tuple[str, bool]]) -> None:
    variants = ["timm", *VARIANTS]
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
    measured = variants if args.memory_all else ["timm", "(a) plain"]  # the target's pair
    memory = {(v, kind): measure_memory(model_cfg, v, args, kind == "train",
                                        args.memory_rounds if v in ("timm", "(a) plain")
                                        and kind == "train" else 1)
              if args.memory_rounds and v in measured else math.nan
              for v in variants for kind in ("train", "infer")}
    plain = benches["(a) plain"].model
    params = sum(p.numel() for p in plain.parameters())
    print(f"\n{name}: {model_cfg['img_size']}px x{model_cfg['in_chans']}, stem "
          f"{model_cfg['conv_stem']}, patch {model_cfg['patch_size']}, "
          f"{token_count(plain)} tokens, dim {model_cfg['embed_dim']} x {model_cfg['depth']}, "
          f"{model_cfg['num_heads']} heads, {params / 1e6:.2f}M parameters")
    print(f"  {'model':18} {'train img/s':>12} {'infer img/s':>12} {'train MB':>9} "
          f"{'infer MB':>9}   spread over rounds (max-min)/median: train, infer")
    for v in variants:
        spread = [(max(rates[v, k]) - min(rates[v, k])) / median[v, k] for k in ("train", "infer")]
        print(f"  {v:18} {median[v, 'train']:12.0f} {median[v, 'infer']:12.0f} "
              f"{megabytes(memory[v, 'train'])} {megabytes(memory[v, 'infer'])}   "
              f"{spread[0]:.0%}, {spread[1]:.0%}")
    for model, peer, *least in TARGETS:
        for kind, target in zip(("train", "infer"), least, strict=True):
            ratio = median[model, kind] / median[peer, kind]
            verdicts.append((f"{name} {kind} {model} / {peer}", ratio >= target))
            print(f"  {kind:5} {model} / {peer}: {ratio:.3f} (target >= {target}) "
                  f"{'OK' if ratio >= target else 'BELOW'}")
    if not args.memory_rounds:
        print("  peak training memory: not measured (--memory-rounds 0)")
        return
    ratio = memory["(a) plain", "train"] / memory["timm", "train"]
    shape, limit = MEMORY_TARGET
    line = f"  peak training memory (a) plain / timm: {ratio:.3f}"
    if name == shape:
        verdicts.append((f"{name} peak training memory (a) / timm", ratio <= limit))
        line += f" (target <= {limit}) {'OK' if ratio <= limit else 'ABOVE'}"
    print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", default="32-true", choices=["32-true", "bf16-mixed"])
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--presets", nargs="*", default=list(PRESETS), choices=list(PRESETS))
    parser.add_argument("--tokens", nargs="*", type=int, default=[49, 64], metavar="N",
                        help="also no-stem shapes cut into N patches (28 or 32 px); none: --tokens")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--min-seconds", type=float, default=1.0,
                        help="least time per timing (more steps for fast models)")
    parser.add_argument("--memory-rounds", type=int, default=3,
                        help="fresh processes for the training memory of (a) and timm (median);"
                             " 0: no memory figures")
    parser.add_argument("--memory-all", action="store_true",
                        help="the memory of every variant (a fresh process each), not only of "
                             "(a) and timm")
    parser.add_argument("--no-startup", action="store_true", help="skip the command timings")
    args = parser.parse_args()
    shapes = [(name, PRESETS[name]) for name in args.presets]
    shapes += [(f"{n} patches", token_shape(n)) for n in args.tokens]
    print(f"device {args.device}, {args.precision}, compile={args.compile}, "
          f"channels_last={args.channels_last}, batch {args.batch}, {torch.get_num_threads()} "
          f"threads; median of {args.rounds} rounds of >= {args.steps} steps and >= "
          f"{args.min_seconds} s")
    verdicts: list[tuple[str, bool]] = []
    for name, overrides in shapes:
        run_shape(name, shape_model_config(overrides), args, verdicts)
    missed = [what for what, met in verdicts if not met]
    print(f"\ntargets met: {len(verdicts) - len(missed)} of {len(verdicts)}"
          + "".join(f"\n  missed: {what}" for what in missed))
    if not args.no_startup:
        print()
        for name, seconds in startup_times().items():
            print(f"command {name}: {seconds:.1f} s")


if __name__ == "__main__":
    main()
