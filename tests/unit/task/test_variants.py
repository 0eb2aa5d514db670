"""Held-out variants: other sizes of the same model family, every one of the five changed, the cost kept near."""

from __future__ import annotations

import tomllib

import pytest

from harness.contract.spec import Workload, load_workload
from harness.scoring.flops import run_flops
from harness.task.variants import COST_RANGE, Sizes, draw_variants, reference_cost, workload_toml


@pytest.mark.parametrize("name", ["tiny", "standard", "large"])
def test_a_variant_changes_every_size_and_keeps_the_rest(name):
    headline = load_workload(name)
    base = Sizes.of(headline)
    variants = draw_variants(headline, 4, seed=7)
    assert len({Sizes.of(v) for v in variants}) == 4
    for variant in variants:
        sizes = Sizes.of(variant)
        assert all(getattr(sizes, k) != getattr(base, k) for k in "TCLHB"), sizes
        assert variant.model.d_model % variant.model.n_head == 0
        assert (variant.optim, variant.budget, variant.train.steps, variant.train.audit_every) == (
            headline.optim,
            headline.budget,
            headline.train.steps,
            headline.train.audit_every,
        )
        low, high = COST_RANGE
        assert low <= reference_cost(variant.task()) / reference_cost(headline.task()) <= high
        assert low <= run_flops(variant.task()) / run_flops(headline.task()) <= high
        assert variant.name == f"{name}-variant-{sizes.tag}"


def test_the_seed_decides_the_draw():
    tiny = load_workload("tiny")
    assert draw_variants(tiny, 3, seed=1) == draw_variants(tiny, 3, seed=1)
    draws = {tuple(Sizes.of(v) for v in draw_variants(tiny, 2, seed=s)) for s in range(8)}
    assert len(draws) > 4, "different seeds should mostly draw different variants"


def test_a_variant_file_reads_back_equal():
    for variant in draw_variants(load_workload("standard"), 2, seed=3, kind="public"):
        assert Workload.model_validate(tomllib.loads(workload_toml(variant))) == variant
        assert "-public-" in variant.name
