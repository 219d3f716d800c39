"""The four-data-set scoreboard: per-data-set accuracy, lambda and local TPE, then Global TPE,
Consistency and Robustness against the seed's targets, as JSON, markdown and a plot."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from nkat_lightning.training.metrics import global_scores  # noqa: E402
from nkat_lightning.training.results import write_json  # noqa: E402

#: The seed notes' targets for the cross-data-set scores. lambda = parameters / 1e6 here (the
#: earlier code's definition); the seed's own targets imply lambda ~ 20 for its ~8M-parameter
#: model (log10(1 + lambda) ~ 1.32), so they are easier to reach with this lambda.
TARGETS = {"global_tpe": 0.70, "consistency": 0.80, "robustness": 0.75}
FILES = {"json": "scoreboard.json", "markdown": "scoreboard.md", "plot": "scoreboard.png"}
#: The two sets every figure is given for; selection (gate, objective) reads the first only.
SPLITS = {"validation": ("val_acc", "val_tpe"), "test": ("test_acc", "test_tpe")}
SELECTED_ON = "validation"


def split_scores(per_data_set: dict[str, dict], split: str) -> dict | None:
    """Global TPE, Consistency and Robustness over one split's accuracies (None when a data
    set has no figure for that split)."""
    acc_key = SPLITS[split][0]
    if any(row[acc_key] is None for row in per_data_set.values()):
        return None
    return global_scores({n: r[acc_key] for n, r in per_data_set.items()},
                         {n: r["lambda"] for n, r in per_data_set.items()})


def build_scoreboard(runs: dict[str, dict], data_sets: list[str], filtered: dict | None = None,
                     pruned: dict | None = None) -> dict:
    """``runs`` maps each data set to ``{"status": "ok", **results}``, ``{"status": "failed",
    "reason": ...}``, ``{"status": "pruned", **results}`` or, after a ``filtered`` gate or a
    pruned run, ``{"status": "skipped"}``. Every figure is given on validation (best epoch, what
    selection reads) and on test (reported beside it). The global scores are computed only
    when every data set finished: an average over fewer sets would not be the seed's score."""
    covered = [name for name in data_sets if runs[name]["status"] == "ok"]
    failed = {name: runs[name]["reason"] for name in data_sets if runs[name]["status"] == "failed"}
    skipped = [name for name in data_sets if runs[name]["status"] == "skipped"]
    per_data_set = {
        name: {
            "val_acc": runs[name]["val_acc_best"],
            "val_tpe": runs[name]["val_tpe_best"],
            "test_acc": runs[name]["test_acc"],
            "test_tpe": runs[name]["test_tpe"],
            "params": runs[name]["params"],
            "lambda": runs[name]["lambda"],
            "run_dir": runs[name].get("run_dir"),
        }
        for name in covered
    }
    scores = None
    if len(covered) == len(data_sets):
        by_split = {split: split_scores(per_data_set, split) for split in SPLITS}
        scores = {key: {split: values and values[key] for split, values in by_split.items()}
                  | {"target": target} for key, target in TARGETS.items()}
    return {"data_sets": data_sets, "covered": covered, "failed": failed, "skipped": skipped,
            "filtered": filtered, "pruned": pruned, "complete": scores is not None,
            "selected_on": SELECTED_ON, "per_data_set": per_data_set, "scores": scores}


def data_set_status(board: dict, name: str) -> str:
    """``ok``, ``failed``, ``pruned`` or ``skipped`` (after a FILTERED gate or a pruned run)."""
    if name in board["per_data_set"]:
        return "ok"
    if board.get("pruned") and board["pruned"]["data_set"] == name:
        return "pruned"
    return "skipped" if name in board["skipped"] else "failed"


def _figure(value, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _verdict(value, target: float) -> str:
    return "-" if value is None else f"{value:.3f} {'OK' if value >= target else 'NG'}"


def filtered_reason(filtered: dict) -> str:
    return (f"FILTERED: {filtered['data_set']} validation TPE {filtered['val_tpe']:.3f} < gate "
            f"{filtered['gate']:.2f}")


def pruned_reason(pruned: dict) -> str:
    return (f"PRUNED: {pruned['data_set']} stopped after epoch {pruned['epoch']} "
            f"({pruned['metric']} {pruned['value']:.4f})")


def verdict(board: dict) -> str:
    """One line on how the suite ended: complete, FILTERED, PRUNED or incomplete."""
    if board["filtered"]:
        return filtered_reason(board["filtered"])
    if board.get("pruned"):
        return pruned_reason(board["pruned"])
    if board["complete"]:
        return "complete"
    return f"incomplete: {', '.join(board['failed'])} failed"


def to_markdown(board: dict) -> str:
    lines = ["| data set | val acc | test acc | params | lambda | val TPE | test TPE |",
             "|---|---|---|---|---|---|---|"]
    for name in board["data_sets"]:
        row = board["per_data_set"].get(name)
        if row is None:
            lines.append(f"| {name} | {data_set_status(board, name)} | - | - | - | - | - |")
        else:
            lines.append(f"| {name} | {_figure(row['val_acc'])} | {_figure(row['test_acc'])} | "
                         f"{row['params']:,} | {row['lambda']:.4f} | {_figure(row['val_tpe'], 3)} "
                         f"| {_figure(row['test_tpe'], 3)} |")
    lines += ["", "val acc: the best epoch's validation accuracy; selection (gate, sweep objective) "
                  "reads validation only, test is reported beside it.", ""]
    if board["scores"] is None:
        lines.append(f"Global scores not computed: the scoreboard covers {len(board['covered'])} "
                     f"of {len(board['data_sets'])} data sets ({', '.join(board['covered']) or 'none'}).")
    else:
        names = board["data_sets"]
        lines += [f"Scores over {len(names)} data set(s): {', '.join(names)}.", "",
                  "| score | validation (selects) | test (reported) | target |", "|---|---|---|---|"]
        for key, score in board["scores"].items():
            lines.append(f"| {key} | {_verdict(score['validation'], score['target'])} | "
                         f"{_verdict(score['test'], score['target'])} | >= {score['target']:.2f} |")
    if board["filtered"] or board.get("pruned"):
        lines += ["", f"{verdict(board)}; the other data sets were not run."]
    for name, reason in board["failed"].items():
        lines += ["", f"{name} failed:", "", *(f"    {line}" for line in reason.splitlines())]
    return "\n".join(lines) + "\n"


def plot(board: dict, path: Path) -> None:
    """Accuracy against lambda per data set, over iso-lines of constant local TPE."""
    fig, ax = plt.subplots(figsize=(6, 4.5))
    rows = board["per_data_set"]
    lams = [r["lambda"] for r in rows.values()] or [0.5]
    accs = {name: r["test_acc"] if r["test_acc"] is not None else r["val_acc"]
            for name, r in rows.items()}
    tpe_of = {name: r["test_tpe"] if r["test_tpe"] is not None else r["val_tpe"]
              for name, r in rows.items()}
    lam_grid = np.geomspace(min(lams) / 3, max(lams) * 3, 200)
    tpes = list(tpe_of.values()) or [1.0]
    for level in np.unique(np.round(np.geomspace(min(tpes) / 2, max(tpes) * 2, 5), 1)):
        ax.plot(lam_grid, level * np.log10(1 + lam_grid), color="0.8", lw=0.8, zorder=0)
        ax.annotate(f"TPE {level:g}", (lam_grid[-1], min(level * np.log10(1 + lam_grid[-1]), 1.0)),
                    fontsize=7, color="0.5", ha="right", va="bottom")
    for name, row in rows.items():
        dot = ax.scatter(row["lambda"], accs[name], s=40, label=f"{name} (TPE {tpe_of[name]:.2f})")
        ax.scatter(row["lambda"], row["val_acc"], s=40, facecolors="none",
                   edgecolors=dot.get_facecolor())
    ax.set(xscale="log", ylim=(0, 1.02), xlabel="lambda = parameters / 1e6",
           ylabel="accuracy (filled: test, open: validation)",
           title="Accuracy against size, per data set")
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
