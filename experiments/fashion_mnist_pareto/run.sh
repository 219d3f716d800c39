#!/usr/bin/env bash
# The Pareto study's long runs on the real Fashion-MNIST: the <= 100k and <= 500k points, side
# by side on the 2 cores (joblib launcher, one thread each), then compare over them.
# Run from the repository root: bash experiments/fashion_mnist_pareto/run.sh
set -euo pipefail
# The deep_full stem's points (second round):
#   EXPERIMENTS=fashion_mnist_pareto_full_98k,fashion_mnist_pareto_full_475k \
#   OUT=logs/study_pareto_full bash experiments/fashion_mnist_pareto/run.sh
out=${OUT:-logs/study_pareto}
experiments=${EXPERIMENTS:-fashion_mnist_pareto_96k,fashion_mnist_pareto_467k}
mkdir -p "$(dirname "$out")"
python -m nkat_lightning.train -m experiment=$experiments \
    hydra/launcher=joblib hydra.launcher.n_jobs=2 hydra.launcher.inner_max_num_threads=1 \
    trainer.enable_progress_bar=false hydra.sweep.dir=$out > $out.log 2>&1
python -m nkat_lightning.compare $out --out $out/compare
