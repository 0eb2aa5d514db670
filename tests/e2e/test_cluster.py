"""Scoring on a Ray cluster, on simulated nodes of this machine: the verdicts of one machine, the node of every
trial named, a node lost mid-trial costing that attempt only, and plain errors for a cluster that cannot serve."""

import importlib.util
import json
import platform
import shutil
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import pytest

from harness.contract.submission import load_submission
from harness.errors import LoopbenchError
from harness.records.store import load_records
from harness.scoring.cluster import node_name, pack, unpacked
from harness.scoring.results import score
from tests.helpers import ATTACKS, HONEST, PROJECT, assert_one_line_error, invoke

ROOT = PROJECT
DISHONEST = ATTACKS / "lr_change"
CRASH = ATTACKS / "crash"
NODE = {
    "num_cpus": 2,
    "resources": {"loopbench_node": 1},
    "object_store_memory": 80 * 2**20,
    "include_dashboard": False,
}
"""One simulated node: the tiny budget's 2 cores, the resource that marks a node able to time, a small object store."""

needs_ray = pytest.mark.skipif(
    importlib.util.find_spec("ray") is None,
    reason="Ray is not installed: pip install -e '.[ray]' (the dev extra includes it)",
)


# ------------------------------------------------------------------ without a cluster


def test_the_local_executor_never_imports_ray():
    code = (
        "import sys\nfrom harness.cli import app\nfrom harness.scoring.executors import open_executor\n"
        "with open_executor('local') as ex: pass\nprint('ray' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "False"


def test_a_packed_submission_unpacks_to_the_same_files():
    sub = load_submission(HONEST)
    with unpacked(pack(sub)) as there:
        assert there.path != sub.path and there.name == sub.name
        assert there.file_hashes() == sub.file_hashes()
        folder = there.path
    assert not folder.exists()


def test_an_address_without_the_ray_executor_is_one_line():
    assert_one_line_error(
        invoke("score", HONEST, "--workload", "tiny", "--address", "127.0.0.1:6379"), "--executor ray"
    )


@needs_ray
@pytest.mark.parametrize("address, fragment", [("not an address", "HOST:PORT"), ("127.0.0.1:1", "nothing answers")])
def test_a_bad_address_is_one_line(address, fragment):
    assert_one_line_error(invoke("check", HONEST, "--executor", "ray", "--address", address), fragment)


@needs_ray
def test_check_on_a_local_ray_instance_names_this_host():
    result = invoke("check", HONEST, "--executor", "ray", "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["verdict"] == "accepted" and out["ceiling_fraction"] > 0
    [trial] = out["trials"]
    assert trial["node"].startswith(platform.node() + "/") and trial["retries"] == []


# ------------------------------------------------------------------ two simulated nodes


@pytest.fixture(scope="module")
def cluster(scored_results):
    """Two nodes (the head and one more), each able to time one trial at a time; the test of a lost node
    removes the second.

    It depends on the local records (scored_results) being made first: a local trial kills every process of
    the process that runs it, and this cluster's processes are children of the test process.
    """
    from ray.cluster_utils import Cluster

    with pytest.MonkeyPatch.context() as env:
        env.setenv("RAY_USAGE_STATS_ENABLED", "0")
        nodes = Cluster(initialize_head=True, head_node_args=NODE)
        nodes.add_node(**NODE)
        nodes.wait_for_nodes()
        yield nodes
        nodes.shutdown()


def names(cluster) -> dict[str, object]:
    return {node_name(platform.node(), n.node_id): n for n in cluster.list_all_nodes()}


@needs_ray
def test_two_nodes_give_the_local_verdicts_and_name_the_node_of_every_trial(
    cluster, scored_results, tiny_setting, tmp_path
):
    from harness.scoring.cluster import ray_executor

    local = {rec.submission.name: rec.verdict for _, rec in load_records(scored_results)}
    with ray_executor(cluster.address) as executor:
        out = score(
            [load_submission(s) for s in (HONEST, DISHONEST, CRASH)],
            replace(tiny_setting, machine={}),
            trials=2,
            results_dir=tmp_path,
            progress=False,
            executor=executor,
        )
    verdicts = {rec.submission.name: rec.verdict for rec, _ in out}
    assert verdicts == {"torch-float32": local["torch-float32"], "lr-change": local["lr-change"], "crash": "rejected"}
    assert local["torch-float32"] == "accepted" and local["lr-change"] == "rejected"
    written = load_records(tmp_path)
    assert len(written) == 3
    # a rejected or crashing submission is a verdict, not a lost worker: no trial needed a second attempt
    for _, rec in written:
        timed_on = [t.node for t in rec.trials]
        assert set(timed_on) <= set(names(cluster))
        assert len(set(timed_on)) == 2, "two trials at once on two free nodes: one on each"
        assert set(rec.nodes) == set(timed_on) and all(m.gemm_gflops for m in rec.nodes.values())
        assert rec.machine in rec.nodes.values() and all(t.retries == [] for t in rec.trials)
    accepted = next(rec for _, rec in written if rec.verdict == "accepted")
    assert accepted.speedup > 0 and accepted.speedup_ci[0] <= accepted.speedup <= accepted.speedup_ci[1]


def _folders_of_this_test() -> set[Path]:
    """Shipped submissions and trial folders of the honest submission and the baseline, in the temporary folder."""
    tmp = Path(tempfile.gettempdir())
    shipped = {
        p for p in tmp.glob("loopbench-shipped-*") if (p / HONEST.name).is_dir() or (p / "reference_loop").is_dir()
    }
    trials = set()
    for p in tmp.glob("loopbench-trial-*"):
        manifest = p / "submission" / "submission.toml"
        text = manifest.read_text(errors="replace") if manifest.is_file() else ""
        if 'name = "torch-float32"' in text or 'name = "reference"' in text:
            trials.add(p)
    return shipped | trials


@pytest.fixture
def lost_folders():
    """Removes what a killed node's attempt left in the temporary folder (a trial that ends removes its own)."""
    before = _folders_of_this_test()
    yield
    for folder in _folders_of_this_test() - before:
        shutil.rmtree(folder, ignore_errors=True)


@needs_ray
def test_a_node_lost_mid_trial_costs_that_attempt_only(cluster, tiny_setting, tmp_path, lost_folders):
    from harness.scoring.cluster import ray_executor

    [doomed] = cluster.worker_nodes  # the head stays: this process is connected through it
    doomed_name = node_name(platform.node(), doomed.node_id)
    killed = []

    def kill_when_it_starts(trial: int, node: str) -> None:
        if node == doomed_name and not killed:
            killed.append(trial)
            cluster.remove_node(doomed, allow_graceful=False)

    # two trials on two free nodes: one of them starts on the doomed node, which dies under it
    with ray_executor(cluster.address, on_start=kill_when_it_starts) as executor:
        [(rec, path)] = score(
            [load_submission(HONEST)],
            replace(tiny_setting, machine={}),
            trials=2,
            results_dir=tmp_path,
            progress=False,
            executor=executor,
        )
    assert len(killed) == 1
    assert rec.verdict == "accepted" and len(rec.trials) == 2
    [retried] = [t for t in rec.trials if t.retries]
    assert retried.index == killed[0] and len(retried.retries) == 1 and doomed_name in retried.retries[0]
    assert retried.node != doomed_name and retried.submission.seconds > 0 and retried.baseline.seconds > 0
    assert doomed_name not in {t.node for t in rec.trials} and rec.nodes == {}  # the head timed both in the end
    [(written_path, written)] = load_records(tmp_path)
    assert written_path == path and written.trials[retried.index].retries == retried.retries
    assert [p.name for p in (tmp_path / "runs").iterdir()] == [path.name]


@needs_ray
def test_a_cluster_without_a_node_for_the_budget_is_one_line(cluster, tiny_setting):
    from harness.scoring.cluster import ray_executor

    too_wide = replace(tiny_setting, budget=tiny_setting.budget.model_copy(update={"cores": 64}), machine={})
    with ray_executor(cluster.address) as executor, pytest.raises(LoopbenchError, match=r"no live node.*64 CPUs"):
        score([load_submission(HONEST)], too_wide, trials=1, results_dir=None, progress=False, executor=executor)


@needs_ray
def test_a_node_with_another_harness_is_refused(cluster, tiny_setting, monkeypatch):
    from harness.scoring import cluster as cluster_module

    # the driver believes in another harness than the nodes run
    monkeypatch.setattr(cluster_module, "harness_digest", lambda: "0" * 64)
    with (
        cluster_module.ray_executor(cluster.address) as executor,
        pytest.raises(LoopbenchError, match="different loopbench harness"),
    ):
        executor.verify(load_submission(HONEST), replace(tiny_setting, machine={}), seed=1, progress=False)
