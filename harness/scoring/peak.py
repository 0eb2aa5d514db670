"""The machine's float32 multiply-add peak under the budget: the physical limit no run's products can beat.

The GEMM rate (harness.scoring.machine) is what one library reaches; a tuned kernel may do better (on an
AMD EPYC the torch GEMM reached 218 GFLOP/s where the cores' FMA units peak at 265, and a native step ran its
products at over 240). The physical floor of a run is therefore its products at the FMA peak, measured by a
small C probe (fma_peak.c: independent FMA chains in registers) compiled with the system C compiler for the
widest vectors the CPU's flags name, and run at once on every core of the budget, one pinned process each.
Without a C compiler there is no probe, and the floor falls back to the GEMM rate.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from harness.contract.cores import budget_cpus

SOURCE = Path(__file__).with_name("fma_peak.c")
ITERATIONS = 20_000_000
"""About 0.05-0.1 s per repeat on a current core."""
REPEATS = 5


WIDEST = ((("avx512f",), ["-mavx512f", "-mfma", "-mavx2"]), (("avx2", "fma"), ["-mavx2", "-mfma"]))
"""The compiler options of the widest vectors, by the CPU flags they need (else plain SSE2)."""


def _march(flags: list[str]) -> list[str]:
    present = set(flags)
    return next((options for needed, options in WIDEST if present.issuperset(needed)), ["-msse2"])


def _pin(cpu: int) -> Callable[[], None]:
    def pin() -> None:
        os.sched_setaffinity(0, {cpu})

    return pin


def fma_peak_gflops(cores: int, flags: list[str]) -> float | None:
    """The summed best FMA rate of one pinned probe per core of the budget, all running at once; None without
    a C compiler (or if the probe cannot run)."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return None
    with tempfile.TemporaryDirectory(prefix="loopbench-peak-") as folder:
        binary = os.path.join(folder, "fma_peak")
        build = [compiler, "-O2", *_march(flags), str(SOURCE), "-o", binary]
        if subprocess.run(build, capture_output=True).returncode != 0:
            return None
        probes = [
            subprocess.Popen(
                [binary, str(ITERATIONS), str(REPEATS)], stdout=subprocess.PIPE, text=True, preexec_fn=_pin(cpu)
            )
            for cpu in budget_cpus(cores)
        ]
        rates = []
        for probe in probes:
            out, _ = probe.communicate(timeout=60)
            if probe.returncode != 0:
                return None
            rates.append(float(out.split()[0]))
    return round(sum(rates), 2)
