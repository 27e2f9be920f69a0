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
    assert "SUCCESS: 9 rules found" in result.stdout


@pytest.mark.integration
def test_the_certificate_expiry_alert_fires_two_weeks_ahead(promtool: str, tmp_path: Path) -> None:
    # At time 0, one certificate expires in 13 days and another in 30: only the first is alerted on.
    day = 86400
    tests = {
        "rule_files": [str(DEPLOY / "prometheus" / "alerts.yml")],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {
                        "series": 'ragline_tls_certificate_expiry_timestamp_seconds{job="ragline-retriever",instance="r:9103",role="server"}',
                        "values": f"{13 * day}x120",
                    },
                    {
                        "series": 'ragline_tls_certificate_expiry_timestamp_seconds{job="ragline-gateway",instance="g:9101",role="client"}',
                        "values": f"{30 * day}x120",
                    },
                ],
                "alert_rule_test": [
                    {
                        "eval_time": "61m",
                        "alertname": "RaglineTlsCertificateExpiresSoon",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "severity": "ticket",
                                    "job": "ragline-retriever",
                                    "instance": "r:9103",
                                    "role": "server",
                                },
                                "exp_annotations": {
                                    "summary": "A TLS certificate of ragline-retriever expires in less than 14 days",
                                    "description": (
                                        "The server certificate r:9103 presents expires in 12d 22h 59m 0s. "
                                        "Replace its files (tools/make_certs.py, or your CA); services read them "
                                        "again without a restart, and the gateway reopens its channels."
                                    ),
                                },
                            }
                        ],
                    }
                ],
            }
        ],
    }
    test_file = tmp_path / "expiry_test.yml"
    test_file.write_text(json.dumps(tests))
    result = subprocess.run([promtool, "test", "rules", str(test_file)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


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
