"""Packages: everything under src/, plus conf/ installed as ``nkat_lightning.conf`` (each config
group a subpackage of it), so the configs ship inside the wheel while the repository keeps them
at its top. The metadata is in pyproject.toml, which cannot map one package to another folder
and still find the rest."""

from setuptools import find_namespace_packages, setup

CONFIGS = ["nkat_lightning.conf", *(f"nkat_lightning.conf.{group}"
                                    for group in find_namespace_packages("conf"))]

setup(
    packages=[*find_namespace_packages("src"), *CONFIGS],
    package_dir={"": "src", "nkat_lightning.conf": "conf"},
    # here, not in pyproject.toml, whose package-data would replace this whole mapping
    package_data={"nkat_lightning": ["models/csrc/*.cpp"], **{name: ["*.yaml"] for name in CONFIGS}},
)
