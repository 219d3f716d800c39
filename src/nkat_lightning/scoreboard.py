"""The four-data-set scoreboard: per-data-set accuracy, lambda and local TPE, then Global TPE,
Consistency and Robustness against the seed's targets, as JSON, markdown and a plot."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from nkat_lightning.metrics import global_scores  # noqa: E402
from nkat_lightning.runner import write_json  # noqa: E402

#: The seed notes' targets for the cross-data-set scores.
TARGETS = {"global_tpe": 0.70, "consistency": 0.80, "robustness": 0.75}
FILES = {"json": "scoreboard.json", "markdown": "scoreboard.md", "plot": "scoreboard.png"}


def build_scoreboard(runs: dict[str, dict], data_sets: list[str], filtered: dict | None = None) -> dict:
    """``runs`` maps each data set to ``{"status": "ok", **results}``, ``{"status": "failed",
    "reason": ...}`` or, after a ``filtered`` gate, ``{"status": "skipped"}``. The global scores
    are computed only when every data set finished: an average over fewer sets would not be
    the score the seed defines."""
    covered = [name for name in data_sets if runs[name]["status"] == "ok"]
    failed = {name: runs[name]["reason"] for name in data_sets if runs[name]["status"] == "failed"}
    skipped = [name for name in data_sets if runs[name]["status"] == "skipped"]
    per_data_set = {
        name: {
            "acc": runs[name]["test_acc"],
            "params": runs[name]["params"],
            "lambda": runs[name]["lambda"],
            "tpe": runs[name]["test_tpe"],
            "run_dir": runs[name].get("run_dir"),
        }
        for name in covered
    }
    scores = None
    if len(covered) == len(data_sets):
        values = global_scores({n: r["acc"] for n, r in per_data_set.items()},
                               {n: r["lambda"] for n, r in per_data_set.items()})
        scores = {key: {"value": values[key], "target": target, "ok": values[key] >= target}
                  for key, target in TARGETS.items()}
    return {"data_sets": data_sets, "covered": covered, "failed": failed, "skipped": skipped,
            "filtered": filtered, "complete": scores is not None, "per_data_set": per_data_set,
            "scores": scores}


def data_set_status(board: dict, name: str) -> str:
    """``ok``, ``failed`` or ``skipped`` (after a FILTERED gate)."""
    if name in board["per_data_set"]:
        return "ok"
    return "skipped" if name in board["skipped"] else "failed"


def to_markdown(board: dict) -> str:
    lines = ["| data set | test acc | params | lambda | local TPE |", "|---|---|---|---|---|"]
    for name in board["data_sets"]:
        row = board["per_data_set"].get(name)
        if row is None:
            lines.append(f"| {name} | {data_set_status(board, name)} | - | - | - |")
        else:
            lines.append(f"| {name} | {row['acc']:.4f} | {row['params']:,} | {row['lambda']:.4f} "
                         f"| {row['tpe']:.3f} |")
    lines.append("")
    if board["scores"] is None:
        lines.append(f"Global scores not computed: the scoreboard covers {len(board['covered'])} "
                     f"of {len(board['data_sets'])} data sets ({', '.join(board['covered']) or 'none'}).")
    else:
        names = board["data_sets"]
        lines += [f"Scores over {len(names)} data set(s): {', '.join(names)}.", "",
                  "| score | value | target | |", "|---|---|---|---|"]
        for key, score in board["scores"].items():
            verdict = "OK" if score["ok"] else "NG"
            lines.append(f"| {key} | {score['value']:.3f} | >= {score['target']:.2f} | {verdict} |")
    if board["filtered"]:
        gate = board["filtered"]
        lines += ["", f"FILTERED: {gate['data_set']} local TPE {gate['local_tpe']:.3f} < gate "
                      f"{gate['gate']:.2f}; the other data sets were not run."]
    for name, reason in board["failed"].items():
        lines += ["", f"{name} failed:", "", *(f"    {line}" for line in reason.splitlines())]
    return "\n".join(lines) + "\n"


def plot(board: dict, path: Path) -> None:
    """Accuracy against lambda per data set, over iso-lines of constant local TPE."""
    fig, ax = plt.subplots(figsize=(6, 4.5))
    rows = board["per_data_set"]
    lams = [r["lambda"] for r in rows.values()] or [0.5]
    lam_grid = np.geomspace(min(lams) / 3, max(lams) * 3, 200)
    tpes = [r["tpe"] for r in rows.values()] or [1.0]
    for level in np.unique(np.round(np.geomspace(min(tpes) / 2, max(tpes) * 2, 5), 1)):
        ax.plot(lam_grid, level * np.log10(1 + lam_grid), color="0.8", lw=0.8, zorder=0)
        ax.annotate(f"TPE {level:g}", (lam_grid[-1], min(level * np.log10(1 + lam_grid[-1]), 1.0)),
                    fontsize=7, color="0.5", ha="right", va="bottom")
    for name, row in rows.items():
        ax.scatter(row["lambda"], row["acc"], s=40, label=f"{name} (TPE {row['tpe']:.2f})")
    ax.set(xscale="log", ylim=(0, 1.02), xlabel="lambda = parameters / 1e6",
           ylabel="test accuracy", title="Accuracy against size, per data set")
    if board["failed"]:
        ax.text(0.01, 0.01, "failed: " + ", ".join(board["failed"]), transform=ax.transAxes,
                fontsize=8, color="tab:red")
    if rows:
        ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_scoreboard(board: dict, out_dir: Path) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {kind: out_dir / name for kind, name in FILES.items()}
    write_json(paths["json"], board)
    paths["markdown"].write_text(to_markdown(board))
    plot(board, paths["plot"])
    return paths
