"""Generated from the schema itself: for every field of every group, values that break its
type or range end the real command in one line that names the key, with exit code 2 and
before any work. A new field is covered the moment it is added to config/schema.py."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

import pytest

from helpers import run_hydra_main
from nkat_lightning import train as train_entry
from nkat_lightning.config.compose import compose_train_config
from nkat_lightning.config.schema import (
    GROUP_SCHEMAS,
    EMNISTDataConfig,
    RunConfig,
    Schema,
    field_bounds,
)

FREE_TEXT = ("name", "root", "_target_", "resume")  # any text is a value (checked elsewhere)


def plain_type(annotation):
    if get_origin(annotation) is not None and type(None) in get_args(annotation):
        return next(a for a in get_args(annotation) if a is not type(None))
    return annotation


def bad_values(schema: type[Schema], f: dataclasses.Field) -> list:
    """Values that break the field's type or range."""
    kind = plain_type(get_type_hints(schema)[f.name])
    bounds = field_bounds(f)
    values: list = []
    if kind is int or bounds.integer:
        values += ["two", 1.5]
    elif kind is float:
        values += ["two"]
    elif kind is bool:
        values += ["maybe"]
    elif get_origin(kind) is list:
        values += ["two"]
    if bounds.choices is not None:
        values.append("no_such_choice")
    step = 1 if kind is int or bounds.integer else 0.5
    if bounds.ge is not None:
        values.append(bounds.ge - step)
    if bounds.gt is not None:
        values.append(bounds.gt)
    if bounds.le is not None:
        values.append(bounds.le + step)
    if bounds.lt is not None:
        values.append(bounds.lt)
    return values


def cases(schema: type[Schema], prefix: str, extra: tuple[str, ...] = ()):
    for f in dataclasses.fields(schema):
        kind = plain_type(get_type_hints(schema)[f.name])
        if dataclasses.is_dataclass(kind):
            if f.default is None:  # an optional part, off by default: switch it on first
                fields = ",".join(f"{k}:{v}" for k, v in dataclasses.asdict(kind()).items())
                extra = (*extra, f"{prefix}{f.name}={{{fields}}}")
            yield from cases(kind, f"{prefix}{f.name}.", extra)
        elif (f.name not in FREE_TEXT and kind is not Any or field_bounds(f).choices
              or field_bounds(f).words):
            for value in bad_values(schema, f):
                yield pytest.param(f"{prefix}{f.name}", value, extra,
                                   id=f"{prefix}{f.name}={value}")


def all_cases():
    for group, schema in GROUP_SCHEMAS.items():
        yield from cases(schema, f"{group}.")
    own = {f.name for f in dataclasses.fields(GROUP_SCHEMAS["data"])}
    for case in cases(EMNISTDataConfig, "data.", ("data=emnist",)):
        if case.values[0].removeprefix("data.") not in own:
            yield case
    yield from cases(RunConfig, "")


CASES = list(all_cases())


def test_the_cases_cover_every_group_and_grow_with_the_schema():
    keys = {case.values[0] for case in CASES}
    assert {key.split(".")[0] for key in keys} >= {*GROUP_SCHEMAS, "seed"}
    assert len(CASES) > 100 and "aug.randaugment.m" in keys and "data.split" in keys


def test_every_schema_field_is_in_the_composed_config(tmp_path):
    for extra in ([], ["data=emnist"]):
        cfg = compose_train_config(extra, tmp_path)
        for group, schema in {**GROUP_SCHEMAS, "data": EMNISTDataConfig if extra else
                              GROUP_SCHEMAS["data"]}.items():
            assert {f.name for f in dataclasses.fields(schema)} == set(cfg[group])


@pytest.mark.parametrize(("key", "value", "extra"), CASES)
def test_a_bad_value_ends_in_one_line_naming_the_key(key, value, extra, monkeypatch, capsys,
                                                     tmp_path):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    run_dir = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        run_hydra_main(monkeypatch, train_entry.main, *extra, f"{key}={value}",
                       f"paths.data_dir={tmp_path / 'no-data'}", f"hydra.run.dir={run_dir}")
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: {key}: "), err
    assert not (tmp_path / "no-data").exists() and not (run_dir / "checkpoints").exists()


def same_value(default, stated: str) -> bool:
    if isinstance(default, bool) or default is None:
        return {True: "true", False: "false", None: "null"}[default] == stated.lower()
    if isinstance(default, int | float):
        return float(default) == float(stated)
    return str(default) == stated


def test_the_readme_model_table_states_the_default_jobs_values(tmp_path):
    """The table's defaults are what ``python -m nkat_lightning.train`` with no overrides uses."""
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    table = text[text.index("### Model keys"):].split("\n\n")[1]
    defaults = compose_train_config([], tmp_path).model
    checked = 0
    for keys, stated in re.findall(r"^\| ([^|]+) \| ([^|]+) \|", table, flags=re.MULTILINE):
        names = re.findall(r"`(\w+)`", keys)
        values = [v.strip(" `") for v in stated.split(",")]
        if not names or len(values) != len(names):
            continue  # a default that depends on the data set
        for name, value in zip(names, values, strict=True):
            if " " in value:
                continue  # a default that depends on the data set
            assert same_value(defaults[name], value), f"model.{name}: README says {value}"
            checked += 1
    assert checked >= 15
