"""The catalogue of attacks: what an adversary optimising the score might submit, and how each is caught.

Every folder under attacks/ is a complete submission (submission.toml and train.py). Most are the honest
torch float32 port of tests/honest/ with one dishonest change, marked `# ATTACK` in the source; the
others go after the harness itself: its clock, its process and CPU watch, its files, the pipe to the
parent, and whatever might outlive a trial. Each test below runs one attack through
`harness.score.check` on the tiny workload, exactly as `loopbench check` would, and asserts the verdict,
the check that failed and a fragment of the reason, so a change in how an attack is caught shows up here.

A few attacks cannot be rejected because they gain nothing (the parent holds the clock, so patching
the worker's clocks cannot shorten the timed run); their tests assert that nothing was gained.

Five attacks of this catalogue went through the first version of the harness (signalling the scoring
process, System V shared memory outliving a trial, RAM hidden in /dev/shm, a header that crashed the
parent's reader, dropping weight decay on tiny at the old tolerance); each was closed in the harness
and its test now asserts the rejection.
"""

from __future__ import annotations

import ctypes
import json
import shutil
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import psutil
import pytest
import torch

from harness.contract.submission import load_submission
from harness.records.outputs import CheckOutput
from harness.scoring.results import check
from tests.helpers import ATTACKS, PROJECT

AUDIT = ("loss", "end-state")
"""The audit's two checks: which one trips first when a run trains differently is not the point."""


# ---------------------------------------------------------------- helpers


def run(name: str, setting, seed: int = 1) -> CheckOutput:
    return check(load_submission(ATTACKS / name), setting, seed=seed, progress=False)


def with_budget(setting, **changes):
    return replace(setting, budget=setting.budget.model_copy(update=changes))


def seconds(result: CheckOutput) -> float | None:
    return result.trials[0].submission.seconds


def assert_rejected(result: CheckOutput, checks: str | tuple[str, ...], *fragments: str) -> None:
    checks = (checks,) if isinstance(checks, str) else checks
    assert result.verdict == "rejected", f"accepted: {result.reason}"
    assert result.check in checks, f"rejected by {result.check!r}, not {' or '.join(checks)}: {result.reason}"
    for fragment in fragments:
        assert fragment in result.reason, f"{fragment!r} not in: {result.reason}"


def _alive(p: psutil.Process) -> bool:
    try:
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


@pytest.fixture(scope="module", autouse=True)
def one_audit_thread():
    """The audit replays every segment in float64 in this process: on a busy two-core machine, one thread
    is several times faster than two fighting over the cores with everything else."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def nothing_outlives_a_trial():
    """Whatever an attack started, the harness must have killed it by the time check returns."""
    yield
    alive = [p for p in psutil.Process().children(recursive=True) if _alive(p)]
    _, alive = psutil.wait_procs(alive, timeout=3)  # a process killed a moment ago may still be exiting
    alive = [p for p in alive if _alive(p)]
    assert not alive, f"processes left running after the trial: {alive}"


_libc = ctypes.CDLL(None, use_errno=True)
IPC_RMID = 0


def shm_exists(key: int) -> bool:
    """Whether a System V shared-memory segment with this key exists (in this, the host's, IPC namespace)."""
    return _libc.shmget(key, 0, 0) >= 0


def shm_remove(key: int) -> None:
    sid = _libc.shmget(key, 0, 0)
    if sid >= 0:
        _libc.shmctl(sid, IPC_RMID, None)


# ---------------------------------------------------------------- crashes, hangs, memory


def test_crash(tiny_setting):
    assert_rejected(run("crash", tiny_setting), "crash", "crashed during train", "ZeroDivisionError")


def test_crash_in_prepare(tiny_setting):
    assert_rejected(run("crash_in_prepare", tiny_setting), "crash", "crashed during prepare", "kernel build failed")


def test_hang(tiny_setting):
    assert_rejected(run("hang", with_budget(tiny_setting, timeout_s=2)), "timeout", "timed out after 2 s")


def test_a_crash_names_the_line_of_the_submission_that_raised(tiny_setting):
    result = run("crash", tiny_setting)
    assert_rejected(result, "crash", "ZeroDivisionError", "(at train.py, line 62, in train)")


def test_a_hang_reports_the_cpu_it_burned_and_its_exact_limit(tiny_setting):
    result = run("hang", with_budget(tiny_setting, timeout_s=2.5))
    assert_rejected(result, "timeout", "timed out after 2.5 s")
    assert result.trials[0].submission.cpu_seconds > 0


def test_memory_bomb(tiny_setting):
    result = run("memory_bomb", with_budget(tiny_setting, memory_mib=1024))
    # the kernel holds a run at its budget (a cgroup's limit); the polling watch sees it just over
    assert result.trials[0].submission.peak_memory_mib >= 1024
    # the kill ends the worker's stream too: the reason must still be the memory, never a "crash"
    assert_rejected(result, "memory", "memory budget exceeded")


# ---------------------------------------------------------------- protocol: values, names, shapes, types


def test_nan_loss(tiny_setting):
    assert_rejected(run("nan_loss", tiny_setting), "protocol", "loss of step 7 is not finite")


def test_nan_params(tiny_setting):
    assert_rejected(run("nan_params", tiny_setting), "protocol", "after step 9", "lnf.b", "not finite")


def test_wrong_keys(tiny_setting):
    assert_rejected(run("wrong_keys", tiny_setting), "protocol", "unexpected tensor 'ln_f.weight'")


def test_wrong_shapes(tiny_setting):
    assert_rejected(run("wrong_shapes", tiny_setting), "protocol", "shape (96, 32), expected (32, 96)")


def test_half_precision_checkpoint(tiny_setting):
    assert_rejected(run("half_precision_checkpoint", tiny_setting), "protocol", "dtype bfloat16")


def test_lazy_checkpoint(tiny_setting):
    assert_rejected(run("lazy_checkpoint", tiny_setting), "protocol", "Lazy, not a numpy array or a torch tensor")


# ---------------------------------------------------------------- protocol: steps and checkpoints


def test_missing_checkpoint(tiny_setting):
    assert_rejected(run("missing_checkpoint", tiny_setting), "protocol", "no checkpoint after step 9")


def test_missing_final_checkpoint(tiny_setting):
    assert_rejected(
        run("missing_final_checkpoint", tiny_setting), "protocol", "without a checkpoint after the last step 19"
    )


def test_missing_step(tiny_setting):
    assert_rejected(run("missing_step", tiny_setting), "protocol", "step 7 was never logged")


def test_repeated_step(tiny_setting):
    assert_rejected(run("repeated_step", tiny_setting), "protocol", "step 7 was logged twice")


def test_mutate_task(tiny_setting):
    # The task is the worker's own copy: rewriting it changes nothing the parent expects.
    assert_rejected(run("mutate_task", tiny_setting), "protocol", "without a checkpoint after the last step 19")


# ---------------------------------------------------------------- training that is not the task's


def test_fabricated_losses(tiny_setting):
    assert_rejected(run("fabricated_losses", tiny_setting), "loss", "segment 0")


def test_skipped_steps(tiny_setting):
    assert_rejected(run("skipped_steps", tiny_setting), AUDIT, "segment 2 (steps 2-2)")


def test_half_batches(tiny_setting):
    assert_rejected(run("half_batches", tiny_setting), AUDIT, "segment 0")


def test_lr_change(tiny_setting):
    assert_rejected(run("lr_change", tiny_setting), AUDIT, "segment 0")


@pytest.mark.parametrize("seed", [3, 4])
def test_no_weight_decay(tiny_setting, seed):
    # the smallest dishonest change in the tolerance calibration (docs/calibration.md): on tiny it moves
    # the end state by about 5e-3 of the segment's movement, over ten times the tolerance
    assert_rejected(run("no_weight_decay", tiny_setting, seed=seed), AUDIT)


def test_stale_optimiser_state(tiny_setting):
    assert_rejected(run("stale_optimiser_state", tiny_setting), AUDIT, "segment 1")  # v is first stale at step 1


def test_bf16_compute(tiny_setting):
    assert_rejected(run("bf16_compute", tiny_setting), AUDIT, "segment 0")


def test_no_training(tiny_setting):
    assert_rejected(run("no_training", tiny_setting), AUDIT, "segment 0")


def member(tmp_path: Path, family: str, **config) -> Path:
    """A member of an attack family: the family's folder with its variant.toml rewritten."""
    folder = tmp_path / family
    shutil.copytree(ATTACKS / family, folder)
    (folder / "variant.toml").write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in config.items()))
    return folder


def check_folder(folder: Path, setting, seed: int = 1) -> CheckOutput:
    return check(load_submission(folder), setting, seed=seed, progress=False)


def test_16_bit_backward_with_the_key_bias_trick(tiny_setting):
    # accepted once: huge values in the uncompared key third of attn.b made the replay move so far that every
    # normalised distance collapsed. The audit now leaves that third out of the movement too and resets it.
    assert_rejected(run("low_precision_part", tiny_setting), AUDIT)


@pytest.mark.parametrize(
    ("dtype", "part", "trick"),
    [
        ("float16", "mlp", "key_bias"),
        ("float16", "head", "key_bias"),
        ("bfloat16", "weight_grad", "key_bias"),
        ("float16", "attention", "none"),
        ("bfloat16", "backward", "m_bound"),
    ],
)
def test_16_bit_arithmetic_in_one_part(tiny_setting, tmp_path, dtype, part, trick):
    folder = member(tmp_path, "low_precision_part", dtype=dtype, part=part, trick=trick, start=1)
    assert_rejected(check_folder(folder, tiny_setting, seed=2), AUDIT)


def test_zeroed_second_moments_under_the_first(tiny_setting, tmp_path):
    # v set to 0 under a nonzero m: the replay would divide by eps; rejected before or when it is replayed from
    folder = member(tmp_path, "low_precision_part", dtype="bfloat16", part="none", trick="tiny_v", start=0)
    assert_rejected(check_folder(folder, tiny_setting), (*AUDIT, "protocol"))


def test_a_loss_bias_under_any_single_steps_tolerance(tiny_setting):
    # 1e-4 on every logged loss: at the per-step tolerance, so one step's float32 noise may trip that first;
    # the run's mean deviation (the loss bias, tolerance 5e-6) catches it 20x over either way
    assert_rejected(run("loss_bias", tiny_setting), "loss")


def test_the_sigmoid_gelu(tiny_setting):
    assert_rejected(run("sigmoid_gelu", tiny_setting), AUDIT, "segment 0")


@pytest.mark.parametrize("tensor", ["h1.proj.w", "h1.fcproj.w", "wpe"])
def test_no_weight_decay_on_one_tensor(tiny_setting, tmp_path, tensor):
    folder = member(tmp_path, "single_tensor", change="no_decay", tensor=tensor)
    assert_rejected(check_folder(folder, tiny_setting, seed=3), AUDIT)


@pytest.mark.parametrize("tensor", ["h1.proj.w", "lnf.g"])
def test_one_tensors_gradient_from_half_the_batch(tiny_setting, tmp_path, tensor):
    folder = member(tmp_path, "single_tensor", change="partial_batch", tensor=tensor)
    assert_rejected(check_folder(folder, tiny_setting, seed=3), AUDIT, "segment 0")


def test_first_segment_only(tiny_setting):
    # every segment is audited, not only the first
    assert_rejected(run("first_segment_only", tiny_setting), AUDIT, "segment 1")


# ---------------------------------------------------------------- the clock


def test_clock_patch(tiny_setting):
    result = run("clock_patch", tiny_setting)
    assert_rejected(result, "clock", "time.perf_counter")
    assert seconds(result) >= 1.0, "the parent's clock must count the second the attack slept"


def test_clock_patch_hidden(tiny_setting):
    # The worker exits right after its final checkpoint, before it could report the patched clocks.
    # The parent holds the clock, so the timed run still contains the second slept under half-speed
    # clocks (nothing gained), and a run whose train never returns is rejected.
    result = run("clock_patch_hidden", tiny_setting)
    assert seconds(result) is not None and seconds(result) >= 1.0
    assert_rejected(result, "protocol", "without train returning")


# ---------------------------------------------------------------- processes and CPUs


def _marked_processes(marker: str) -> list[int]:
    found = []
    for p in psutil.process_iter():
        try:
            if _alive(p) and (
                marker in " ".join(p.cmdline()) or marker in p.environ().get("LOOPBENCH_ATTACK_MARKER", "")
            ):
                found.append(p.pid)
        except psutil.Error:
            pass
    return found


def test_detached_burner(tiny_setting):
    marker = "loopbench-adversary-detached-burner"
    result = run("detached_burner", tiny_setting)
    assert_rejected(result, "processes", "left 1 process running", marker)
    assert not _marked_processes(marker), "the detached burner outlived the trial"


def test_widened_affinity(tiny_setting):
    # A one-core budget (the machine's measured GEMM rate is the two-core one: it only sets the
    # physical floor, which plays no part here).
    result = run("widened_affinity", with_budget(tiny_setting, cores=1))
    if not result.isolation.cgroup:  # the watch polls every thread's affinity
        assert_rejected(result, "cpu", "widened its CPU affinity")
        return
    # in a cgroup the kernel holds every thread to the budget's cpuset: the wider affinity never takes
    # effect, and the helper thread's matrix products come out of the one core the budget gives
    run_view = result.trials[0].submission
    assert run_view.cpu_seconds is not None and run_view.seconds is not None
    assert run_view.cpu_seconds <= 1.05 * run_view.seconds + 0.25, result.reason
    assert result.verdict == "accepted" or result.check == "cpu", result.reason


def test_fork_and_return(tiny_setting):
    # train returning is not the end of the clock: the final checkpoint is. The forked child is
    # killed with the trial (the autouse fixture checks that nothing survives).
    assert_rejected(run("fork_and_return", tiny_setting), "protocol", "without a checkpoint after the last step 19")


_CHECK_IN_A_CHILD = """
import json, sys
from harness.contract.spec import load_workload
from harness.contract.submission import load_submission
from harness.scoring import data
from harness.scoring.results import check
from harness.scoring.setting import Setting
workload = load_workload("tiny")
setting = Setting(workload, workload.budget, data.load_corpus(), json.loads(sys.argv[2]))
print(check(load_submission(sys.argv[1]), setting, seed=51, progress=False).model_dump_json())
"""


def test_kill_parent(tiny_setting):
    # The check runs in a child process of its own, so that a successful attack kills that, not pytest.
    # A killed scorer cannot remove its trial folder (and the data in it): the test removes this attack's.
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _CHECK_IN_A_CHILD, str(ATTACKS / "kill_parent"), json.dumps(tiny_setting.machine)],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=PROJECT,
        )
    finally:
        for manifest in Path(tempfile.gettempdir()).glob("loopbench-trial-*/submission/submission.toml"):
            if 'name = "kill-parent"' in manifest.read_text(errors="replace"):
                shutil.rmtree(manifest.parent.parent, ignore_errors=True)
    assert proc.returncode == 0, f"the scoring process died (exit status {proc.returncode})"
    assert_rejected(CheckOutput.model_validate_json(proc.stdout.splitlines()[-1]), "crash")


# ---------------------------------------------------------------- the pipe to the parent


def test_forged_final_checkpoint(tiny_setting):
    assert_rejected(run("forged_final_checkpoint", tiny_setting), "protocol", "after the final checkpoint")


def test_garbage_frames(tiny_setting):
    assert_rejected(run("garbage_frames", tiny_setting), "protocol", "not a message")


def test_malformed_header(tiny_setting):
    assert_rejected(run("malformed_header", with_budget(tiny_setting, timeout_s=2)), "protocol")


# ---------------------------------------------------------------- the parent's files and data


def test_harness_tamper(tiny_setting):
    protected = [PROJECT / "harness" / "judge" / "tolerances.py", PROJECT / "reference_loop" / "train.py"]
    before = {path: path.read_bytes() for path in protected}
    try:
        result = run("harness_tamper", tiny_setting)
        changed = [str(path) for path in protected if path.read_bytes() != before[path]]
    finally:
        for path, content in before.items():
            if path.read_bytes() != content:
                path.write_bytes(content)
    assert not changed, f"the worker rewrote {changed}"
    assert_rejected(result, AUDIT, "segment 0")


def test_data_snoop(tiny_setting):
    # The probe raises if what it found before the clock was the trial's data. The data exist only
    # once the clock runs, so it finds nothing and trains honestly: nothing gained.
    result = run("data_snoop", tiny_setting, seed=41)  # a seed no other attack uses
    assert result.verdict == "accepted", result.reason


# ---------------------------------------------------------------- what outlives a trial

CACHE_KEY = 0x4C425243  # the attacks' System V keys, as in their train.py
SHARED_SEED_KEY = 0x4C425353
CACHE_NAME = "loopbench-replay-cache.npz"


def test_cache_replay(tiny_setting):
    """Two trials on two seeds: no trial may be accepted with results replayed from another."""
    files = [Path("/tmp") / CACHE_NAME, Path("/dev/shm") / CACHE_NAME, ATTACKS / "cache_replay" / CACHE_NAME]

    def clean():
        shm_remove(CACHE_KEY)
        for f in files:
            f.unlink(missing_ok=True)

    clean()
    try:
        first = run("cache_replay", tiny_setting, seed=21)
        assert first.verdict == "accepted", f"with no cache it trains honestly: {first.reason}"
        left = [str(f) for f in files if f.exists()] + (["System V shared memory"] if shm_exists(CACHE_KEY) else [])
        second = run("cache_replay", tiny_setting, seed=22)
    finally:
        clean()
    if left:  # the attack found its cache and replayed the first trial's run: the audit must see it
        assert_rejected(second, AUDIT, "segment 0")
    else:  # it found nothing, so it trained honestly
        assert second.verdict == "accepted", second.reason


def test_shared_seed_replay(tiny_setting):
    shm_remove(SHARED_SEED_KEY)
    try:
        first = run("shared_seed_replay", tiny_setting, seed=31)
        assert first.verdict == "accepted", first.reason
        left_behind = shm_exists(SHARED_SEED_KEY)
        second = run("shared_seed_replay", tiny_setting, seed=31)
    finally:
        shm_remove(SHARED_SEED_KEY)
    assert not left_behind, (
        f"the first trial left a shared-memory segment; the second replayed it: {second.verdict} "
        f"in {seconds(second)} s against {seconds(first)} s for the honest run"
    )


def test_tmpfs_memory(tiny_setting):
    assert_rejected(run("tmpfs_memory", with_budget(tiny_setting, memory_mib=1024)), "memory", "memory budget exceeded")
