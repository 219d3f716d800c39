"""Train, then test the best checkpoint:

    python -m nkat_lightning.train [overrides]
    python -m nkat_lightning.train model.conv_stem=tiny data=cifar10
    python -m nkat_lightning.train -m hparams_search=compact data=mnist

In a multirun each job returns ``optimized_metric`` (a validation metric) to the sweeper.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from nkat_lightning.cli import command, job
from nkat_lightning.config.checks import validate_config
from nkat_lightning.config.compose import CONFIG_DIR, in_multirun


@hydra.main(config_path=CONFIG_DIR, config_name="train")
@job
def train_app(cfg: DictConfig) -> float | list[float] | None:
    """Train; in a multirun, return ``optimized_metric`` to the sweeper (a pruned run has told
    its trial PRUNED already, and the sweeper keeps that state). The config is checked before
    the training stack is imported, so a mistake in it is answered at once."""
    validate_config(cfg)
    from nkat_lightning.training.fit import objective, train
    from nkat_lightning.training.pruning import SweepTrial

    if not in_multirun():
        train(cfg)
        return None
    trial = SweepTrial.of_this_job()
    results = train(cfg, trial)
    if trial is not None and results.get("pruned"):
        trial.prune_run(results["pruned"])
    return objective(results, cfg.get("optimized_metric"))


main = command(train_app)

if __name__ == "__main__":
    main()
