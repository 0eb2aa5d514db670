"""What a newcomer reads first: the Quickstart's two commands, the contract every document cites, and no path
that exists only on one developer's machine."""

from __future__ import annotations

import re

from tests.helpers import PROJECT

SHIPPED_TEXT = [
    PROJECT / "README.md",
    PROJECT / "AGENT_TASK.md",
    *sorted((PROJECT / "docs").glob("*.md")),
    *sorted((PROJECT / "submissions").glob("*/README.md")),
    PROJECT / "reference_loop" / "train.py",
]


def quickstart() -> list[str]:
    readme = (PROJECT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    [block] = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    return [line for line in block.splitlines() if line.strip()]


def test_the_quickstart_is_two_commands_the_first_quick_the_second_reusing_its_environment():
    first, second = quickstart()
    assert first.endswith("loopbench reference --workload tiny"), "the first command should show the install works"
    assert second.endswith("python -m pytest -q")
    for command in (first, second):
        # a venv made only where there is none: the second command keeps the first one's environment
        assert command.startswith("[ -d .venv ] || python3 -m venv .venv && . .venv/bin/activate && pip install -e ")


def test_ci_runs_the_second_command_exactly():
    _, second = quickstart()
    ci = (PROJECT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert second in ci


def test_the_contract_the_documents_cite_is_shipped():
    spec = PROJECT / "docs" / "SPEC.md"
    assert spec.is_file() and "## 10. Identity" in spec.read_text(encoding="utf-8")
    cited = [p.name for p in SHIPPED_TEXT if re.search(r"\bSPEC\b", p.read_text(encoding="utf-8"))]
    assert cited, "no document cites the contract: is this test still reading the right files?"
    assert "docs/SPEC.md" in (PROJECT / "README.md").read_text(encoding="utf-8")


def test_no_document_names_a_path_of_one_machine():
    one_machine = re.compile(r"^\s*(\.|source)\s+/\S+|(?<![\w.])/(home|Users)/\w", re.M)
    found = [
        f"{p.relative_to(PROJECT)}: {m.group(0).strip()}"
        for p in SHIPPED_TEXT
        for m in one_machine.finditer(p.read_text(encoding="utf-8"))
    ]
    assert not found, found
