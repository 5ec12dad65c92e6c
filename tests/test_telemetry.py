"""Telemetry configuration: OTEL_* variables, flags over them, and nothing when unconfigured."""

from __future__ import annotations

import threading

import pytest
from opentelemetry.sdk.trace import TracerProvider

from parallel_dispatch.events import NullObserver
from parallel_dispatch.instrumentation import OtelObserver
from parallel_dispatch.telemetry import (
    PresetIdGenerator,
    TelemetryConfig,
    TelemetryConfigError,
    configure_telemetry,
)
from tests.support.otlp_receiver import OtlpReceiver


def test_nothing_configured_means_the_null_observer_and_no_export() -> None:
    config = TelemetryConfig.from_env({})
    telemetry = configure_telemetry(config, set_global=False)
    assert not config.enabled
    assert not telemetry.enabled
    assert isinstance(telemetry.observer, NullObserver)
    telemetry.bind_capacity(lambda: pytest.fail("gauges must not be read when telemetry is off"))
    assert telemetry.force_flush()
    telemetry.shutdown()
    telemetry.shutdown()


def test_the_base_endpoint_gets_a_path_per_signal() -> None:
    config = TelemetryConfig.from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/"})
    assert config.traces_url == "http://collector:4318/v1/traces"
    assert config.metrics_url == "http://collector:4318/v1/metrics"


def test_per_signal_variables_win_over_the_base_and_are_used_verbatim() -> None:
    config = TelemetryConfig.from_env(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://tempo:4318/otlp/v1/traces",
        }
    )
    assert config.traces_url == "http://tempo:4318/otlp/v1/traces"
    assert config.metrics_url == "http://collector:4318/v1/metrics"


def test_only_a_traces_endpoint_exports_only_traces() -> None:
    config = TelemetryConfig.from_env(
        {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://t:4318/v1/traces"}
    )
    assert config.enabled
    assert config.metrics_url is None


def test_flags_override_the_environment() -> None:
    environ = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://from-env:4318",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://from-env:4318/v1/traces",
        "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer%20env",
        "OTEL_SERVICE_NAME": "env-name",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
    }
    config = TelemetryConfig.from_env(
        environ,
        endpoint="http://flag:4318",
        protocol="http/protobuf",
        headers="authorization=Bearer%20flag,x-team=a",
        service_name="flag-name",
    )
    assert config.traces_url == "http://flag:4318/v1/traces"
    assert config.metrics_url == "http://flag:4318/v1/metrics"
    assert config.otlp_headers == {"authorization": "Bearer flag", "x-team": "a"}
    assert config.service_name == "flag-name"
    assert config.otlp_protocol == "http/protobuf"


def test_service_name_and_resource_attributes_come_from_the_standard_variables() -> None:
    config = TelemetryConfig.from_env(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318",
            "OTEL_RESOURCE_ATTRIBUTES": "service.name=from-attrs, deployment.environment=prod",
            "OTEL_METRIC_EXPORT_INTERVAL": "2500",
        }
    )
    assert config.service_name == "from-attrs"
    assert config.resource_attributes["deployment.environment"] == "prod"
    assert config.export_interval_s == 2.5
    named = TelemetryConfig.from_env(
        {"OTEL_SERVICE_NAME": "svc", "OTEL_RESOURCE_ATTRIBUTES": "service.name=other"}
    )
    assert named.service_name == "svc"


def test_sdk_disabled_and_exporter_none_turn_signals_off() -> None:
    disabled = TelemetryConfig.from_env({"OTEL_SDK_DISABLED": "true"}, endpoint="http://c:4318")
    assert not disabled.enabled
    no_metrics = TelemetryConfig.from_env(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_METRICS_EXPORTER": "none"}
    )
    assert no_metrics.traces_url is not None
    assert no_metrics.metrics_url is None


def test_grpc_uses_the_endpoint_as_given() -> None:
    config = TelemetryConfig.from_env({}, endpoint="http://collector:4317", protocol="grpc")
    assert config.traces_url == "http://collector:4317"


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, "not supported"),
        ({"OTEL_EXPORTER_OTLP_HEADERS": "no-equals-sign"}, "key=value"),
        ({"OTEL_METRIC_EXPORT_INTERVAL": "soon"}, "milliseconds"),
        ({"OTEL_EXPORTER_OTLP_TIMEOUT": "0"}, "positive"),
    ],
)
def test_malformed_settings_are_refused_with_a_clear_message(
    environ: dict[str, str], message: str
) -> None:
    with pytest.raises(TelemetryConfigError, match=message):
        TelemetryConfig.from_env(environ)


def test_headers_and_service_name_reach_the_collector() -> None:
    with OtlpReceiver() as receiver:
        config = TelemetryConfig.from_env(
            {"OTEL_RESOURCE_ATTRIBUTES": "team=infra"},
            endpoint=receiver.endpoint,
            headers={"authorization": "Bearer s3cret"},
            service_name="dispatch-test",
        )
        telemetry = configure_telemetry(config, set_global=False)
        assert isinstance(telemetry.observer, OtelObserver)
        telemetry.observer.tool_called("plan_batches", 0.01, None)
        telemetry.shutdown()
        receiver.wait_until(lambda r: r.points, what="a metric point")
        point = receiver.points[0]
        assert point.resource["service.name"] == "dispatch-test"
        assert point.resource["team"] == "infra"
        assert receiver.requests[0][1]["authorization"] == "Bearer s3cret"


def test_preset_ids_apply_to_one_span_on_the_calling_thread_only() -> None:
    ids = PresetIdGenerator()
    tracer = TracerProvider(id_generator=ids).get_tracer("test")
    other_thread_ids: list[int] = []
    inside = threading.Event()
    release = threading.Event()

    def other() -> None:
        inside.wait(5)
        other_thread_ids.append(tracer.start_span("other").get_span_context().span_id)
        release.set()

    worker = threading.Thread(target=other)
    worker.start()
    with ids.preset(trace_id=0xABC, span_id=0xDEF):
        inside.set()
        release.wait(5)
        first = tracer.start_span("first").get_span_context()
        second = tracer.start_span("second").get_span_context()
    worker.join(5)
    assert (first.trace_id, first.span_id) == (0xABC, 0xDEF)
    assert second.span_id != 0xDEF
    assert other_thread_ids and other_thread_ids[0] != 0xDEF


def test_grpc_protocol_exports_to_a_grpc_collector() -> None:
    pytest.importorskip("opentelemetry.exporter.otlp.proto.grpc", reason="grpc extra not installed")
    with OtlpReceiver() as receiver:
        endpoint = receiver.serve_grpc()
        config = TelemetryConfig.from_env(
            {}, endpoint=endpoint, protocol="grpc", headers="x-team=infra"
        )
        telemetry = configure_telemetry(config, set_global=False)
        telemetry.observer.tool_called("plan_batches", 0.01, None)
        telemetry.shutdown()
        receiver.wait_until(lambda r: r.points, what="a metric point over gRPC")
        assert receiver.points[0].name == "mcp.server.operation.duration"
        assert receiver.requests[0][1]["x-team"] == "infra"


def test_grpc_without_its_exporter_is_refused_when_the_config_is_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import parallel_dispatch.telemetry as telemetry_module

    monkeypatch.setattr(telemetry_module, "_grpc_installed", lambda: False)
    with pytest.raises(TelemetryConfigError, match="opentelemetry-exporter-otlp-proto-grpc"):
        TelemetryConfig.from_env({}, endpoint="http://c:4317", protocol="grpc")
    assert not TelemetryConfig.from_env({}, protocol="grpc").enabled  # no endpoint: no error
