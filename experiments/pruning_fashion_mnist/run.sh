#!/usr/bin/env bash
# The same compact sweep on the real Fashion-MNIST, without and with the median pruner, one
# after the other: same sampler seed (1234), 10 trials, 4 epochs of 15,000 training images
# each (trainer.limit_train_batches=0.25; validation on the full 5,000 held-out images).
# Run from the repository root: bash experiments/pruning_fashion_mnist/run.sh
set -euo pipefail
out=${OUT:-logs/study_pruning}
# model/conv_stem=off aug=none: the default model and pack of the time (commit 903c63d), pinned.
common=(-m hparams_search=compact model/conv_stem=off aug=none hydra.sweeper.n_trials=10 trainer.max_epochs=4
        trainer.limit_train_batches=0.25 trainer.enable_progress_bar=false)
for pruner in none median; do
  start=$(date +%s)
  python -m nkat_lightning.train "${common[@]}" hydra/sweeper/pruner=$pruner \
      hydra.sweep.dir=$out/$pruner > $out-$pruner.log 2>&1
  echo "$pruner: sweep wall time $(( $(date +%s) - start )) s" | tee -a $out-times.txt
  python -m nkat_lightning.report $out/$pruner
done
