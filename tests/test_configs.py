import dataclasses
import inspect
from pathlib import Path

import lightning as L
import pytest
from omegaconf import OmegaConf

from helpers import compose_train
from nkat_lightning.config.checks import validate_config
from nkat_lightning.config.compose import CONFIG_DIR, run_name
from nkat_lightning.config.schema import (
    DATA_SETS,
    AugConfig,
    DataConfig,
    OptimConfig,
    RunConfig,
)
from nkat_lightning.errors import ConfigError
from nkat_lightning.models import ModelConfig, NKATViT

#: Every config group a user can pick from (Hydra's own groups under hydra/ aside).
GROUPS = sorted(str(d.relative_to(CONFIG_DIR)) for d in Path(CONFIG_DIR).rglob("*")
                if d.is_dir() and any(d.glob("*.yaml"))
                and d.relative_to(CONFIG_DIR).parts[0] != "hydra")


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONFIG_DIR) / group).glob("*.yaml"))


@pytest.mark.parametrize(("group", "option"),
                         [(g, o) for g in GROUPS for o in options(g)])
def test_every_option_of_every_group_composes_and_validates(group, option, tmp_path):
    cfg = compose_train([f"{group}={option}"], tmp_path)
    resolved = validate_config(cfg)
    assert resolved["model"]["num_classes"] == resolved["data"]["num_classes"]


def test_every_group_has_options():
    assert all(options(group) for group in GROUPS)


@pytest.mark.parametrize("data", options("data"))
@pytest.mark.parametrize("stem", ["off", "tiny", "small"])
def test_every_data_set_and_stem_builds_with_default_patch(data, stem, tmp_path):
    cfg = compose_train([f"data={data}", f"model.conv_stem={stem}"], tmp_path)
    model_cfg = validate_config(cfg)["model"]
    assert model_cfg["conv_stem"] == stem
    model = NKATViT(ModelConfig.from_dict({**model_cfg, "embed_dim": 16, "depth": 1,
                                           "num_heads": 2}))
    assert model.patch_embed.num_patches >= 4


def test_group_and_value_override_of_conv_stem_agree(tmp_path):
    by_group = validate_config(compose_train(["model/conv_stem=tiny", "data=cifar10"], tmp_path))
    by_value = validate_config(compose_train(["model.conv_stem=tiny", "data=cifar10"], tmp_path))
    assert by_group["model"] == by_value["model"]
    assert by_value["model"]["patch_size"] == 2


def test_bad_patch_size_fails_at_config_time_in_one_line(tmp_path):
    cfg = compose_train(["model.conv_stem=tiny", "data=mnist", "model.patch_size=2"], tmp_path)
    with pytest.raises(ConfigError) as info:
        validate_config(cfg)
    assert "\n" not in str(info.value) and "28-px" in str(info.value)


@pytest.mark.parametrize(("override", "key"), [
    ("optim.lr=0", "optim.lr"),
    ("data.batch_size=0", "data.batch_size"),
    ("model.embed_dim=30", "model.embed_dim"),
    ("model.top_p=1.5", "model.top_p"),
    ("model.top_k=0", "model.top_k"),
    ("model.dropout_attn=-0.1", "model.dropout_attn"),
    ("model.filter_mode=sometimes", "model.filter_mode"),
    ("model.temperature=0", "model.temperature"),
])
def test_bad_values_name_key_and_value(override, key, tmp_path):
    with pytest.raises(ConfigError, match=key):
        validate_config(compose_train([override], tmp_path))


def test_unknown_emnist_split_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="data.split: 'nope' is out of range"):
        validate_config(compose_train(["data=emnist", "data.split=nope"], tmp_path))


@pytest.mark.parametrize(("split", "classes"), [("letters", 26), ("balanced", 47)])
def test_emnist_head_is_sized_from_split(split, classes, tmp_path):
    resolved = validate_config(compose_train(["data=emnist", f"data.split={split}"], tmp_path))
    assert resolved["model"]["num_classes"] == classes


def test_every_trainer_argument_is_reachable_without_plus():
    listed = set(OmegaConf.load(Path(CONFIG_DIR) / "trainer" / "default.yaml"))
    wanted = set(inspect.signature(L.Trainer.__init__).parameters) - {
        "self", "logger", "callbacks"}
    assert wanted <= listed, f"missing in conf/trainer/default.yaml: {sorted(wanted - listed)}"


def test_gpu_and_precision_are_config_only(tmp_path):
    cfg = compose_train(["trainer=gpu", "trainer.precision=bf16-mixed"], tmp_path)
    assert cfg.trainer.accelerator == "gpu" and cfg.trainer.precision == "bf16-mixed"


def test_seed_zero_is_kept(tmp_path):
    assert validate_config(compose_train(["seed=0"], tmp_path))["seed"] == 0


def test_run_name_is_stable_and_path_safe():
    assert run_name("") == "default"
    assert run_name("a=1,b=x/y") == "a=1,b=x_y"
    long = ",".join(f"k{i}=v" for i in range(60))
    assert run_name(long) == run_name(long) and len(run_name(long)) <= 100


def test_the_default_job_is_the_schemas_defaults(tmp_path):
    """One source per setting: the default job composes to the dataclasses' defaults, so the
    Python API (``ModelConfig()``, ``NKATLitModule()``) is the CLI's default job. The data
    group's facts and its offline folders are the data set's own."""
    resolved = validate_config(compose_train([], tmp_path))
    assert ModelConfig.from_dict(resolved["model"]) == ModelConfig()
    assert OptimConfig.from_dict(resolved["optim"]) == OptimConfig()
    assert AugConfig.from_dict(resolved["aug"]) == AugConfig()
    assert RunConfig.of(resolved) == RunConfig()
    loading = {f.name: f.default for f in dataclasses.fields(DataConfig)
               if f.default is not dataclasses.MISSING and f.default != "???"}
    assert {name: resolved["data"][name] for name in loading} == loading


@pytest.mark.parametrize("data", DATA_SETS)
def test_no_data_set_repeats_a_loading_default(data):
    """A data set's YAML writes a loading setting only where it differs from the schema."""
    written = OmegaConf.load(Path(CONFIG_DIR) / "data" / f"{data}.yaml")
    defaults = {f.name: f.default for f in dataclasses.fields(DataConfig)
                if f.default is not dataclasses.MISSING and f.default != "???"}
    assert not [name for name, value in defaults.items() if written.get(name) == value]
