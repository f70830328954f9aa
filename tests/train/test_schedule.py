import math

import pytest

from unift.train.schedule import lr_multiplier


def test_warmup_then_cosine():
    total, warm = 100, 10
    assert lr_multiplier(0, total, warm) == pytest.approx(0.1)
    assert lr_multiplier(9, total, warm) == pytest.approx(1.0)
    assert lr_multiplier(10, total, warm) == pytest.approx(1.0)
    assert lr_multiplier(55, total, warm) == pytest.approx(0.5)
    assert lr_multiplier(100, total, warm) == pytest.approx(0.0, abs=1e-12)


def test_min_ratio_constant_linear():
    assert lr_multiplier(100, 100, 0, "cosine", 0.1) == pytest.approx(0.1)
    assert lr_multiplier(50, 100, 0, "constant") == 1.0
    assert lr_multiplier(25, 100, 0, "linear") == pytest.approx(0.75)
    assert lr_multiplier(25, 100, 0, "cosine") == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
