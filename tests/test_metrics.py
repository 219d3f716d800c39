import math

import pytest

from nkat_lightning.training.metrics import global_scores, lambda_theory, tpe
from nkat_lightning.training.module import warmup_cosine_factor


def test_tpe_matches_seed_examples():
    assert tpe(0.95, lambda_theory(1_000_000)) == pytest.approx(3.156, abs=1e-3)
    assert tpe(0.95, lambda_theory(10_000)) == pytest.approx(219.8, abs=0.1)


def test_global_scores_by_hand():
    acc = {"a": 0.9, "b": 0.6}
    lam = {"a": 1.0, "b": 3.0}
    scores = global_scores(acc, lam)
    t_a, t_b = 0.9 / math.log10(2), 0.6 / math.log10(4)
    mean = (t_a + t_b) / 2
    std = abs(t_a - t_b) / 2
    assert scores["global_tpe"] == pytest.approx(0.75 / math.log10(3))
    assert scores["consistency"] == pytest.approx(1 - std / mean)
    assert scores["robustness"] == pytest.approx(min(t_a, t_b) / mean)
    assert scores["local_tpe"] == pytest.approx({"a": t_a, "b": t_b})


def test_warmup_then_cosine_to_floor():
    factors = [warmup_cosine_factor(s, 10, 110, 0.1) for s in range(111)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert all(a <= b for a, b in zip(factors[:9], factors[1:10], strict=True))
    assert factors[10] == pytest.approx(1.0)
    assert factors[60] == pytest.approx(0.55)
    assert factors[110] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(factors[10:-1], factors[11:], strict=True))
