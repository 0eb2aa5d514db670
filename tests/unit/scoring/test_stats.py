"""The pure statistics of paired trials."""

import pytest

from harness.scoring import stats


def test_speedup_is_a_ratio_of_medians():
    assert stats.speedup([10, 12, 11], [2, 2.2, 5]) == pytest.approx(11 / 2.2)


def test_interval_brackets_the_estimate_and_is_deterministic():
    base, sub = [10.0, 10.4, 9.8, 10.1, 10.3], [2.0, 2.1, 1.9, 2.2, 2.05]
    lo, hi = stats.speedup_interval(base, sub)
    assert lo <= stats.speedup(base, sub) <= hi
    assert (lo, hi) == stats.speedup_interval(base, sub)


def test_identical_times_give_a_point_interval_at_one():
    assert stats.speedup_interval([3.0, 3.0, 3.0], [3.0, 3.0, 3.0]) == (1.0, 1.0)


def test_one_trial_has_no_interval():
    assert stats.speedup([8.0], [2.0]) == 4.0
    with pytest.raises(ValueError, match="at least 2 paired trials"):
        stats.speedup_interval([8.0], [2.0])


def test_unpaired_trials_are_refused():
    with pytest.raises(ValueError):
        stats.speedup_interval([1.0, 2.0], [1.0])


def test_x_human_is_a_quarter_of_the_speedup():
    assert stats.x_human(52.0) == 13.0


def test_trials_of_one_node_are_the_plain_ratio_of_medians():
    base, sub = [10.0, 10.4, 9.8, 10.1, 10.3], [2.0, 2.1, 1.9, 2.2, 2.05]
    one_node = ["host"] * len(base)
    assert stats.speedup(base, sub, one_node) == stats.speedup(base, sub)
    assert stats.speedup_interval(base, sub, one_node) == stats.speedup_interval(base, sub)


def test_a_slower_node_changes_nothing_because_trials_pair_within_their_node():
    base, sub = [10.0, 10.4, 9.8, 10.1, 10.3], [2.0, 2.1, 1.9, 2.2, 2.05]
    nodes = ["a", "a", "a", "b", "b"]
    slower_b = [t * (3.0 if n == "b" else 1.0) for t, n in zip(base, nodes, strict=True)]
    slower_b_sub = [t * (3.0 if n == "b" else 1.0) for t, n in zip(sub, nodes, strict=True)]
    assert stats.speedup(slower_b, slower_b_sub, nodes) == pytest.approx(stats.speedup(base, sub, nodes))
    assert stats.speedup_interval(slower_b, slower_b_sub, nodes) == pytest.approx(
        stats.speedup_interval(base, sub, nodes)
    )
    # pooling the times of both nodes would mix the machines' speeds into the ratio
    assert stats.speedup(slower_b, slower_b_sub) != pytest.approx(stats.speedup(base, sub))


def test_nodes_weigh_by_their_trials():
    # node a: 5x in one trial; node b: 2x in two trials -> (5 * 2 * 2) ** (1/3)
    assert stats.speedup([10.0, 4.0, 4.0], [2.0, 2.0, 2.0], ["a", "b", "b"]) == pytest.approx(20 ** (1 / 3))
    lo, hi = stats.speedup_interval([10.0, 4.0, 4.0], [2.0, 2.0, 2.0], ["a", "b", "b"])
    assert 2.0 <= lo <= 20 ** (1 / 3) <= hi <= 5.0
