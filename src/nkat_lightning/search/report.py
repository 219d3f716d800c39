"""Report on an Optuna sweep: the best trial(s), every trial, and plots.

    python -m nkat_lightning.report <sweep folder with optuna.db | storage URL> [--study NAME]

Writes ``report.md`` (trial counts, best trial(s), a table of every trial with its state,
value, time and parameters; filtered trials say FILTERED, pruned ones where they stopped) and
PNG plots (optimisation history, parameter importances, the Pareto front for multi-objective
studies) into ``--out``
(default: the sweep folder, or ``./sweep_report`` for a URL).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import optuna  # noqa: E402
from optuna.visualization import matplotlib as optuna_plots  # noqa: E402

from nkat_lightning.config.compose import sqlite_url  # noqa: E402
from nkat_lightning.errors import UserError  # noqa: E402

STUDY_FILE = "optuna.db"


def open_study(target: str, study_name: str | None = None) -> optuna.Study:
    """The study in a sweep folder's ``optuna.db`` or at a storage URL."""
    if "://" in target:
        url = target
    elif (Path(target) / STUDY_FILE).is_file():
        url = sqlite_url(str(Path(target) / STUDY_FILE))
    else:
        raise UserError(f"no {STUDY_FILE} in {target}; give the sweep folder or the study's "
                        "storage URL (hydra.sweeper.storage)")
    names = optuna.get_all_study_names(storage=url)
    if study_name is None and len(names) == 1:
        study_name = names[0]
    if study_name not in names:
        raise UserError(f"choose a study with --study: {', '.join(names) or 'none'} in {url}")
    return optuna.load_study(study_name=study_name, storage=url)


def trial_state(trial: optuna.trial.FrozenTrial) -> str:
    return "FILTERED" if "filtered" in trial.user_attrs else trial.state.name


def note(trial: optuna.trial.FrozenTrial) -> str:
    """Why a trial ended as it did: the gate's reason, the failure, or where it was pruned."""
    attrs = trial.user_attrs
    if "filtered" in attrs or "failed" in attrs:
        return attrs.get("filtered") or attrs["failed"]
    if "pruned_at_epoch" in attrs:
        where = f"{attrs['pruned_data_set']} " if "pruned_data_set" in attrs else ""
        return f"pruned after {where}epoch {attrs['pruned_at_epoch']}"
    return ""


def _format(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def to_markdown(study: optuna.Study, plots: dict[str, str]) -> str:
    trials = study.get_trials(deepcopy=False)
    states = [trial_state(t) for t in trials]
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    directions = ", ".join(d.name.lower() for d in study.directions)
    lines = [f"# Study {study.study_name}", "",
             f"{len(trials)} trials ({directions}): "
             + ", ".join(f"{states.count(s)} {s}" for s in sorted(set(states))), ""]
    if complete:
        best = study.best_trials if len(study.directions) > 1 else [study.best_trial]
        lines.append("Best trial(s):")
        for trial in best:
            params = ", ".join(f"{k}={_format(v)}" for k, v in trial.params.items())
            lines.append(f"- #{trial.number}: value {', '.join(map(_format, trial.values))}; {params}")
    else:
        lines.append("No trial completed yet: there is no best trial.")
    names = sorted({k for t in trials for k in t.params})
    seconds = [t.duration.total_seconds() for t in trials if t.duration is not None]
    lines += ["", f"Trial time: {sum(seconds):.0f} s over {len(seconds)} finished trials.",
              "", "| trial | state | value | time (s) | " + " | ".join(names) + " | note |",
              "|---" * (len(names) + 5) + "|"]
    for trial, state in zip(trials, states, strict=True):
        value = ", ".join(map(_format, trial.values)) if trial.values else "-"
        duration = "-" if trial.duration is None else f"{trial.duration.total_seconds():.0f}"
        params = " | ".join(_format(trial.params.get(k, "-")) for k in names)
        lines.append(f"| {trial.number} | {state} | {value} | {duration} | {params} | {note(trial)} |")
    lines.append("")
    for title, message in plots.items():
        lines.append(f"![{title}]({message})" if message.endswith(".png") else f"{title}: {message}")
    return "\n".join(lines) + "\n"


def save_plots(study: optuna.Study, out: Path) -> dict[str, str]:
    """Each plot's file name, or why it could not be drawn (too few trials)."""
    wanted = {"optimisation history": (optuna_plots.plot_optimization_history, "history.png"),
              "parameter importances": (optuna_plots.plot_param_importances, "importances.png")}
    if len(study.directions) > 1:
        wanted = {"Pareto front": (optuna_plots.plot_pareto_front, "pareto.png"),
                  "parameter importances": (
                      lambda s: optuna_plots.plot_param_importances(
                          s, target=lambda t: t.values[0], target_name="objective 0"),
                      "importances.png")}
    done = {}
    for title, (draw, name) in wanted.items():
        try:
            axes = draw(study)
        except (ValueError, RuntimeError) as error:  # e.g. fewer than two completed trials
            done[title] = f"not drawn ({error})"
            continue
        figure = axes.figure if hasattr(axes, "figure") else axes.flat[0].figure
        figure.tight_layout()
        figure.savefig(out / name, dpi=110)
        plt.close(figure)
        done[title] = name
    return done


def write_report(study: optuna.Study, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    report = out / "report.md"
    report.write_text(to_markdown(study, save_plots(study, out)))
    return report
