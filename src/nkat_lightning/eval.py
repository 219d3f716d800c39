"""Evaluate a finished run or a checkpoint with the config saved with it.

    python -m nkat_lightning.eval logs/train/fashion_mnist/default
    python -m nkat_lightning.eval path/to/last.ckpt --split val data.root=/data

Prints accuracy, loss and TPE and writes ``eval_<split>.json`` into the run folder.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from nkat_lightning.cli import command


@command
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", type=Path, help="run folder or checkpoint file")
    parser.add_argument("--split", choices=["test", "val"], default="test")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. data.root=/data")
    args = parser.parse_intermixed_args(argv)  # options may stand between positionals
    from nkat_lightning.training.evaluate import evaluate  # the training stack, after the arguments

    evaluate(args.target, args.split, args.overrides)


if __name__ == "__main__":
    main()
