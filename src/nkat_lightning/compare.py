"""Compare groups of runs across seeds: runs are grouped by their overrides minus ``seed``.

    python -m nkat_lightning.compare logs/sweeps/top_k --baseline "model.top_k=null"

Prints and writes ``compare.md``, ``compare.json`` and ``compare.png`` (into ``--out``, default
the first folder): per group n, mean ± std of best validation accuracy, test accuracy, TPE,
parameters and wall time, and each group's difference from the baseline group (the first one
unless ``--baseline`` names its overrides) with Welch's t-test.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from nkat_lightning.cli import command


@command
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", type=Path, nargs="+", help="sweep (-m) or run folders")
    parser.add_argument("--baseline", default=None,
                        help="the baseline group's overrides, e.g. 'model.top_k=null'")
    parser.add_argument("--out", type=Path, default=None, help="default: the first folder")
    args = parser.parse_intermixed_args(argv)
    from nkat_lightning.search.compare import compare, to_markdown, write_comparison  # after args

    comparison = compare(args.folders, args.baseline)
    print(to_markdown(comparison))
    paths = write_comparison(comparison, args.out or args.folders[0])
    print("compare: " + ", ".join(str(p) for p in paths.values()))


if __name__ == "__main__":
    main()
