"""The shipped Prometheus rules and config are valid, and the Grafana dashboard is well-formed."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"


@pytest.mark.integration
def test_alert_rules_pass_promtool(promtool: str) -> None:
    result = subprocess.run(
        [promtool, "check", "rules", str(DEPLOY / "prometheus" / "alerts.yml")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 8 rules found" in result.stdout


@pytest.mark.integration
def test_prometheus_config_passes_promtool(promtool: str) -> None:
    result = subprocess.run(
        [promtool, "check", "config", str(DEPLOY / "prometheus" / "prometheus.yml")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_panels_have_queries_and_unique_ids() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "ragline-dashboard.json").read_text())
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        assert all("ragline_" in target["expr"] for target in panel["targets"]), panel["title"]


def test_generation_speed_is_charted_in_base_units() -> None:
    """Decoding speed is a time per token (seconds), which quantiles and rates aggregate; no ratio metrics."""
    dashboard = json.loads((DEPLOY / "grafana" / "ragline-dashboard.json").read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    assert any("ragline_generator_token_interval_seconds_bucket" in expr for expr in exprs)
    deployed = (DEPLOY / "prometheus" / "alerts.yml").read_text() + "\n".join(exprs)
    assert "_per_second" not in deployed
