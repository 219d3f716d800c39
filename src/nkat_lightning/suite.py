"""Train and test one configuration on each data set in turn, then write the scoreboard.

    python -m nkat_lightning.suite [overrides] [--data-sets mnist,cifar10] [--out DIR]
    python -m nkat_lightning.suite model.embed_dim=96 cifar10:model.patch_size=4 emnist:data.split=letters

Overrides apply to every data set; ``<data set>:<override>`` applies to one. Each data set
trains in an ordinary run folder ``<out>/<data set>/run``; running the same command again skips
finished data sets and resumes an interrupted one from its last checkpoint. Exit code 1 when a
data set failed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nkat_lightning.cli import command
from nkat_lightning.config.compose import run_name
from nkat_lightning.config.schema import DATA_SETS


@command
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. model.depth=6")
    parser.add_argument("--data-sets", default=",".join(DATA_SETS),
                        help="comma-separated data sets (default: all four)")
    parser.add_argument("--out", type=Path, default=None,
                        help="suite folder (default: logs/suite/<overrides>)")
    args = parser.parse_intermixed_args(argv)
    out = args.out or Path("logs") / "suite" / run_name(",".join(args.overrides))
    from nkat_lightning.search.suite import run_suite  # the training stack, after the arguments

    board = run_suite(args.overrides, out, [d for d in args.data_sets.split(",") if d])
    sys.exit(0 if board["complete"] else 1)


if __name__ == "__main__":
    main()
