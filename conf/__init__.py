"""The configs (Hydra's config root), installed with the package as ``nkat_lightning.conf``."""
