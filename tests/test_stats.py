"""The pure statistics of paired trials."""

import pytest

from harness import stats


def test_speedup_is_a_ratio_of_medians():
    assert stats.speedup([10, 12, 11], [2, 2.2, 5]) == pytest.approx(11 / 2.2)


def test_interval_brackets_the_estimate_and_is_deterministic():
    base, sub = [10.0, 10.4, 9.8, 10.1, 10.3], [2.0, 2.1, 1.9, 2.2, 2.05]
    lo, hi = stats.speedup_interval(base, sub)
    assert lo <= stats.speedup(base, sub) <= hi
    assert (lo, hi) == stats.speedup_interval(base, sub)


def test_identical_times_give_a_point_interval_at_one():
    assert stats.speedup_interval([3.0, 3.0, 3.0], [3.0, 3.0, 3.0]) == (1.0, 1.0)


def test_one_trial_gives_its_own_ratio():
    assert stats.speedup_interval([8.0], [2.0]) == (4.0, 4.0)


def test_unpaired_trials_are_refused():
    with pytest.raises(ValueError):
        stats.speedup_interval([1.0, 2.0], [1.0])


def test_x_human_is_a_quarter_of_the_speedup():
    assert stats.x_human(52.0) == 13.0
