"""The operations kit in deploy/monitoring, checked offline: every alert and dashboard query parses as
PromQL, names only metrics the proxy's /metrics really exports (with labels they really have), and the
ServiceMonitor scrapes the Service that deploy/kubernetes defines."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from proxy.app import create_app
from proxy.metrics import Metrics
from tests.helpers import VAPI_SECRET, config_from, serving, vapi_sample

ROOT = Path(__file__).resolve().parent.parent
MONITORING = ROOT / "deploy" / "monitoring"
SERVICE = yaml.safe_load((ROOT / "deploy" / "kubernetes" / "service.yaml").read_text())
RULES = yaml.safe_load((MONITORING / "prometheusrule.yaml").read_text())
MONITOR = yaml.safe_load((MONITORING / "servicemonitor.yaml").read_text())
DASHBOARD = json.loads((MONITORING / "grafana-dashboard.json").read_text())
# Series Prometheus makes itself, not the proxy.
PROMETHEUS_SERIES = {"up"}
# Labels every scraped series carries (target labels the ServiceMonitor adds).
TARGET_LABELS = {"namespace", "pod", "instance", "job", "service", "container", "endpoint"}
SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum", "_created"), "gauge": ("",)}
EXAMPLE = (ROOT / "config.example.yaml").read_text()


def alerts() -> list[dict[str, Any]]:
    return [rule for group in RULES["spec"]["groups"] for rule in group["rules"]]


def dashboard_queries() -> list[str]:
    return [
        target["expr"].replace("$__rate_interval", "5m").replace("$__range", "6h")  # Grafana's variables
        for panel in DASHBOARD["panels"]
        for target in panel.get("targets", [])
    ]


def walk(node: Any) -> Iterator[Any]:
    """Every node of a promql_parser expression tree."""
    yield node
    for attribute in ("lhs", "rhs", "expr", "param", "vector_selector"):
        child = getattr(node, attribute, None)
        if child is not None and not isinstance(child, str | int | float):
            yield from walk(child)
    for argument in getattr(node, "args", None) or []:
        yield from walk(argument)


def selectors(expr: str) -> list[tuple[str, set[str]]]:
    """(metric name, label names matched on) of every vector selector in `expr`."""
    found = []
    for node in walk(promql_parser.parse(expr)):
        if isinstance(node, promql_parser.VectorSelector):
            matchers = node.matchers.matchers if node.matchers is not None else []
            found.append((node.name, {matcher.name for matcher in matchers}))
    return found


@pytest.fixture(scope="module")
def exported() -> dict[str, set[str]]:
    """Series name -> label names, from the proxy's own /metrics after a call, plus each family's declared labels."""
    import anyio

    async def scrape() -> str:
        config = config_from(EXAMPLE)
        async with serving(create_app(config, metrics=metrics)) as client:
            call = vapi_sample("assistant-request.pstn")
            await client.post("/vapi", json=call, headers={"X-Vapi-Secret": VAPI_SECRET})
            return (await client.get("/metrics")).text

    metrics = Metrics()
    text = anyio.run(scrape)
    declared = {
        collector._name: set(collector._labelnames)  # type: ignore[attr-defined]
        for collector in vars(metrics).values()
        if hasattr(collector, "_labelnames")
    }
    series: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        labels = declared.get(family.name, set()) | {label for sample in family.samples for label in sample.labels}
        for suffix in SUFFIXES.get(family.type, ("",)):
            series[family.name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    assert "vapi_proxy_assistant_requests_total" in series
    return series


def check_query(expr: str, exported: dict[str, set[str]]) -> None:
    for name, labels in selectors(expr):
        assert name, f"a selector without a metric name in {expr!r}"
        if name in PROMETHEUS_SERIES:
            continue
        assert name in exported, f"{name} is not in the proxy's /metrics (query: {expr!r})"
        unknown = labels - exported[name] - TARGET_LABELS
        assert not unknown, f"{name} has no label {sorted(unknown)} (query: {expr!r})"


@pytest.mark.parametrize("rule", alerts(), ids=lambda rule: rule["alert"])
def test_alert_parses_and_names_real_metrics(rule: dict[str, Any], exported: dict[str, set[str]]) -> None:
    check_query(rule["expr"], exported)


@pytest.mark.parametrize("rule", alerts(), ids=lambda rule: rule["alert"])
def test_alert_is_actionable(rule: dict[str, Any]) -> None:
    assert re.fullmatch(r"VapiProxy[A-Z][A-Za-z]+", rule["alert"])
    assert re.fullmatch(r"\d+[smh]", rule["for"]), "an alert without `for` pages on a single bad scrape"
    assert rule["labels"]["severity"] in {"warning", "critical"}
    assert rule["annotations"]["summary"] and len(rule["annotations"]["description"]) > 60
    # A label the annotation shows must survive the expression's aggregations, or it renders empty.
    grouping = [
        set(node.modifier.labels)
        for node in walk(promql_parser.parse(rule["expr"]))
        if isinstance(node, promql_parser.AggregateExpr) and node.modifier is not None
    ]
    for label in re.findall(r"\$labels\.(\w+)", json.dumps(rule["annotations"])):
        assert all(label in kept for kept in grouping), f"{rule['alert']}: $labels.{label} is aggregated away"


def test_the_alerts_the_docs_recommend_exist() -> None:
    names = {rule["alert"] for rule in alerts()}
    assert {
        "VapiProxyConfigFileInvalid",
        "VapiProxyNangoCircuitOpen",
        "VapiProxyFallbackRateHigh",
        "VapiProxyLatencyNearDeadline",
        "VapiProxyBookingUnconfirmed",
    } <= names
    assert len(names) == len(alerts()), "duplicate alert names"


def test_alerts_select_the_job_the_service_monitor_creates() -> None:
    """The Prometheus Operator names the job after the Service."""
    jobs = {m for rule in alerts() for m in re.findall(r'job="([^"]+)"', rule["expr"])}
    assert jobs == {SERVICE["metadata"]["name"]}


@pytest.mark.parametrize("expr", dashboard_queries())
def test_dashboard_query_parses_and_names_real_metrics(expr: str, exported: dict[str, set[str]]) -> None:
    check_query(expr, exported)


def test_dashboard_covers_calls_latency_nango_cache_and_reloads() -> None:
    text = json.dumps(DASHBOARD)
    for metric in (
        "vapi_proxy_assistant_requests_total",
        "vapi_proxy_assistant_request_seconds_bucket",
        "vapi_proxy_nango_requests_total",
        "vapi_proxy_connection_cache_total",
        "vapi_proxy_config_reloads_total",
    ):
        assert metric in text
    latency = next(p for p in DASHBOARD["panels"] if "latency" in p["title"].lower())
    steps = [step["value"] for step in latency["fieldConfig"]["defaults"]["thresholds"]["steps"]]
    assert steps == [None, 7.5], "the latency panel shows Vapi's limit"
    assert any("vapi_proxy_deadline_seconds" in target["expr"] for target in latency["targets"])


def test_dashboard_layout_and_datasource() -> None:
    assert DASHBOARD["uid"] and DASHBOARD["title"]
    variables = {v["name"]: v for v in DASHBOARD["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    ids = [panel["id"] for panel in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in DASHBOARD["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24
        columns, rows = range(grid["x"], grid["x"] + grid["w"]), range(grid["y"], grid["y"] + grid["h"])
        mine = {(x, y) for x in columns for y in rows}
        assert not mine & cells, f"panel {panel['title']!r} overlaps another"
        cells |= mine
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}"


def test_service_monitor_scrapes_the_service() -> None:
    selector = MONITOR["spec"]["selector"]["matchLabels"]
    assert selector.items() <= SERVICE["metadata"]["labels"].items()
    ports = {port["name"] for port in SERVICE["spec"]["ports"]}
    for endpoint in MONITOR["spec"]["endpoints"]:
        assert endpoint["port"] in ports
        assert endpoint["path"] == "/metrics"


def test_kustomization_lists_the_kit() -> None:
    kustomization = yaml.safe_load((MONITORING / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"]) | {
        file for generator in kustomization["configMapGenerator"] for file in generator["files"]
    }
    # alerts_test.yaml is promtool's unit test of the rules (scripts/lint-deploy), not a cluster object.
    assert listed == {path.name for path in MONITORING.iterdir()} - {"kustomization.yaml", "alerts_test.yaml"}
    for kind, document in (("PrometheusRule", RULES), ("ServiceMonitor", MONITOR)):
        assert document["apiVersion"] == "monitoring.coreos.com/v1" and document["kind"] == kind


@pytest.mark.anyio
async def test_deadline_gauge_follows_the_loaded_config() -> None:
    """The latency alert compares p99 with this gauge, so it must track server.deadline_seconds, reloads included."""
    metrics = Metrics()
    app = create_app(config_from(EXAMPLE.replace("deadline_seconds: 4.0", "deadline_seconds: 2.5")), metrics=metrics)
    async with serving(app) as client:
        assert "vapi_proxy_deadline_seconds 2.5" in (await client.get("/metrics")).text
        app.state.runtime.apply(config_from(EXAMPLE.replace("deadline_seconds: 4.0", "deadline_seconds: 6.0")))
        assert "vapi_proxy_deadline_seconds 6.0" in (await client.get("/metrics")).text
