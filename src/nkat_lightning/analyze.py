"""Look inside a trained run: attention roll-out, confusion matrix, per-class accuracy,
calibration (and how the attention temperature moves it), the learned NKAT parameters, and
attention entropy / sparsity per layer.

    python -m nkat_lightning.analyze logs/train/fashion_mnist/default --images 8
    python -m nkat_lightning.analyze path/to/best.ckpt --max-images 2000 data.root=/data

Writes PNG + ``analysis.json`` into ``<run folder>/analysis`` (``--out`` moves it), and logs
the images to Weights & Biases when the run was trained with ``logger=wandb``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from nkat_lightning.cli import command


@command
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", type=Path, help="run folder or checkpoint file")
    parser.add_argument("--images", type=int, default=8, help="test images to roll out")
    parser.add_argument("--max-images", type=int, default=None,
                        help="test images for the confusion matrix and calibration (all)")
    parser.add_argument("--out", type=Path, default=None, help="default <run folder>/analysis")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. data.root=/data")
    args = parser.parse_intermixed_args(argv)  # options may stand between positionals
    from nkat_lightning.analysis.figures import analyze  # the training stack, after the arguments

    analyze(args.target, args.overrides, args.images, args.max_images, args.out)


if __name__ == "__main__":
    main()
