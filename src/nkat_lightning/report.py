"""Report on an Optuna sweep: the best trial(s), every trial, and plots.

    python -m nkat_lightning.report logs/train/multirun/<date>       # the folder holding optuna.db
    python -m nkat_lightning.report postgresql://host/db --study stage2_selective --out report/

Writes ``report.md`` and PNG plots into ``--out`` (default: the sweep folder, or
``./sweep_report`` for a URL).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from nkat_lightning.cli import command


@command
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", help="sweep folder (holding optuna.db) or storage URL")
    parser.add_argument("--study", default=None, help="study name (when the storage has several)")
    parser.add_argument("--out", type=Path, default=None, help="where report.md and the plots go")
    args = parser.parse_args(argv)
    from nkat_lightning.search.report import open_study, write_report  # optuna, after the args

    study = open_study(args.target, args.study)
    out = args.out or (Path("sweep_report") if "://" in args.target else Path(args.target))
    print(f"report: {write_report(study, out)}")


if __name__ == "__main__":
    main()
