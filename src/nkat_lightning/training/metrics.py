"""TPE (efficiency) and the cross-data-set scores of the seed notes.

TPE here is the efficiency metric, not Optuna's TPE sampler. Accuracies are fractions.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping

from torch import nn


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def lambda_theory(num_params: int) -> float:
    """lambda = number of parameters / 1e6."""
    return num_params / 1e6


def tpe(accuracy: float, lam: float) -> float:
    """Local TPE (efficiency) = accuracy / log10(1 + lambda)."""
    return accuracy / math.log10(1.0 + lam)


def global_scores(accuracies: Mapping[str, float], lambdas: Mapping[str, float]) -> dict:
    """Global TPE, Consistency and Robustness over data sets, as the seed notes define them.

    Global TPE = mean(acc) / log10(1 + mean(lambda)); Consistency = 1 - std(TPE)/mean(TPE)
    (population std); Robustness = min(TPE) / mean(TPE).
    """
    names = list(accuracies)
    local = [tpe(accuracies[n], lambdas[n]) for n in names]
    mean_local = statistics.fmean(local)
    return {
        "global_tpe": statistics.fmean(accuracies.values())
        / math.log10(1.0 + statistics.fmean(lambdas.values())),
        "consistency": 1.0 - statistics.pstdev(local) / mean_local,
        "robustness": min(local) / mean_local,
        "local_tpe": dict(zip(names, local, strict=True)),
    }
