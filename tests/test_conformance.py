"""The official MCP conformance suite against the real HTTP server.

`@modelcontextprotocol/conformance@0.1.16` on Node 22, both from npm (see
tests/support/npm_tools.py). Scenarios written for the reference "everything" server are in
the baseline tests/conformance-expected-failures.yml, each with its reason; the suite exits 1
on any other failure, and also when a baselined scenario starts passing (stale baseline).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support.npm_tools import conformance_command
from tests.support.processes import http_server, server_env

pytestmark = pytest.mark.slow

BASELINE = Path(__file__).with_name("conformance-expected-failures.yml")
# The scenarios that test protocol behaviour any server must have (CLAUDE_CODE_NOTES.md).
MUST_PASS = frozenset(
    {
        "server-initialize",
        "ping",
        "tools-list",
        "resources-list",
        "prompts-list",
        "server-sse-multiple-streams",
        "dns-rebinding-protection",
    }
)
SUITE_TIMEOUT_S = 600
SUMMARY_LINE = re.compile(r"^([✓✗])\s+(\S+):\s+(\d+) passed, (\d+) failed", re.MULTILINE)


def baselined_scenarios() -> list[str]:
    document = yaml.safe_load(BASELINE.read_text())
    assert set(document) == {"server"}, "only server scenarios apply"
    scenarios: list[str] = document["server"]
    return scenarios


def test_baseline_lists_no_scenario_that_applies_to_every_server_and_says_why() -> None:
    scenarios = baselined_scenarios()
    assert len(scenarios) == len(set(scenarios))
    assert not MUST_PASS & set(scenarios)
    for line in BASELINE.read_text().splitlines():
        if line.lstrip().startswith("- "):
            entry, _, reason = line.partition("#")
            assert reason.strip(), f"baseline entry without a reason: {entry.strip()}"


def test_conformance_suite_passes_every_scenario_that_applies_to_this_server(
    tmp_path: Path,
) -> None:
    database_url = f"sqlite:///{tmp_path / 'dispatch.db'}"
    with http_server(database_url, tmp_path) as (base_url, _process):
        done = subprocess.run(
            [
                *conformance_command(),
                "server",
                "--url",
                f"{base_url}/mcp",
                "--expected-failures",
                str(BASELINE),
                "--output-dir",
                str(tmp_path / "results"),
            ],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env={**server_env(database_url), "HOME": str(tmp_path / "conformance-home")},
            timeout=SUITE_TIMEOUT_S,
            check=False,
        )
    output = done.stdout + done.stderr
    report = output[output.find("=== SUMMARY") :] if "=== SUMMARY" in output else output[-6000:]
    summary = {
        name: (mark == "✓" and int(failed) == 0 and int(passed) > 0)
        for mark, name, passed, failed in SUMMARY_LINE.findall(output)
    }

    missing = MUST_PASS - set(summary)
    assert not missing, f"the suite did not run {sorted(missing)}:\n{report}"
    failing = sorted(name for name in MUST_PASS if not summary[name])
    assert not failing, f"{failing} failed:\n{report}"
    unknown = set(baselined_scenarios()) - set(summary)
    assert not unknown, f"baseline names scenarios the suite no longer has: {sorted(unknown)}"
    # Exit 0 means: no failure outside the baseline and no baselined scenario passing.
    assert done.returncode == 0, report
