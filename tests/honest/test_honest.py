"""Every honest variant of the calibration (docs/calibration.md) is accepted on tiny, through the harness as
`loopbench check` runs it: careless but legal float32 (a float32 dot product for the gradient norm, reordered
sums, numba fastmath, a C kernel with FMA contraction), and a run that writes junk where the audit does not look.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.helpers import ATTACKS, PROJECT, assert_trains_the_task

HONEST = PROJECT / "tests" / "honest"
FOLDERS = ("torch_float32", "dot_norm", "reordered_sums", "numba_fastmath", "c_fma")


@pytest.mark.parametrize("name", FOLDERS)
def test_an_honest_variant_is_accepted(name, tiny_setting):
    assert_trains_the_task(HONEST / name, tiny_setting, seed=3)


def test_junk_where_the_audit_does_not_compare_is_accepted(tiny_setting, tmp_path: Path):
    # honest float32 training that writes huge values into the key third of every attn.b (params, m and v)
    # at every checkpoint: once that bought the normalisation, now the audit resets it and sees the honest run
    folder = tmp_path / "junk"
    shutil.copytree(ATTACKS / "low_precision_part", folder)
    (folder / "variant.toml").write_text('dtype = "bfloat16"\npart = "none"\ntrick = "key_bias"\nstart = 0\n')
    assert_trains_the_task(folder, tiny_setting, seed=3)
