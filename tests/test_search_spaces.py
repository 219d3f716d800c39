"""Every hparams_search file means what it says: each parameter's Optuna distribution matches
the range its comment states, and a selective trial trains exactly its composed search config
on every data set."""

import re
from pathlib import Path

import optuna
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra_plugins.hydra_optuna_sweeper._impl import create_optuna_distribution_from_override
from omegaconf import OmegaConf

from helpers import compose_train
from nkat_lightning.config.checks import validate_config
from nkat_lightning.config.compose import CONFIG_DIR
from nkat_lightning.config.schema import DATA_SETS
from nkat_lightning.search.selective import suite_overrides
from nkat_lightning.search.suite import overrides_for

SEARCHES = sorted(p.stem for p in (Path(CONFIG_DIR) / "hparams_search").glob("*.yaml"))
#: The range a comment states: {a, b}, lo..hi (integers, both included), [lo, hi] (+ log).
STATED = re.compile(r"^\s+([\w.]+):\s*\S.*#\s*(\{.*\}|-?\d+\.\.-?\d+|\[.*\](?:\s+log)?)\s*$")


def sweep_params(search: str) -> dict[str, str]:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR):
        cfg = compose("train", overrides=[f"hparams_search={search}"], return_hydra_config=True)
    return dict(OmegaConf.to_container(cfg.hydra.sweeper.params))


def distribution(key: str, value: str) -> optuna.distributions.BaseDistribution:
    """What Hydra's Optuna sweeper makes of ``key: value``."""
    return create_optuna_distribution_from_override(
        OverridesParser.create().parse_override(f"{key}={value}"))


def stated_distribution(stated: str) -> optuna.distributions.BaseDistribution:
    if stated.startswith("{"):
        return optuna.distributions.CategoricalDistribution(
            [item.strip() for item in stated[1:-1].split(",")])
    if ".." in stated:
        low, high = stated.split("..")
        return optuna.distributions.IntDistribution(int(low), int(high))
    bounds, _, log = stated.partition("]")
    low, high = (float(x) for x in bounds[1:].split(","))
    return optuna.distributions.FloatDistribution(low, high, log=log.strip() == "log")


def same(actual, stated) -> bool:
    if isinstance(stated, optuna.distributions.CategoricalDistribution):
        return isinstance(actual, type(stated)) and [str(c) for c in actual.choices] == list(
            stated.choices)
    return (type(actual) is type(stated) and (actual.low, actual.high, actual.log) ==
            (stated.low, stated.high, stated.log) and getattr(actual, "step", None) in (None, 1))


@pytest.mark.parametrize("search", SEARCHES)
def test_every_parameter_has_the_range_its_comment_states(search):
    text = (Path(CONFIG_DIR) / "hparams_search" / f"{search}.yaml").read_text().splitlines()
    stated = dict(m.groups() for m in map(STATED.match, text) if m)
    params = sweep_params(search)
    assert params, f"{search} searches nothing"
    missing = sorted(set(params) - set(stated))
    assert not missing, f"{search}: state the range of {missing} in a comment (e.g. # 5..9)"
    for key, value in params.items():
        actual = distribution(key, value)
        assert same(actual, stated_distribution(stated[key])), (
            f"{search}: {key}: {value} gives {actual}, the comment says {stated[key]}")


def test_the_seed_depth_range_reaches_nine():
    assert distribution("model.depth", sweep_params("stage2_selective")["model.depth"]) == \
        optuna.distributions.IntDistribution(5, 9)


def flat(config: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def resolved(overrides: list[str], tmp_path) -> dict:
    return flat(OmegaConf.to_container(compose_train(overrides, tmp_path), resolve=True))


def data_dependent_keys(tmp_path, stem: list[str]) -> set[str]:
    """Keys whose value the data set decides: they differ between the configs of the four data
    sets with the trial's conv stem (the default patch size depends on both)."""
    configs = [resolved([f"data={name}", *stem], tmp_path) for name in DATA_SETS]
    keys = set().union(*configs)
    return {key for key in keys if len({repr(c.get(key, "absent")) for c in configs}) > 1}


def sampled_trial(search: str, seed: int) -> list[str]:
    """The overrides of one trial, drawn by Optuna from the search file's own space."""
    space = {key: distribution(key, value) for key, value in sweep_params(search).items()}
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed)).ask(space)
    return [f"hparams_search={search}", *(f"{key}={value}" for key, value in trial.params.items())]


@pytest.mark.parametrize("seed", [0, 1])
def test_a_selective_trial_trains_its_composed_search_config_on_every_data_set(seed, tmp_path):
    task = sampled_trial("stage2_selective", seed)
    job = resolved(task, tmp_path)  # what Hydra composes for the trial's job
    assert job["model.num_heads"] == 8 and job["trainer.max_epochs"] == 10
    assert job["aug.randaugment.n"] == 2 and job["aug.cutout"] == 8  # the strong pack
    gate_data_set = job["selective.gate_data_set"]
    by_data = data_dependent_keys(tmp_path, [t for t in task if t.startswith("model.conv_stem=")])
    decided_by_the_suite = {"test_after_fit", "group"}
    for name in job["selective.data_sets"]:
        overrides = overrides_for(name, suite_overrides(task, gate_data_set))
        run_cfg = compose_train(overrides, tmp_path)  # the job's folder: paths compare equal
        validate_config(run_cfg)  # a valid run
        run = flat(OmegaConf.to_container(run_cfg, resolve=True))
        differ = {key for key in set(job) | set(run) if run.get(key, "absent") != job.get(key, "absent")}
        assert differ <= by_data | decided_by_the_suite, (name, sorted(differ - by_data))
        assert run["data.name"] == name
        sampled_patch = next(int(t.split("=")[1]) for t in task if t.startswith("model.patch_size="))
        if name == gate_data_set:
            assert run["model.patch_size"] == sampled_patch
