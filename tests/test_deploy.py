"""deploy/: the collector config, the compose stack and the Grafana dashboard fit together, and
every metric and label a panel queries is one the server really emits.

What the server emits is not taken from a list: an OtelObserver driven through every hook
exports to a real OTLP receiver, and the names that arrive are translated the way the
collector's Prometheus exporter does (dots to underscores, unit suffix, `_total` for counters,
`_bucket`/`_sum`/`_count` for histograms).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from parallel_dispatch.events import CapacitySnapshot, CoordinationRecord, TaskRecord
from parallel_dispatch.models import Batch, Plan
from parallel_dispatch.telemetry import TelemetryConfig, configure_telemetry
from tests.support.otlp_receiver import OtlpReceiver, ReceivedPoint

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "parallel-dispatch.json"

# Labels Prometheus adds or histograms carry, rather than metric attributes.
BUILTIN_LABELS = {"le", "job", "instance", "__name__"}
PROMQL_WORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
}
# UCUM units the Prometheus translation spells out (annotations in braces are dropped).
UNIT_WORDS = {"s": "seconds", "ms": "milliseconds", "By": "bytes", "1": "ratio"}


def prometheus_names(point: ReceivedPoint) -> set[str]:
    name = re.sub(r"[^A-Za-z0-9_:]", "_", point.name)
    unit = UNIT_WORDS.get(re.sub(r"\{[^}]*\}", "", point.unit), "")
    if unit == "ratio" and point.kind != "gauge":
        unit = ""
    if unit and not name.endswith(f"_{unit}"):
        name = f"{name}_{unit}"
    if point.kind == "histogram":
        return {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    if point.kind == "sum" and point.monotonic:
        return {f"{name}_total"}
    return {name}


def prometheus_label(attribute: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", attribute)


def drive_every_hook(observer: Any) -> None:
    start = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)
    plan = Plan(
        mode="waves",
        width=2,
        batches=[Batch(index=0, task_ids=["a", "b"]), Batch(index=1, task_ids=["c"])],
        dispatch_order=["a", "b", "c"],
        estimated_makespan_s=30.0,
        lower_bound_s=20.0,
    )
    observer.plan_made(plan, tool="plan_batches")
    observer.plan_made(plan, tool="register_coordination")
    coordination = CoordinationRecord(
        coordination_id="c1",
        label="deploy check",
        mode="waves",
        state="running",
        trace_id="1" * 32,
        span_id="2" * 16,
        parent_span_id=None,
        link_traceparent=None,
        created_at=start,
        finished_at=None,
        total=3,
        width=2,
    )
    tasks = [
        TaskRecord(
            task_id=task_id,
            agent="general-purpose",
            status=status,
            batch_index=index // 2,
            span_id=f"{index + 3:016x}",
            launched_at=start + timedelta(seconds=index),
            finished_at=start + timedelta(seconds=10 + index),
            duration_s=None,
            tokens=500,
            error=None,
        )
        for index, (task_id, status) in enumerate(
            [("a", "succeeded"), ("b", "timed_out"), ("c", "failed")]
        )
    ]
    observer.coordination_registered(coordination, tasks)
    for task in tasks:
        observer.task_finished(coordination, task)
    done = CoordinationRecord(
        **{
            **coordination.__dict__,
            "state": "completed_with_failures",
            "finished_at": start + timedelta(seconds=12),
            "estimated_makespan_s": 30.0,
        }
    )
    observer.coordination_finished(done, tasks)
    observer.adaptive_limit_changed(4, "timeouts")
    observer.tool_called("record_result", 0.003, None)
    observer.tool_called("record_result", 0.001, "ConflictingResultError")


@pytest.fixture(scope="module")
def emitted() -> tuple[set[str], set[str]]:
    """(Prometheus metric names, Prometheus label names) of what the server really exports."""
    with OtlpReceiver() as receiver:
        telemetry = configure_telemetry(
            TelemetryConfig(otlp_endpoint=receiver.endpoint, export_interval_s=0.2),
            set_global=False,
        )
        telemetry.bind_capacity(lambda: CapacitySnapshot(2, 18, 4))
        drive_every_hook(telemetry.observer)
        telemetry.shutdown()
        points = receiver.wait_until(
            lambda r: r.points if r.latest("parallel_dispatch.tasks.in_flight") else None,
            what="metrics",
        )
    names = {name for point in points for name in prometheus_names(point)}
    labels = {prometheus_label(key) for point in points for key in point.attributes}
    return names, labels | BUILTIN_LABELS


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def queries() -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every panel target and templating query."""
    for panel in dashboard()["panels"]:
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]
    for variable in dashboard()["templating"]["list"]:
        query = variable["query"]
        yield f"variable {variable['name']}", query["query"] if isinstance(query, dict) else query


def metric_names_in(expr: str) -> set[str]:
    text = re.sub(r"\$\{?\w+\}?", "", expr)  # Grafana variables
    text = re.sub(r'"[^"]*"', '""', text)  # label values
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", text)  # grouping labels
    text = re.sub(r"label_values\(([^,)]*),[^)]*\)", r"\1", text)
    text = re.sub(r"\[[^\]]*\]", "", text)  # range selectors
    words = re.findall(r"(?<![\w.:])([A-Za-z_:][\w:]*)(?![\w:])(?!\s*\()", text)
    return {w for w in words if w not in PROMQL_WORDS}


def labels_in(expr: str, legend: str = "") -> set[str]:
    found: set[str] = set()
    for group in re.findall(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)", expr):
        found |= {label.strip() for label in group.split(",") if label.strip()}
    for matchers in re.findall(r"\{([^}]*)\}", re.sub(r"\{\{[^}]*\}\}", "", expr)):
        found |= set(re.findall(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)", matchers))
    found |= {label.strip() for label in re.findall(r"\{\{([^}]*)\}\}", legend)}
    return found


def test_the_metric_name_extractor_finds_metrics_and_only_metrics() -> None:
    expr = (
        "histogram_quantile(0.95, sum by (le, gen_ai_agent_name) "
        '(rate(x_seconds_bucket{job=~"$job"}[$__rate_interval]))) / scalar(sum(rate(y_total[5m])))'
    )
    assert metric_names_in(expr) == {"x_seconds_bucket", "y_total"}
    assert labels_in(expr) == {"le", "gen_ai_agent_name", "job"}


def test_every_metric_a_panel_queries_is_emitted(emitted: tuple[set[str], set[str]]) -> None:
    names, _ = emitted
    for where, expr in queries():
        used = metric_names_in(expr)
        assert used, f"{where}: no metric in {expr!r}"
        missing = used - names
        assert not missing, f"{where} queries {sorted(missing)}, not emitted: {sorted(names)}"


def test_every_label_a_panel_uses_is_emitted(emitted: tuple[set[str], set[str]]) -> None:
    _, labels = emitted
    for panel in dashboard()["panels"]:
        for target in panel.get("targets", []):
            missing = labels_in(target["expr"], target.get("legendFormat", "")) - labels
            assert not missing, f"{panel['title']} uses labels {sorted(missing)}"


def test_the_dashboard_shows_what_the_issue_asks_for() -> None:
    titles = " | ".join(panel["title"].lower() for panel in dashboard()["panels"])
    for topic in (
        "fan-outs over time",
        "tasks by status",
        "duration by agent",
        "in flight vs free agent slots",
        "adaptive",
        "estimated vs actual",
        "failure and timeout",
    ):
        assert topic in titles, topic
    exprs = " ".join(expr for _, expr in queries())
    assert "histogram_quantile(0.5," in exprs and "histogram_quantile(0.95," in exprs
    assert len({panel["id"] for panel in dashboard()["panels"]}) == len(dashboard()["panels"])


def test_the_dashboard_uses_only_provisioned_datasources() -> None:
    provisioned = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/datasources/datasources.yaml").read_text()
    )
    uids = {source["uid"] for source in provisioned["datasources"]}
    for panel in dashboard()["panels"]:
        if "datasource" in panel:
            assert panel["datasource"]["uid"] in uids, panel["title"]
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] in uids, panel["title"]


def test_the_collector_takes_otlp_and_feeds_jaeger_and_prometheus() -> None:
    config = yaml.safe_load((DEPLOY / "otel-collector.yaml").read_text())
    pipelines = config["service"]["pipelines"]
    for name, pipeline in pipelines.items():
        for kind in ("receivers", "processors", "exporters"):
            for component in pipeline.get(kind, []):
                assert component in config[kind], f"{name} uses undefined {kind} {component}"
    assert config["receivers"]["otlp"]["protocols"]["http"]["endpoint"].endswith(":4318")
    assert "prometheus" in pipelines["metrics"]["exporters"]
    (traces_exporter,) = pipelines["traces"]["exporters"]
    host = config["exporters"][traces_exporter]["endpoint"].split(":")[0]
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    assert host in compose["services"]


def test_prometheus_scrapes_the_collector_exporter() -> None:
    collector = yaml.safe_load((DEPLOY / "otel-collector.yaml").read_text())
    port = collector["exporters"]["prometheus"]["endpoint"].rsplit(":", 1)[1]
    prometheus = yaml.safe_load((DEPLOY / "prometheus.yaml").read_text())
    targets = [
        t
        for job in prometheus["scrape_configs"]
        for c in job["static_configs"]
        for t in c["targets"]
    ]
    assert f"otel-collector:{port}" in targets


def test_compose_runs_the_stack_with_files_that_exist() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert {"otel-collector", "prometheus", "grafana"} <= set(services)
    assert {"jaeger", "tempo"} & set(services)
    assert any(port.endswith(":4318") for port in services["otel-collector"]["ports"])
    mounts: dict[str, str] = {}
    for service in services.values():
        for volume in service.get("volumes", []):
            source, target = volume.split(":")[:2]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), source
                mounts[target] = source
            else:
                assert source in compose["volumes"], source
    for service in services.values():
        assert ":" in service["image"] and not service["image"].endswith(":latest")
    providers = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/dashboards/dashboards.yaml").read_text()
    )
    dashboards_dir = providers["providers"][0]["options"]["path"]
    assert (DEPLOY / mounts[dashboards_dir] / DASHBOARD.name).exists()
