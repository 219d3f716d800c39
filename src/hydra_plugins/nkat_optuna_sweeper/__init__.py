"""nkat-lightning's Hydra plugin: the Optuna sweeper with trial pruning."""
