"""Runs repeated at several seeds (segformer_edu.seeds, chapters 8 and 11)."""

import pytest

from segformer_edu.seeds import beats, gain, mean_sd, mean_sd_text, over_seeds


def test_mean_and_sample_spread():
    mean, sd = mean_sd([78.6, 79.8, 79.8])
    assert mean == pytest.approx(79.4)
    assert sd == pytest.approx(0.69282, abs=1e-5)  # sqrt(0.96 / 2), n - 1 in the denominator


def test_text_keeps_mean_and_spread_on_one_line():
    assert mean_sd_text([1.0, 2.0, 3.0]) == "2.0\N{NO-BREAK SPACE}±\N{NO-BREAK SPACE}1.0"
    assert mean_sd_text([48.63]) == "48.6"  # one seed: its value, no spread


def test_gain_and_its_standard_error():
    difference, error = gain([0.33, 0.34, 0.35], [0.28, 0.29, 0.30])
    assert difference == pytest.approx(0.05)
    assert error == pytest.approx((0.01**2 / 3 + 0.01**2 / 3) ** 0.5)


def test_a_gain_counts_only_beyond_twice_its_error():
    base = [0.28, 0.29, 0.30]
    assert beats([0.33, 0.34, 0.35], base)
    assert not beats([0.285, 0.295, 0.317], base)  # +0.6 points, the base alone spreads 1
    assert not beats([0.27, 0.28, 0.29], base)  # a loss is never a gain


def test_one_seed_has_no_spread():
    with pytest.raises(ValueError, match="at least two seeds"):
        beats([0.4], [0.28, 0.29])


def test_values_per_run_in_seed_order_and_a_diverged_run_counts_zero():
    rows = [{"name": "base", "seed": 0, "miou": 0.28}, {"name": "OHEM", "seed": 0, "miou": None},
            {"name": "base", "seed": 1, "miou": 0.29}, {"name": "OHEM", "seed": 1, "miou": 0.3}]
    assert over_seeds(rows) == {"base": [0.28, 0.29], "OHEM": [0.0, 0.3]}
