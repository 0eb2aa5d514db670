"""Shared fixtures: one tiny setting per session (the GEMM ceiling is measured once)."""

import pytest

from harness import data
from harness.score import make_setting
from harness.spec import load_workload


@pytest.fixture(scope="session")
def tiny_setting():
    workload = load_workload("tiny")
    return make_setting(workload, workload.budget, data.load_corpus())
