"""Comparing groups of runs across seeds: runs are grouped by their overrides minus ``seed``;
each group gets mean ± std of its figures and its difference from a baseline group with
Welch's t-test (scipy). Failed, pruned and unfinished runs are listed, never averaged."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402
from scipy import stats  # noqa: E402

from nkat_lightning.errors import UserError  # noqa: E402
from nkat_lightning.training.results import RESULTS_FILE, write_json  # noqa: E402

FIGURES = ("val_acc_best", "test_acc", "test_tpe", "params", "wall_time_s")
COMPARED = ("val_acc_best", "test_acc")  # the differences from the baseline, with p-values
IGNORED_PREFIXES = ("seed=", "hydra.", "paths.", "hydra/", "+hydra.", "resume=", "tags=",
                    "group=")
OVERRIDES_FILE = Path(".hydra") / "overrides.yaml"


def job_order(path: Path) -> tuple:
    """Hydra's job folders ``<n>_<overrides>`` in job order, others by name."""
    head = path.name.split("_", 1)[0]
    return (int(head), path.name) if head.isdigit() else (math.inf, path.name)


def find_runs(folders: list[Path]) -> list[Path]:
    """Every run folder (one holding ``.hydra/overrides.yaml``) in or under ``folders``."""
    runs: list[Path] = []
    for folder in folders:
        if not folder.is_dir():
            raise UserError(f"{folder}: no such folder; give sweep or run folders")
        found = sorted({p.parent.parent for p in folder.rglob(str(OVERRIDES_FILE))},
                       key=job_order)
        if not found:
            raise UserError(f"{folder}: holds no run (no {OVERRIDES_FILE}); give the folder "
                            "of a sweep (-m) or of a run")
        runs += [run for run in found if run not in runs]
    return runs


def group_key(run: Path) -> str:
    """The run's overrides that define the experiment (not its seed, paths or Hydra's
    settings), in a stable order; ``(defaults)`` when none."""
    overrides = [str(o).lstrip("+") for o in OmegaConf.load(run / OVERRIDES_FILE)]
    kept = sorted(o for o in overrides if not o.startswith(IGNORED_PREFIXES))
    return " ".join(kept) or "(defaults)"


def run_status(run: Path) -> tuple[str, dict]:
    """("finished" | "pruned" | "unfinished", results) of one run folder."""
    path = run / RESULTS_FILE
    if not path.is_file():
        return "unfinished", {}
    results = json.loads(path.read_text())
    if results.get("pruned"):
        return "pruned", results
    if results.get("test_acc") is None or results.get("val_acc_best") is None:
        return "unfinished", results
    return "finished", results


def spread(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values) if values else None,
            "std": statistics.stdev(values) if len(values) > 1 else None, "values": values}


def welch(sample: list[float], baseline: list[float]) -> dict:
    """Difference of means and Welch's two-sided t-test p-value (None below 2 runs each, or
    when neither group varies)."""
    diff = statistics.fmean(sample) - statistics.fmean(baseline)
    p = None
    if len(sample) > 1 and len(baseline) > 1:
        value = stats.ttest_ind(sample, baseline, equal_var=False).pvalue
        p = None if math.isnan(value) else float(value)
    return {"diff": diff, "p": p}


def pick_baseline(keys: list[str], baseline: str | None) -> str:
    if baseline is None:
        return keys[0]
    wanted = set(baseline.split())
    exact = [k for k in keys if set(k.split()) == wanted]
    matches = exact or [k for k in keys if wanted <= set(k.split())]
    if len(matches) != 1:
        raise UserError(f"--baseline {baseline!r}: matches {len(matches)} groups; give the "
                        f"overrides of one of: {'; '.join(keys)}")
    return matches[0]


def compare(folders: list[Path], baseline: str | None = None) -> dict:
    """The comparison of the runs under ``folders`` (see the module docstring)."""
    groups: dict[str, list[dict]] = {}
    not_averaged = []
    for run in find_runs(folders):
        status, results = run_status(run)
        if status != "finished":
            not_averaged.append({"run": str(run), "group": group_key(run), "status": status})
            continue
        groups.setdefault(group_key(run), []).append({"run": str(run), **results})
    if not groups:
        raise UserError("no finished run to compare (each needs results.json with test and "
                        "validation figures)")
    shared = set.intersection(*(set(key.split()) for key in groups)) if len(groups) > 1 else set()
    labels = {key: " ".join(o for o in key.split() if o not in shared) or key for key in groups}
    base = pick_baseline(list(groups), baseline)
    table = []
    for key, runs in groups.items():
        figures = {name: spread([r[name] for r in runs if r.get(name) is not None])
                   for name in FIGURES}
        versus = None if key == base else {
            name: welch(figures[name]["values"], [r[name] for r in groups[base]])
            for name in COMPARED}
        table.append({"group": labels[key], "overrides": key, "n": len(runs),
                      "runs": [r["run"] for r in runs], "seeds": [r.get("seed") for r in runs],
                      **figures, "vs_baseline": versus})
    return {"baseline": labels[base], "shared": sorted(shared),
            "test": "Welch's two-sided t-test (scipy.stats.ttest_ind, equal_var=False) on the "
                    "per-seed values", "groups": table, "not_averaged": not_averaged}


def mean_std(figure: dict, scale: float = 1.0, digits: int = 4) -> str:
    if figure["mean"] is None:
        return "-"
    std = "" if figure["std"] is None else f" ± {figure['std'] * scale:.{digits}f}"
    return f"{figure['mean'] * scale:.{digits}f}{std}"


def difference(versus: dict | None, name: str) -> str:
    if versus is None:
        return "baseline"
    entry = versus[name]
    p = "n/a" if entry["p"] is None else f"{entry['p']:.3f}"
    return f"{entry['diff']:+.4f} (p = {p})"


def to_markdown(comparison: dict) -> str:
    shared = " ".join(comparison["shared"])
    lines = [f"Settings shared by every group: `{shared or '(none)'}`.", "",
             f"Baseline: `{comparison['baseline']}`. Differences: {comparison['test']}; a "
             "choice between groups reads the validation column, test is reported beside it.",
             "", "| group | n | best val acc | test acc | test TPE | params | wall time (s) | "
             "Δ best val acc (p) | Δ test acc (p) |", "|---|---|---|---|---|---|---|---|---|"]
    for g in comparison["groups"]:
        lines.append(
            f"| `{g['group']}` | {g['n']} | {mean_std(g['val_acc_best'])} | "
            f"{mean_std(g['test_acc'])} | {mean_std(g['test_tpe'], digits=3)} | "
            f"{mean_std(g['params'], digits=0)} | {mean_std(g['wall_time_s'], digits=1)} | "
            f"{difference(g['vs_baseline'], 'val_acc_best')} | "
            f"{difference(g['vs_baseline'], 'test_acc')} |")
    if comparison["not_averaged"]:
        lines += ["", "Not averaged:", ""]
        lines += [f"- {r['status']}: `{r['group']}` ({r['run']})"
                  for r in comparison["not_averaged"]]
    return "\n".join(lines) + "\n"


def plot(comparison: dict, out: Path) -> Path:
    """Accuracy per group with ±1 std error bars, and accuracy against parameters."""
    groups = comparison["groups"]
    fig, (bars, scatter) = plt.subplots(1, 2, figsize=(12, 4.2))
    positions = range(len(groups))
    for offset, name in ((-0.15, "val_acc_best"), (0.15, "test_acc")):
        bars.errorbar([p + offset for p in positions], [g[name]["mean"] for g in groups],
                      yerr=[g[name]["std"] or 0.0 for g in groups], fmt="o", capsize=4,
                      label=name)
        scatter.errorbar([g["params"]["mean"] for g in groups], [g[name]["mean"] for g in groups],
                         yerr=[g[name]["std"] or 0.0 for g in groups], fmt="o", capsize=4,
                         label=name)
    bars.set_xticks(list(positions), [g["group"] for g in groups], rotation=25, ha="right",
                    fontsize=7)
    bars.set_ylabel("accuracy (mean ± std over seeds)")
    scatter.set_xlabel("parameters")
    scatter.ticklabel_format(axis="x", style="plain", useOffset=False)  # groups a few apart
    for ax in (bars, scatter):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path = out / "compare.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_comparison(comparison: dict, out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "compare.json", "markdown": out / "compare.md"}
    write_json(paths["json"], comparison)
    paths["markdown"].write_text(to_markdown(comparison))
    paths["plot"] = plot(comparison, out)
    return paths
