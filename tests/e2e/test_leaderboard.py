"""The leaderboard and the run pages, from real records of `loopbench score` on tiny, through the command line."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import matplotlib
import pytest
from markdown_it import MarkdownIt

from harness.contract.checks import Check
from harness.judge.tolerances import DEFAULT
from harness.records import store
from harness.records.schema import Machine, RunRecord
from harness.report.leaderboard import HTML_NAME, MARKDOWN_NAME
from harness.report.plots import DRAWN_WITH
from harness.scoring.stats import HUMAN_REFERENCE
from tests.helpers import PROJECT, assert_one_line_error, copy_results, invoke, make_record

OUTPUTS = (MARKDOWN_NAME, HTML_NAME)


def board(results: Path) -> dict:
    result = invoke("leaderboard", "--results", results, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def outputs(results: Path) -> dict[str, bytes]:
    return {name: (results / name).read_bytes() for name in OUTPUTS}


def by_name(path_and_records) -> dict[str, tuple[Path, RunRecord]]:
    return {rec.submission.name: (path, rec) for path, rec in path_and_records}


def test_the_same_records_give_the_same_bytes(scored_results, tmp_path):
    first, second = (
        copy_results(scored_results, tmp_path / "a"),
        copy_results(scored_results, tmp_path / "elsewhere" / "b"),
    )
    board(first)
    with matplotlib.rc_context(
        {"lines.linewidth": 7, "font.size": 20, "axes.facecolor": "yellow"}
    ):  # a local matplotlibrc
        board(second)
    assert outputs(first) == outputs(second)
    again = outputs(first)
    board(first)
    assert outputs(first) == again


def committed_records() -> list[Path]:
    """The records git tracks under results/runs/ (a record of yours left there untracked is not the project's);
    outside a git checkout, every record there."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z", "--", "results/runs"], cwd=PROJECT, capture_output=True, check=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError):
        return sorted((PROJECT / "results" / "runs").glob("*.json"))
    return sorted(PROJECT / name for name in out.stdout.decode().split("\0") if name.endswith(".json"))


def test_the_committed_leaderboard_is_what_the_committed_records_give(tmp_path):
    committed, records = PROJECT / "results", committed_records()
    if not records:
        pytest.skip("results/runs/ holds no records yet, so there is no committed leaderboard to reproduce")
    for name in OUTPUTS:
        assert (committed / name).is_file(), (
            f"results/runs/ holds records but results/{name} is not committed: "
            "run `loopbench leaderboard --results results`"
        )
    copy = tmp_path / "results"
    (copy / "runs").mkdir(parents=True)
    for record in records:
        shutil.copy2(record, copy / "runs" / record.name)
    board(copy)
    for name in OUTPUTS:
        if name == HTML_NAME and DRAWN_WITH not in (committed / name).read_text(encoding="utf-8"):
            pytest.skip(
                f"results/{MARKDOWN_NAME} is reproduced, but results/{name} was drawn with another matplotlib "
                f"version than the installed one ({DRAWN_WITH}), so its charts cannot be compared byte for byte"
            )
        assert (copy / name).read_bytes() == (committed / name).read_bytes(), (
            f"results/{name} is not what `loopbench leaderboard --results results` makes of the committed "
            "records of results/runs/: regenerate it on purpose with that command"
        )


def test_the_tables_follow_the_scoring_rules(scored_results, tmp_path):
    out = board(copy_results(scored_results, tmp_path / "results"))
    recs = by_name(store.load_records(scored_results))
    assert out["records"] == 3 and out["skipped"] == []
    [section] = out["sections"]
    assert section["workload"].startswith("tiny") and "2 cores" in section["budget"]
    # accepted: the latest of each submission, best first; the rejected attack is listed apart
    accepted = section["accepted"]
    assert [r["rank"] for r in accepted] == [1, 2]
    assert {r["submission"] for r in accepted} == {"torch-float32", "reference"}
    assert accepted[0]["speedup"] >= accepted[1]["speedup"]
    honest = next(r for r in accepted if r["submission"] == "torch-float32")
    assert honest["speedup"] == recs["torch-float32"][1].speedup and honest["kind"] == "human"
    assert honest["x_human"] == pytest.approx(honest["speedup"] / 4)
    assert honest["peak_memory_mib"] > 0 and 0 < honest["ceiling_fraction"] < 1
    assert honest["record"] == f"runs/{recs['torch-float32'][0].name}"
    assert honest["date"] == recs["torch-float32"][1].created[:10]
    [rejected] = section["rejected"]
    assert rejected["submission"] == "lr-change" and rejected["check"] in ("loss", "end-state")
    assert rejected["reason"] == recs["lr-change"][1].reason
    # systems: a rejected attempt counts as 1.0x; the baseline's own runs are no system's attempts
    [system] = section["systems"]
    assert system["system"] == "loopbench-tests" and system["attempts"] == 2 and system["passed"] == 1
    assert system["mean_speedup"] == pytest.approx((honest["speedup"] + 1.0) / 2)
    assert system["pass_rate"] == 0.5


def test_the_markdown_and_the_page_show_every_table_and_chart(scored_results, tmp_path):
    results = copy_results(scored_results, tmp_path / "results")
    board(results)
    md, page = (results / MARKDOWN_NAME).read_text(), (results / HTML_NAME).read_text()
    for title in ("Accepted results", "Systems", "Rejected attempts"):
        assert title in md and title in page
    assert "| 1 | torch-float32 |" in md or "| 1 | reference |" in md
    assert "lr-change" in md and "2 cores" in md and "Machine: " in md
    for element in ("s1-accepted", "s1-systems", "s1-rejected", "s1-speedups", "s1-losses"):
        assert f'id="{element}"' in page
    assert page.count("<svg ") == 2
    assert "human reference 4x" in page and "published, different harness" in page
    for figure in ("about 3x (May 2025)", "16.5x (November 2025)", "34x (February 2026)", "about 52x (April 2026)"):
        assert figure in page and figure in md


def test_the_page_is_self_contained(scored_results, tmp_path):
    results = copy_results(scored_results, tmp_path / "results")
    board(results)
    page = (results / HTML_NAME).read_text()
    assert "<script" not in page and "<link" not in page and " src=" not in page and "@import" not in page
    addresses = set(re.findall(r"https?://[^\s\"')]+", page))
    assert addresses <= {"http://www.w3.org/2000/svg", "http://www.w3.org/1999/xlink"}, addresses
    assert str(results) not in page and str(scored_results) not in page
    ids = re.findall(r'\bid="([^"]+)"', page)
    assert len(ids) == len(set(ids)), "two charts on one page share an id"
    assert set(re.findall(r'href="#([^"]+)"', page)) <= set(ids)


def test_a_corrupt_or_foreign_file_is_skipped_with_a_warning_naming_it(scored_results, tmp_path):
    clean = copy_results(scored_results, tmp_path / "clean")
    board(clean)
    dirty = copy_results(scored_results, tmp_path / "dirty")
    (dirty / "runs" / "broken.json").write_text('{"version": 1, "created": ')
    (dirty / "runs" / "foreign.json").write_text(json.dumps({"hello": "world"}))
    (dirty / "runs" / "not-json.json").write_bytes(b"\xff\xfe\x00binary")
    result = invoke("leaderboard", "--results", dirty)
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    warned = [line for line in result.stderr.splitlines() if line.startswith("warning: skipping")]
    assert len(warned) == 3
    for name in ("broken.json", "foreign.json", "not-json.json"):
        assert any(name in line for line in warned), result.stderr
    assert outputs(dirty) == outputs(clean)  # the skipped files leave no trace in the output


def test_results_from_different_machines_are_separate_groups(tmp_path):
    # records made here, not timed: which group a record joins must not hang on how a run went on a busy machine
    here = make_record("torch-float32", system="s")
    other = Machine.model_validate(
        here.machine.model_dump() | {"hostname": "second-host", "cpu_model": "Other CPU", "cpu_flags": []}
    )
    store.write_record(here, tmp_path)
    store.write_record(make_record("lr-change", system="s").model_copy(update={"verdict": "rejected"}), tmp_path)
    store.write_record(here.model_copy(update={"machine": other}), tmp_path)
    out = board(tmp_path)
    machines = sorted({s["machine"] for s in out["sections"]})
    assert len(machines) == 2 and "Other CPU on second-host" in machines
    md = (tmp_path / MARKDOWN_NAME).read_text()
    assert md.count("## Machine: ") == 2 and "Other CPU on second-host" in md
    moved = next(s for s in out["sections"] if s["machine"] == "Other CPU on second-host")
    assert [r["submission"] for r in moved["accepted"]] == ["torch-float32"] and moved["rejected"] == []


def test_one_model_name_with_two_vector_widths_is_two_machines(tmp_path):
    # two AMD EPYC guests on one host name, one with AVX2 and one with AVX-512, once shared a group
    here = make_record("torch-float32", system="s")
    for flags in (["sse4_2", "avx", "avx2", "fma"], ["avx2", "fma", "avx512f"], []):
        machine = here.machine.model_dump() | {"hostname": "vm", "cpu_model": "AMD EPYC", "cpu_flags": flags}
        store.write_record(here.model_copy(update={"machine": Machine.model_validate(machine)}), tmp_path)
    machines = sorted({s["machine"] for s in board(tmp_path)["sections"]})
    assert machines == ["AMD EPYC (AVX-512) on vm", "AMD EPYC (AVX2) on vm", "AMD EPYC on vm"]


def test_a_later_rejection_marks_the_accepted_result(scored_results, tmp_path):
    results = copy_results(scored_results, tmp_path / "results")
    recs = by_name(store.load_records(results))
    honest, attack = recs["torch-float32"][1], recs["lr-change"][1]
    later = attack.model_copy(update={"submission": honest.submission, "created": "2099-01-01T00:00:00+00:00"})
    store.write_record(later, results)
    [section] = board(results)["sections"]
    row = next(r for r in section["accepted"] if r["submission"] == "torch-float32")
    assert row["latest_attempt_rejected"] and row["speedup"] == honest.speedup
    assert "torch-float32 †" in (results / MARKDOWN_NAME).read_text()
    [system] = section["systems"]
    assert system["attempts"] == 3 and system["passed"] == 1


def test_names_from_submissions_are_text_never_markup(scored_results, tmp_path):
    results = copy_results(scored_results, tmp_path / "results")
    _, rec = by_name(store.load_records(results))["torch-float32"]
    hostile = "<script>alert(1)</script> $\\frac{1}{0}$ | pipe"
    info = rec.submission.model_copy(
        update={"name": hostile, "system": "<b>bold</b>"}
    )  # a manifest allows such a system
    forged = rec.model_copy(update={"submission": info}).model_dump(mode="json")
    (results / "runs" / "hostile.json").write_text(json.dumps(forged))  # write_record would not name a file after it
    board(results)
    page = (results / HTML_NAME).read_text()
    assert "<script>" not in page and "<b>bold" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "\\| pipe" in (results / MARKDOWN_NAME).read_text()


def test_a_bare_record_and_an_empty_folder_still_make_a_board(tmp_path):
    (tmp_path / "empty" / "runs").mkdir(parents=True)
    out = board(tmp_path / "empty")
    assert out["records"] == 0 and out["sections"] == []
    assert "No records yet" in (tmp_path / "empty" / MARKDOWN_NAME).read_text()
    store.write_record(make_record(), tmp_path / "sparse")  # no machine, budget or audit in it
    [section] = board(tmp_path / "sparse")["sections"]
    assert section["accepted"][0]["submission"] == "demo"


def test_a_missing_results_folder_is_one_line(tmp_path):
    assert_one_line_error(invoke("leaderboard", "--results", tmp_path / "nowhere"), "results folder not found")
    assert_one_line_error(invoke("leaderboard", "--results", tmp_path), "has no runs/ folder")


# ---------------------------------------------------------------- one run's page


def test_a_run_page_shows_trials_audit_loss_memory_and_cpu(scored_results, tmp_path):
    results = copy_results(scored_results, tmp_path / "results")
    path, rec = by_name(store.load_records(results))["lr-change"]
    result = invoke("report", path)
    assert result.exit_code == 0, result.output
    page_path = results / "reports" / f"{path.stem}.html"
    assert str(page_path) in result.stdout
    page = page_path.read_text()
    for element in ("facts", "trials", "machine", "audit-trial-1", "audit-trial-2", "audit", "loss", "usage"):
        assert f'id="{element}"' in page
    assert page.count("<svg ") == 3
    assert (
        f"tol {DEFAULT.distance:g}" in page
        and f"tol {DEFAULT.loss:g}" in page
        and f"tol {DEFAULT.tensor_distance:g}" in page
    )
    assert rec.reason in page.replace("&gt;", ">") and "REJECTED" in page
    assert page.count('<tr class="fail">') >= 1
    assert str(rec.trials[1].seed) in page
    other = tmp_path / "out" / "page.html"
    assert invoke("report", path, "--out", other).exit_code == 0
    assert other.read_bytes() == page_path.read_bytes()


def test_report_errors_are_one_line(scored_results, tmp_path):
    assert_one_line_error(invoke("report", tmp_path / "gone.json"), "record file not found")
    (tmp_path / "foreign.json").write_text("[1, 2, 3]")
    assert_one_line_error(invoke("report", tmp_path / "foreign.json"), "is not a loopbench record")
    [(path, _), *_] = store.load_records(scored_results)
    assert_one_line_error(invoke("report", path, "--out", tmp_path), "is a folder")


def test_a_run_page_names_the_node_of_each_trial_and_its_lost_attempts(tmp_path):
    rec = make_record()
    first = rec.trials[0].model_copy(update={"node": "node-a/0123456789ab"})
    second = rec.trials[0].model_copy(
        update={
            "index": 1,
            "seed": 2,
            "node": "node-b/ba9876543210",
            "retries": ["attempt 1 lost on node-c/000000000000: NodeDiedError"],
        }
    )

    def node(cpu: str, host: str, rate: float) -> Machine:
        return rec.machine.model_copy(update={"cpu_model": cpu, "hostname": host, "gemm_gflops": rate})

    rec = rec.model_copy(
        update={
            "trials": [first, second],
            "nodes": {
                "node-a/0123456789ab": node("CPU A", "node-a", 100.0),
                "node-b/ba9876543210": node("CPU B", "node-b", 50.0),
            },
        }
    )
    path = store.write_record(rec, tmp_path)
    assert invoke("report", path, "--out", tmp_path / "page.html").exit_code == 0
    page = (tmp_path / "page.html").read_text()
    assert "timed on" in page and "node-a/0123456789ab" in page and "node-b/ba9876543210" in page
    assert "after 1 lost attempt: attempt 1 lost on node-c/000000000000" in page
    assert "CPU B on node-b, 50.0 GFLOP/s" in page and "paired within its node" in page


# ---------------------------------------------------------------- untrusted fields, identity, charts (issue 15)

HOSTILE_REASON = (
    "crashed during train: RuntimeError: <script>alert(1)</script> <img src=x onerror=alert(1)> "
    "[click](javascript:alert(1)) ![pixel](https://evil.example/p.png) admin\u202egnp.exe"
)


def accepted(name: str, system: str, speedup: float, created: str, **info) -> RunRecord:
    rec = make_record(name, system=system)
    return rec.model_copy(
        update={
            "speedup": speedup,
            "created": created,
            "submission": rec.submission.model_copy(update=info),
        }
    )


def rejected(name: str, system: str, reason: str, created: str, **info) -> RunRecord:
    rec = accepted(name, system, 1.0, created, **info)
    failed = rec.trials[0].submission.model_copy(update={"accepted": False, "reason": reason, "check": Check.CRASH})
    trial = rec.trials[0].model_copy(update={"submission": failed, "node": "node\u202e/evil"})
    return rec.model_copy(update={"verdict": "rejected", "reason": reason, "speedup": None, "trials": [trial]})


def test_every_untrusted_field_is_text_in_the_markdown_and_visible_in_both_pages(tmp_path):
    store.write_record(
        accepted("champion", "<b>evil</b> @someone", 3.0, "2026-11-20T00:00:00+00:00", kind="agent\u202e"),
        tmp_path,
    )
    store.write_record(
        rejected("crasher", "[sys](javascript:x)", HOSTILE_REASON, "2026-11-21T00:00:00+00:00"), tmp_path
    )
    board(tmp_path)
    md, page = (tmp_path / MARKDOWN_NAME).read_text(), (tmp_path / HTML_NAME).read_text()
    rendered = MarkdownIt("commonmark").enable("table").render(md)
    assert not re.search(r"<(script|img|a|b)\b", rendered), "raw HTML or a link came through the Markdown"
    assert "javascript:" not in rendered.replace("](javascript:", "") or "<a " not in rendered
    assert "\\<script>" in md and "\\[click\\](javascript:alert(1))" in md and "\\!\\[pixel\\]" in md
    for text in (md, page):
        assert "\u202e" not in text and "\\u202e" in text
    assert "<script" not in page and "<b>evil" not in page


def test_a_name_taken_by_another_system_never_replaces_its_row(tmp_path):
    store.write_record(accepted("champion", "loopbench", 50.0, "2026-11-20T00:00:00+00:00"), tmp_path)
    store.write_record(accepted("champion", "someone-else", 1.1, "2026-11-21T00:00:00+00:00"), tmp_path)
    store.write_record(rejected("champion", "someone-else", "too slow", "2026-11-22T00:00:00+00:00"), tmp_path)
    [section] = board(tmp_path)["sections"]
    rows = {(r["system"], r["submission"]): r for r in section["accepted"]}
    assert set(rows) == {("loopbench", "champion"), ("someone-else", "champion")}
    assert rows[("loopbench", "champion")]["rank"] == 1 and rows[("loopbench", "champion")]["speedup"] == 50.0
    # the other system's later rejection marks its own row only
    assert not rows[("loopbench", "champion")]["latest_attempt_rejected"]
    assert rows[("someone-else", "champion")]["latest_attempt_rejected"]
    md = (tmp_path / MARKDOWN_NAME).read_text()
    assert "| 1 | champion (loopbench) |" in md and "| 2 | champion (someone-else) † |" in md


def test_the_systems_table_counts_every_scored_submission_but_the_reference_itself(tmp_path):
    for k, name in enumerate(("numpy-vectorised", "champion")):
        store.write_record(
            accepted(name, "loopbench", 5.0 + k, f"2026-11-2{k}T00:00:00+00:00", kind="baseline"), tmp_path
        )
    itself = make_record("reference", system="loopbench")
    itself = itself.model_copy(update={"baseline": itself.submission})
    store.write_record(itself, tmp_path)
    [section] = board(tmp_path)["sections"]
    [system] = section["systems"]
    assert system["system"] == "loopbench" and system["attempts"] == 2
    assert "no attempt" not in (tmp_path / MARKDOWN_NAME).read_text()


def test_an_empty_table_is_a_line_not_a_header_over_a_blank_row(tmp_path):
    store.write_record(accepted("solo", "s", 2.0, "2026-11-20T00:00:00+00:00"), tmp_path)
    board(tmp_path)
    md = (tmp_path / MARKDOWN_NAME).read_text()
    assert "**Rejected attempts**\n\nNone.\n" in md
    assert "|  |" not in md


def test_the_loss_charts_plot_each_submission_against_its_own_baseline(tmp_path):
    from harness.report.html import loss_differences

    rec = make_record("paired", system="s")
    trials = []
    for k, offset in enumerate((0.0, 0.5)):  # two seeds: the baselines differ by 0.5, the differences do not
        base = rec.trials[0].baseline.model_copy(update={"losses": [3.0 - 0.1 * s + offset for s in range(10)]})
        sub = base.model_copy(update={"losses": [x + 0.002 for x in base.losses]})
        trials.append(rec.trials[0].model_copy(update={"index": k, "seed": k + 1, "baseline": base, "submission": sub}))
    rec = rec.model_copy(update={"trials": trials})
    assert [round(d, 9) for trial in loss_differences(rec) for d in trial] == [0.002] * 20
    path = store.write_record(rec, tmp_path)
    board(tmp_path)
    page = (tmp_path / HTML_NAME).read_text()
    assert "loss minus the baseline" in page and "another seed" not in page
    assert invoke("report", path, "--out", tmp_path / "run.html").exit_code == 0
    run = (tmp_path / "run.html").read_text()
    assert "every trial: the submission" in run and "trial 1" in run and "trial 2" in run


def test_the_speedup_chart_has_a_colour_key_and_no_label_on_another(tmp_path):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from harness.report import leaderboard, plots

    points = [
        plots.SpeedupPoint(name, x, x * 0.95, x * 1.05, kind)
        for name, x, kind in (("champion", 56.6, "agent"), ("torch-tuned", 41.6, "human"), ("vec", 3.5, "agent"))
    ]
    with plots._style():
        fig = plots.speedup_figure(points, HUMAN_REFERENCE, leaderboard.PUBLISHED)
        canvas = FigureCanvasAgg(fig)
        canvas.draw()
    renderer = canvas.get_renderer()
    ax = fig.axes[0]
    [key] = fig.legends
    assert {t.get_text() for t in key.get_texts()} >= {"agent: 95% interval", "human: 95% interval", "human reference"}
    plot_area = ax.get_window_extent(renderer)
    names = [t for a in ax.child_axes for t in a.get_xticklabels() if t.get_text()]
    assert len(names) == 1 + len(leaderboard.PUBLISHED)
    boxes = [t.get_window_extent(renderer) for t in names] + [key.get_window_extent(renderer)]
    for i, box in enumerate(boxes):
        assert not box.overlaps(plot_area), "a reference line's name or the key lies on the chart"
        assert not any(box.overlaps(other) for other in boxes[i + 1 :]), "two names of reference lines overlap"


def test_a_page_that_cannot_be_written_is_one_line_and_leaves_nothing_half_written(tmp_path):
    path = store.write_record(make_record(), tmp_path)
    (tmp_path / MARKDOWN_NAME).mkdir()  # something in the way
    assert_one_line_error(invoke("leaderboard", "--results", tmp_path), f"cannot write {tmp_path / MARKDOWN_NAME}")
    assert_one_line_error(invoke("report", path, "--out", tmp_path / "runs" / path.name / "page.html"), "cannot write")
    assert_one_line_error(invoke("report", tmp_path / "runs"), "is a folder, not a record file")
    assert not list(tmp_path.rglob("*.partial"))
