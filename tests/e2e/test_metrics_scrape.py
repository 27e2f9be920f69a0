"""Every service's /metrics passes `promtool check metrics`, and every metric the alerts and dashboard use exists."""

from __future__ import annotations

import json
import re
import subprocess
import urllib.request
from pathlib import Path

import pytest

from ragline.devstack import Stack

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def _scrape(stack: Stack, name: str) -> str:
    with urllib.request.urlopen(
        f"http://127.0.0.1:{stack[name].metrics_port}/metrics", timeout=5
    ) as response:
        return str(response.read().decode())


def test_scrapes_pass_promtool_and_cover_alerts_and_dashboard(stack: Stack, promtool: str) -> None:
    names: set[str] = set()
    for name in stack.processes:
        text = _scrape(stack, name)
        result = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
        assert result.returncode == 0, f"{name}: {result.stdout}{result.stderr}"
        names |= set(re.findall(r"^# TYPE (\S+) ", text, flags=re.MULTILINE))
    used = set(re.findall(r"ragline_[a-z_]+", (ROOT / "deploy" / "prometheus" / "alerts.yml").read_text()))
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "ragline-dashboard.json").read_text())
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            used |= set(re.findall(r"ragline_[a-z_]+", target["expr"]))
    known = names | {
        f"{n}{suffix}" for n in names for suffix in ("_bucket", "_count", "_sum", "_total", "_created")
    }
    assert sorted(used - known) == []
