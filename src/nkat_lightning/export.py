"""Export a trained network (a run folder or a checkpoint; its EMA weights when it had EMA).

    python -m nkat_lightning.export logs/train/fashion_mnist/default --format onnx
    python -m nkat_lightning.export path/to/best.ckpt --format pt2 --out model.pt2

Writes ``<run folder>/export/model.onnx`` (``--out`` moves it) with a dynamic batch size, runs
it (onnxruntime, or ``torch.export``'s program) on the run's real test images and prints the
largest difference from PyTorch's output; above ``--tolerance`` it is an error. ONNX needs the
``export`` extra (``pip install 'nkat-lightning[export]'``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from nkat_lightning.cli import command

FORMATS = ("onnx", "pt2")


@command
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", type=Path, help="run folder or checkpoint file")
    parser.add_argument("--format", choices=FORMATS, default="onnx",
                        help="onnx (dynamic batch), or pt2: torch.export's program")
    parser.add_argument("--out", type=Path, help="the file to write")
    parser.add_argument("--check-images", type=int, default=256, metavar="N",
                        help="test images to compare the export with PyTorch on (default 256)")
    parser.add_argument("--tolerance", type=float, default=1e-4,
                        help="largest difference allowed from PyTorch's logits (default 1e-4)")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. data.root=/data")
    args = parser.parse_intermixed_args(argv)
    if args.check_images < 1:
        parser.error("--check-images must be at least 1")
    from nkat_lightning.training.export import export  # the training stack, after the arguments

    export(args.target, args.format, args.out, args.check_images, args.tolerance, args.overrides)


if __name__ == "__main__":
    main()
