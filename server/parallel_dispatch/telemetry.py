"""The only module that configures the OpenTelemetry SDK and its OTLP exporters.

`TelemetryConfig.from_env` reads the standard `OTEL_*` variables, with the `serve` flags taking
precedence; `configure_telemetry` turns a config into a `Telemetry`: an observer for the
service, gauges bound to live capacity, and a `shutdown` that flushes. With no endpoint
configured nothing is set up and nothing is exported. Exporting happens on background threads
(a batch span processor with a bounded queue, a periodic metric reader, short timeouts), so an
unreachable collector never slows a tool call; its errors reach stderr through logging, once
per kind of failure every few minutes. Nothing here ever writes to stdout.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from typing import Final
from urllib.parse import unquote

from opentelemetry import metrics, trace
from opentelemetry.metrics import Meter, NoOpMeter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricExporter, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator
from opentelemetry.trace import NoOpTracer, Tracer

from parallel_dispatch.events import CapacitySnapshot, DispatchObserver, NullObserver
from parallel_dispatch.instrumentation import INSTRUMENTATION_SCOPE, METRIC_NAMES, OtelObserver

__all__ = [
    "METRIC_NAMES",
    "PROTOCOL_GRPC",
    "PROTOCOL_HTTP_PROTOBUF",
    "PresetIdGenerator",
    "Telemetry",
    "TelemetryConfig",
    "TelemetryConfigError",
    "configure_telemetry",
    "parse_key_values",
]

_logger = logging.getLogger(__name__)

PROTOCOL_HTTP_PROTOBUF: Final = "http/protobuf"
PROTOCOL_GRPC: Final = "grpc"
DEFAULT_SERVICE_NAME: Final = "parallel-dispatch"
_TRACES_PATH: Final = "v1/traces"
_METRICS_PATH: Final = "v1/metrics"
_PACKAGE: Final = "parallel-dispatch"

# Loggers of the SDK pieces that report export failures; they repeat on every attempt.
_EXPORT_LOGGERS: Final = (
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.proto.http.metric_exporter",
    "opentelemetry.exporter.otlp.proto.grpc.exporter",
    "opentelemetry.exporter.otlp.proto.grpc.trace_exporter",
    "opentelemetry.exporter.otlp.proto.grpc.metric_exporter",
    "opentelemetry.exporter.otlp.common.http",
    "opentelemetry.sdk._shared_internal",
    "opentelemetry.sdk.metrics._internal.export",
    "opentelemetry.sdk.trace.export",
)


class TelemetryConfigError(ValueError):
    """A telemetry setting is malformed or asks for something not installed."""


def parse_key_values(text: str | None, *, what: str) -> dict[str, str]:
    """Parse the `OTEL_*` list format `key1=value1,key2=value2` (values percent-decoded).

    Raises:
        TelemetryConfigError: an entry has no `=` or an empty key.
    """
    result: dict[str, str] = {}
    for raw in (text or "").split(","):
        entry = raw.strip()
        if not entry:
            continue
        key, sep, value = entry.partition("=")
        if not sep or not key.strip():
            raise TelemetryConfigError(
                f"{what}: {entry!r} is not key=value; use key1=value1,key2=value2"
            )
        result[unquote(key.strip())] = unquote(value.strip())
    return result


def _seconds_from_millis(environ: Mapping[str, str], name: str, default_s: float) -> float:
    raw = (environ.get(name) or "").strip()
    if not raw:
        return default_s
    try:
        value = float(raw) / 1000.0
    except ValueError as exc:
        raise TelemetryConfigError(f"{name}={raw!r} is not a number of milliseconds") from exc
    if value <= 0:
        raise TelemetryConfigError(f"{name}={raw!r} must be positive")
    return value


def _signal_url(base: str, path: str) -> str:
    return f"{base.rstrip('/')}/{path}"


@dataclass(frozen=True)
class TelemetryConfig:
    """Where and how to export. No endpoint at all means telemetry is off.

    `otlp_endpoint` is the base URL (`http://host:4318`; for gRPC `http://host:4317`);
    `traces_endpoint` / `metrics_endpoint` are full per-signal URLs that take precedence
    for their signal, as `OTEL_EXPORTER_OTLP_{TRACES,METRICS}_ENDPOINT` do.
    """

    otlp_endpoint: str | None = None
    otlp_protocol: str = PROTOCOL_HTTP_PROTOBUF
    otlp_headers: dict[str, str] = field(default_factory=dict)
    service_name: str = DEFAULT_SERVICE_NAME
    resource_attributes: dict[str, str] = field(default_factory=dict)
    export_interval_s: float = 10.0
    traces_endpoint: str | None = None
    metrics_endpoint: str | None = None
    traces_enabled: bool = True
    metrics_enabled: bool = True
    export_timeout_s: float = 3.0
    span_schedule_delay_s: float = 1.0
    max_queue_size: int = 2048

    def __post_init__(self) -> None:
        if self.otlp_protocol not in (PROTOCOL_HTTP_PROTOBUF, PROTOCOL_GRPC):
            raise TelemetryConfigError(
                f"OTLP protocol {self.otlp_protocol!r} is not supported; "
                f"use {PROTOCOL_HTTP_PROTOBUF!r} or {PROTOCOL_GRPC!r}"
            )
        if self.otlp_protocol == PROTOCOL_GRPC and self.enabled and not _grpc_installed():
            raise _grpc_missing()
        for name in ("export_interval_s", "export_timeout_s", "span_schedule_delay_s"):
            if getattr(self, name) <= 0:
                raise TelemetryConfigError(f"{name} must be positive")
        if self.max_queue_size < 1:
            raise TelemetryConfigError("max_queue_size must be at least 1")

    @property
    def traces_url(self) -> str | None:
        """The URL spans are sent to, or None when traces are not exported."""
        return self._url(self.traces_enabled, self.traces_endpoint, _TRACES_PATH)

    @property
    def metrics_url(self) -> str | None:
        """The URL metrics are sent to, or None when metrics are not exported."""
        return self._url(self.metrics_enabled, self.metrics_endpoint, _METRICS_PATH)

    @property
    def enabled(self) -> bool:
        """Whether any signal is exported."""
        return self.traces_url is not None or self.metrics_url is not None

    def _url(self, enabled: bool, specific: str | None, path: str) -> str | None:
        if not enabled:
            return None
        if specific:
            return specific
        if not self.otlp_endpoint:
            return None
        if self.otlp_protocol == PROTOCOL_GRPC:
            return self.otlp_endpoint
        return _signal_url(self.otlp_endpoint, path)

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str],
        *,
        endpoint: str | None = None,
        protocol: str | None = None,
        headers: str | Mapping[str, str] | None = None,
        service_name: str | None = None,
    ) -> TelemetryConfig:
        """Build a config from `OTEL_*` variables; the keyword arguments (flags) win.

        An `endpoint` flag sends every signal there, ignoring the per-signal variables.
        `OTEL_SDK_DISABLED=true` turns everything off, flags included (it is the kill switch).
        `OTEL_TRACES_EXPORTER=none` / `OTEL_METRICS_EXPORTER=none` turn one signal off.

        Raises:
            TelemetryConfigError: a variable or flag is malformed, or asks for gRPC without
                the gRPC exporter installed.
        """

        def env(name: str) -> str | None:
            value = (environ.get(name) or "").strip()
            return value or None

        resource_attributes = parse_key_values(
            env("OTEL_RESOURCE_ATTRIBUTES"), what="OTEL_RESOURCE_ATTRIBUTES"
        )
        name = (
            service_name
            or env("OTEL_SERVICE_NAME")
            or resource_attributes.get("service.name")
            or DEFAULT_SERVICE_NAME
        )
        if (env("OTEL_SDK_DISABLED") or "").lower() == "true":
            return cls(service_name=name, traces_enabled=False, metrics_enabled=False)

        if isinstance(headers, str):
            header_map = parse_key_values(headers, what="--otlp-headers")
        elif headers is not None:
            header_map = dict(headers)
        else:
            header_map = parse_key_values(
                env("OTEL_EXPORTER_OTLP_HEADERS"), what="OTEL_EXPORTER_OTLP_HEADERS"
            )
        chosen_protocol = protocol or env("OTEL_EXPORTER_OTLP_PROTOCOL") or PROTOCOL_HTTP_PROTOBUF
        endpoint = (endpoint or "").strip() or None
        return cls(
            otlp_endpoint=endpoint or env("OTEL_EXPORTER_OTLP_ENDPOINT"),
            otlp_protocol=chosen_protocol.strip().lower(),
            otlp_headers=header_map,
            service_name=name,
            resource_attributes=resource_attributes,
            export_interval_s=_seconds_from_millis(environ, "OTEL_METRIC_EXPORT_INTERVAL", 10.0),
            traces_endpoint=None if endpoint else env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
            metrics_endpoint=None if endpoint else env("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"),
            traces_enabled=(env("OTEL_TRACES_EXPORTER") or "otlp").lower() != "none",
            metrics_enabled=(env("OTEL_METRICS_EXPORTER") or "otlp").lower() != "none",
            export_timeout_s=_seconds_from_millis(environ, "OTEL_EXPORTER_OTLP_TIMEOUT", 3.0),
            span_schedule_delay_s=_seconds_from_millis(environ, "OTEL_BSP_SCHEDULE_DELAY", 1.0),
        )


class PresetIdGenerator(IdGenerator):
    """Random ids, except for a span started inside `preset(...)` on the same thread.

    Spans of a coordination are emitted when its work completes, possibly by another server
    process than the one that allocated their ids; this lets them carry the stored ids. The
    preset is thread-local and consumed by the first span, so concurrent spans (the MCP SDK's
    own, other threads) keep getting random ids.
    """

    def __init__(self) -> None:
        self._random = RandomIdGenerator()
        self._pending = threading.local()

    @contextmanager
    def preset(self, *, trace_id: int, span_id: int) -> Iterator[None]:
        """Inside the block, the next span started on this thread gets these ids.

        `trace_id` is used only for a root span; a child takes its parent's trace id.
        """
        self._pending.trace_id = trace_id
        self._pending.span_id = span_id
        try:
            yield
        finally:
            self._pending.trace_id = None
            self._pending.span_id = None

    def generate_span_id(self) -> int:
        span_id: int | None = getattr(self._pending, "span_id", None)
        if span_id is None:
            return self._random.generate_span_id()
        self._pending.span_id = None
        return span_id

    def generate_trace_id(self) -> int:
        trace_id: int | None = getattr(self._pending, "trace_id", None)
        if trace_id is None:
            return self._random.generate_trace_id()
        self._pending.trace_id = None
        return trace_id

    def is_trace_id_random(self) -> bool:
        # Stored trace ids are allocated randomly too.
        return True


class _RepeatFilter(logging.Filter):
    """Lets one record per (logger, message template) through every `interval_s` seconds."""

    def __init__(self, interval_s: float = 300.0) -> None:
        super().__init__()
        self._interval_s = interval_s
        self._last: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg))
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self._interval_s:
                return False
            self._last[key] = now
        return True


_REPEAT_FILTER = _RepeatFilter()


def _quiet_repeated_export_errors() -> None:
    for name in _EXPORT_LOGGERS:
        logger = logging.getLogger(name)
        if _REPEAT_FILTER not in logger.filters:
            logger.addFilter(_REPEAT_FILTER)


class Telemetry:
    """What `configure_telemetry` returns: the observer to give the service, and its lifecycle.

    Attributes:
        observer: the `DispatchObserver` for the service (`NullObserver` when telemetry is off).
        config: the configuration it was built from.
    """

    def __init__(
        self,
        config: TelemetryConfig,
        observer: DispatchObserver,
        *,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        self.config = config
        self.observer = observer
        self._tracer_provider = tracer_provider
        self._meter_provider = meter_provider
        self._shut_down = False
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        """Whether anything is exported."""
        return self._tracer_provider is not None or self._meter_provider is not None

    def bind_capacity(self, capacity: Callable[[], CapacitySnapshot]) -> None:
        """Feed the in-flight, free-slot and adaptive-limit gauges from `capacity`.

        It is called on the metric reader's thread at each export; a failure is logged once
        and the gauges skip that round.
        """
        if isinstance(self.observer, OtelObserver):
            self.observer.bind_capacity(capacity)

    def force_flush(self, timeout_s: float = 5.0) -> bool:
        """Export what is buffered now; False when it did not finish in `timeout_s`."""
        millis = int(timeout_s * 1000)
        done = True
        if self._tracer_provider is not None:
            done = self._tracer_provider.force_flush(millis) and done
        if self._meter_provider is not None:
            done = self._meter_provider.force_flush(millis) and done
        return done

    def shutdown(self) -> None:
        """Flush and stop the exporters. Safe to call more than once."""
        with self._lock:
            if self._shut_down:
                return
            self._shut_down = True
        if self._tracer_provider is not None:
            self._tracer_provider.shutdown()
        if self._meter_provider is not None:
            self._meter_provider.shutdown()


def _resource(config: TelemetryConfig) -> Resource:
    attributes: dict[str, str] = {
        "telemetry.sdk.language": "python",
        "telemetry.sdk.name": "opentelemetry",
        "telemetry.sdk.version": metadata.version("opentelemetry-sdk"),
    }
    version = _package_version()
    if version is not None:
        attributes["service.version"] = version
    # Each process its own instance: several servers (one per Claude Code session) may feed
    # one collector, and their cumulative counters must not be mixed into one series.
    attributes["service.instance.id"] = str(uuid.uuid4())
    attributes.update(config.resource_attributes)
    attributes["service.name"] = config.service_name
    return Resource(attributes)


def _span_exporter(config: TelemetryConfig, url: str) -> SpanExporter:
    if config.otlp_protocol == PROTOCOL_GRPC:
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # type: ignore[import-not-found,unused-ignore]  # optional extra
                OTLPSpanExporter as GrpcSpanExporter,
            )
        except ImportError as exc:
            raise _grpc_missing() from exc
        exporter: SpanExporter = GrpcSpanExporter(
            endpoint=url, headers=config.otlp_headers, timeout=config.export_timeout_s
        )
        return exporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(
        endpoint=url, headers=config.otlp_headers, timeout=config.export_timeout_s
    )


def _metric_exporter(config: TelemetryConfig, url: str) -> MetricExporter:
    if config.otlp_protocol == PROTOCOL_GRPC:
        try:
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (  # type: ignore[import-not-found,unused-ignore]  # optional extra
                OTLPMetricExporter as GrpcMetricExporter,
            )
        except ImportError as exc:
            raise _grpc_missing() from exc
        exporter: MetricExporter = GrpcMetricExporter(
            endpoint=url, headers=config.otlp_headers, timeout=config.export_timeout_s
        )
        return exporter
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

    return OTLPMetricExporter(
        endpoint=url, headers=config.otlp_headers, timeout=config.export_timeout_s
    )


def _grpc_installed() -> bool:
    try:
        return importlib.util.find_spec("opentelemetry.exporter.otlp.proto.grpc") is not None
    except ModuleNotFoundError:
        return False


def _grpc_missing() -> TelemetryConfigError:
    return TelemetryConfigError(
        "OTLP protocol 'grpc' needs the opentelemetry-exporter-otlp-proto-grpc package; "
        "install it or use --otlp-protocol http/protobuf (port 4318)"
    )


def configure_telemetry(config: TelemetryConfig, *, set_global: bool = True) -> Telemetry:
    """Set up exporting as `config` says and return the service's observer with its lifecycle.

    With no endpoint configured this sets up nothing and returns a `Telemetry` whose observer
    is the `NullObserver`. With `set_global` (the server's case) the providers also become the
    process-wide ones, so the MCP SDK's own `tools/call` spans are exported alongside ours.

    Raises:
        TelemetryConfigError: the protocol needs an exporter package that is not installed.
    """
    if not config.enabled:
        return Telemetry(config, NullObserver())
    _quiet_repeated_export_errors()
    resource = _resource(config)
    ids = PresetIdGenerator()
    version = _package_version()

    tracer_provider: TracerProvider | None = None
    tracer: Tracer = NoOpTracer()
    if config.traces_url is not None:
        tracer_provider = TracerProvider(resource=resource, id_generator=ids)
        tracer_provider.add_span_processor(
            BatchSpanProcessor(
                _span_exporter(config, config.traces_url),
                max_queue_size=config.max_queue_size,
                schedule_delay_millis=config.span_schedule_delay_s * 1000,
                max_export_batch_size=min(512, config.max_queue_size),
                export_timeout_millis=config.export_timeout_s * 1000,
            )
        )
        tracer = tracer_provider.get_tracer(INSTRUMENTATION_SCOPE, version)

    meter_provider: MeterProvider | None = None
    meter: Meter = NoOpMeter(INSTRUMENTATION_SCOPE)
    if config.metrics_url is not None:
        reader = PeriodicExportingMetricReader(
            _metric_exporter(config, config.metrics_url),
            export_interval_millis=config.export_interval_s * 1000,
            export_timeout_millis=config.export_timeout_s * 1000,
        )
        meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
        meter = meter_provider.get_meter(INSTRUMENTATION_SCOPE, version)

    if set_global:
        if tracer_provider is not None:
            trace.set_tracer_provider(tracer_provider)
        if meter_provider is not None:
            metrics.set_meter_provider(meter_provider)
    _logger.info(
        "telemetry: exporting traces to %s and metrics to %s (%s)",
        config.traces_url or "nowhere",
        config.metrics_url or "nowhere",
        config.otlp_protocol,
    )
    observer = OtelObserver(tracer, meter, ids)
    return Telemetry(
        config, observer, tracer_provider=tracer_provider, meter_provider=meter_provider
    )


def _package_version() -> str | None:
    try:
        return metadata.version(_PACKAGE)
    except metadata.PackageNotFoundError:
        return None
