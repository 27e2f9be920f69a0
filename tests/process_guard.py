"""Keeps `pytest -m "not integration"` a unit run that starts nothing.

A test that starts another process (a service, PostgreSQL, Valkey, a tool such as promtool, another Python),
itself or through a fixture it uses, fails unless it carries the `integration` marker. Processes are seen
through Python's audit events, which every way of starting one raises (subprocess and asyncio subprocesses,
os.fork, exec, spawn and system), so no hand-kept list of fixtures can fall behind. A fixture seen starting a
process is remembered: a test that uses it after another test has set it up is caught before it runs.
"""

from __future__ import annotations

import platform
import sys
from collections.abc import Generator
from typing import Any

import pytest

# The audit events that mean a new process.
_PROCESS_EVENTS = frozenset(
    {"subprocess.Popen", "os.fork", "os.forkpty", "os.posix_spawn", "os.spawn", "os.exec", "os.system"}
)


class _Watch:
    """What started processes: the fixtures being set up, and what the current test phase started."""

    def __init__(self) -> None:
        self.fixtures: list[pytest.FixtureDef[Any]] = []
        """The fixtures being set up, innermost last (a fixture may request another while it runs)."""
        self.starting: list[pytest.FixtureDef[Any]] = []
        """Every fixture seen starting a process."""
        self.started: list[str] = []
        """The processes the current setup or call phase started, described for the failure message."""

    def audit(self, event: str, args: tuple[Any, ...]) -> None:
        if event not in _PROCESS_EVENTS:
            return
        if self.fixtures and self.fixtures[-1] not in self.starting:
            self.starting.append(self.fixtures[-1])
        self.started.append(_describe(event, args))

    def starting_fixtures(self, item: pytest.Item) -> list[str]:
        """The fixtures `item` uses that have started a process (one name may be several folders' fixtures)."""
        names = getattr(item, "fixturenames", ())
        parents = list(item.iter_parents())
        return sorted(
            fixture.argname
            for fixture in self.starting
            if fixture.argname in names and (fixture.node is None or fixture.node in parents)
        )


def _describe(event: str, args: tuple[Any, ...]) -> str:
    if event == "subprocess.Popen":
        command = args[1] if isinstance(args[1], str) else " ".join(str(a) for a in args[1])
        return command.splitlines()[0][:120] if command.strip() else event
    return event


# The platform module runs `uname -p` once and caches the answer; libraries ask for it (the openai SDK sends it
# in a header). Asking here, before watching, keeps that from counting as a test starting a process.
platform.processor()
_watch = _Watch()
# Audit hooks can never be removed; this module is imported once per process.
sys.addaudithook(_watch.audit)


def _refuse(item: pytest.Item, fixtures: list[str], started: list[str]) -> None:
    if item.get_closest_marker("integration") is None and (fixtures or started):
        what = [f"fixture {name!r}" for name in fixtures] + [f"`{command}`" for command in started]
        pytest.fail(
            f"{item.nodeid} starts processes ({', '.join(what)}) but is not marked integration: "
            'add @pytest.mark.integration (or `pytestmark = pytest.mark.integration`) so that `-m "not '
            'integration"` stays a unit run that starts nothing',
            pytrace=False,
        )


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(fixturedef: pytest.FixtureDef[Any]) -> Generator[None, object, object]:
    _watch.fixtures.append(fixturedef)
    try:
        return (yield)
    finally:
        _watch.fixtures.pop()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, None, None]:
    _refuse(item, _watch.starting_fixtures(item), [])
    _watch.started = []
    yield
    _refuse(item, _watch.starting_fixtures(item), _watch.started)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    _watch.started = []
    yield
    _refuse(item, [], _watch.started)
