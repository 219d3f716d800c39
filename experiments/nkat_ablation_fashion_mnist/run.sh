#!/usr/bin/env bash
# The NKAT ablation on the real Fashion-MNIST (Debian package dataset-fashion-mnist): every
# variant of conf/ablation/ over seeds 0, 1, 2 at the budget of
# conf/experiment/nkat_ablation_fashion_mnist.yaml, two single-threaded runs at a time on the
# 2 cores; then the comparison against the plain model.
set -euo pipefail
cd "$(dirname "$0")/../.."
SWEEP=logs/sweeps/nkat_ablation
.venv/bin/python -m nkat_lightning.train -m experiment=nkat_ablation_fashion_mnist \
    ablation=plain,temperature,learned_temperature,filters,filters_train_only,modulation,all \
    seed=0,1,2 hydra/launcher=joblib hydra.launcher.n_jobs=2 \
    hydra.launcher.inner_max_num_threads=1 trainer.enable_progress_bar=false \
    hydra.sweep.dir=$SWEEP
.venv/bin/python -m nkat_lightning.compare $SWEEP --baseline ablation=plain \
    --out experiments/nkat_ablation_fashion_mnist
