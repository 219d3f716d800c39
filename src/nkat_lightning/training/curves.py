"""Training curves of a run (loss and accuracy per epoch), drawn from its CSV metrics."""

from __future__ import annotations

import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

CURVES_FILE = "curves.png"
PANELS = {"loss": ["train/loss_epoch", "val/loss"], "accuracy": ["train/acc", "val/acc"]}


def epoch_series(csv_dir: Path) -> dict[str, dict[int, float]]:
    """metric -> {epoch: value} over every metrics file of the run (a resumed run keeps the
    earlier ones as metrics.<n>.csv); later files win."""
    series: dict[str, dict[int, float]] = {}
    files = sorted(csv_dir.glob("metrics.*.csv"), key=lambda p: int(p.suffixes[0][1:]))
    for path in [*files, csv_dir / "metrics.csv"]:
        if not path.is_file():
            continue
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                for name in sum(PANELS.values(), []):
                    if row.get(name) and row.get("epoch"):
                        series.setdefault(name, {})[int(row["epoch"])] = float(row[name])
    return series


def plot_curves(run_dir: Path) -> Path | None:
    """Write ``curves.png`` in ``run_dir``; None when the run logged no epoch metrics."""
    series = epoch_series(run_dir / "csv")
    if not series:
        return None
    fig, axes = plt.subplots(1, len(PANELS), figsize=(10, 3.8))
    for ax, (title, names) in zip(axes, PANELS.items(), strict=True):
        for name in names:
            if name in series:
                epochs = sorted(series[name])
                ax.plot([e + 1 for e in epochs], [series[name][e] for e in epochs], "o-",
                        ms=3, label=name)
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(run_dir.name)
    fig.tight_layout()
    out = run_dir / CURVES_FILE
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
