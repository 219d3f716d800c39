"""Training curves of a run (loss and accuracy per epoch), drawn from its CSV metrics.

    python -m nkat_lightning.curves logs/train/fashion_mnist/default   # writes <run folder>/curves.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

from nkat_lightning.cli import command


@command
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="run folder")
    args = parser.parse_args(argv)
    if not args.run_dir.is_dir():
        raise FileNotFoundError(2, "No such run folder", str(args.run_dir))
    from nkat_lightning.training.curves import plot_curves  # matplotlib, after the arguments

    out = plot_curves(args.run_dir)
    print(out or "no epoch metrics in csv/metrics.csv")


if __name__ == "__main__":
    main()
