"""process_guard fails the unmarked tests that start processes, themselves or through a fixture, and only those."""

from __future__ import annotations

from pathlib import Path

import pytest

# Runs a pytest session of its own in a subprocess: an inline one would be watched by this session's guard.
pytestmark = pytest.mark.integration

CONFTEST = 'pytest_plugins = ("process_guard",)\n'
TESTS = """
import subprocess
import sys

import pytest


def start() -> str:
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    return "up"


@pytest.fixture(scope="session")
def server() -> str:
    return start()


@pytest.fixture(scope="session")
def other_server() -> str:
    return start()


@pytest.mark.integration
def test_marked_sets_up_the_server(server: str) -> None:
    subprocess.run(["true"], check=True)


def test_unmarked_reuses_the_server(server: str) -> None:
    pass


def test_unmarked_sets_up_another_server(other_server: str) -> None:
    pass


def test_unmarked_starts_a_process_itself() -> None:
    subprocess.run(["true"], check=True)


def test_unmarked_starts_nothing() -> None:
    pass
"""


def test_unmarked_tests_that_start_processes_fail_and_name_what_started(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).parent))
    pytester.makeini("[pytest]\nmarkers =\n    integration: starts processes\n")
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_guarded=TESTS)

    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")

    result.assert_outcomes(passed=2, failed=1, errors=2)
    result.stdout.fnmatch_lines_random(
        [
            "*::test_unmarked_reuses_the_server starts processes (fixture 'server') but is not marked integration*",
            "*::test_unmarked_sets_up_another_server starts processes (fixture 'other_server', `*python -c pass`)*",
            "*::test_unmarked_starts_a_process_itself starts processes (`true`) but is not marked integration*",
        ]
    )
    assert "test_marked_sets_up_the_server starts" not in result.stdout.str()
    assert "test_unmarked_starts_nothing starts" not in result.stdout.str()
