"""The seed's two-stage selective search, as a Hydra app for the Optuna sweeper:

    python -m nkat_lightning.selective -m hparams_search=stage2_selective

Each trial is a suite that trains the gate data set first; below the gate on its best
validation TPE the trial is FILTERED (Optuna records it PRUNED). See
``nkat_lightning.search.selective``.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from nkat_lightning.cli import command, job
from nkat_lightning.config.compose import CONFIG_DIR
from nkat_lightning.errors import ConfigError


@hydra.main(config_path=CONFIG_DIR, config_name="train")
@job
def selective_app(cfg: DictConfig) -> float:
    if not cfg.get("selective"):
        raise ConfigError("selective: the objective's settings are missing; add "
                          "hparams_search=stage2_selective")
    from nkat_lightning.search.selective import selective_objective  # the training stack

    return selective_objective(cfg)  # run_suite rejects unknown data sets


main = command(selective_app)

if __name__ == "__main__":
    main()
