"""A real OTLP receiver for tests: HTTP/protobuf (and, on request, gRPC) on 127.0.0.1.

It decodes `ExportTraceServiceRequest` at `/v1/traces` and `ExportMetricsServiceRequest` at
`/v1/metrics` with `opentelemetry-proto` (what a collector would receive over the wire) and keeps
flat copies of spans and metric points. `wait_until` blocks, bounded, until a condition over the
received data holds.
"""

from __future__ import annotations

import gzip
import threading
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

from google.protobuf.message import DecodeError  # type: ignore[import-untyped]  # no stubs installed
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric

_T = TypeVar("_T")

SPAN_KINDS = {
    0: "unspecified",
    1: "internal",
    2: "server",
    3: "client",
    4: "producer",
    5: "consumer",
}
STATUS_CODES = {0: "unset", 1: "ok", 2: "error"}


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return _attributes(value.kvlist_value.values)
    return getattr(value, kind)


def _attributes(pairs: Any) -> dict[str, Any]:
    return {pair.key: _value(pair.value) for pair in pairs if isinstance(pair, KeyValue)}


@dataclass(frozen=True)
class ReceivedSpan:
    """One span as it arrived; ids are lowercase hex, times nanoseconds since the epoch."""

    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    kind: str
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    links: list[tuple[str, str]]
    status: str
    status_message: str
    scope: str
    resource: dict[str, Any]

    @property
    def duration_s(self) -> float:
        return (self.end_ns - self.start_ns) / 1e9


@dataclass(frozen=True)
class ReceivedPoint:
    """One data point of one metric as it arrived.

    `value` is the number for sums and gauges; for histograms it is None and `count`, `sum`,
    `bounds` and `bucket_counts` are set.
    """

    name: str
    unit: str
    kind: str  # "sum", "gauge" or "histogram"
    monotonic: bool
    attributes: dict[str, Any]
    value: float | None
    count: int = 0
    sum: float = 0.0
    bounds: tuple[float, ...] = ()
    bucket_counts: tuple[int, ...] = ()
    resource: dict[str, Any] = field(default_factory=dict)


def _points(metric: Metric, resource: dict[str, Any]) -> Iterator[ReceivedPoint]:
    kind = metric.WhichOneof("data")
    if kind in ("sum", "gauge"):
        data = metric.sum if kind == "sum" else metric.gauge
        for point in data.data_points:
            number = point.as_int if point.WhichOneof("value") == "as_int" else point.as_double
            yield ReceivedPoint(
                name=metric.name,
                unit=metric.unit,
                kind=kind,
                monotonic=kind == "sum" and metric.sum.is_monotonic,
                attributes=_attributes(point.attributes),
                value=float(number),
                resource=resource,
            )
    elif kind == "histogram":
        for hpoint in metric.histogram.data_points:
            yield ReceivedPoint(
                name=metric.name,
                unit=metric.unit,
                kind="histogram",
                monotonic=False,
                attributes=_attributes(hpoint.attributes),
                value=None,
                count=hpoint.count,
                sum=hpoint.sum,
                bounds=tuple(hpoint.explicit_bounds),
                bucket_counts=tuple(hpoint.bucket_counts),
                resource=resource,
            )


class OtlpReceiver:
    """Collects what OTLP/HTTP exporters send. Use as a context manager or call `close`."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._spans: list[ReceivedSpan] = []
        self._points: list[ReceivedPoint] = []
        self.requests: list[tuple[str, dict[str, str]]] = []
        self._grpc_server: Any = None
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                encoding = (self.headers.get("Content-Encoding") or "").lower()
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                headers = {k.lower(): v for k, v in self.headers.items()}
                try:
                    reply = receiver._accept(self.path, body, headers)
                except DecodeError:
                    self.send_error(400, "not an OTLP protobuf request")
                    return
                if reply is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def endpoint(self) -> str:
        """The base URL to give an exporter (`http://127.0.0.1:<port>`)."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def _accept(self, path: str, body: bytes, headers: dict[str, str]) -> bytes | None:
        if path == "/v1/traces":
            self.accept_traces(ExportTraceServiceRequest.FromString(body), headers)
            return bytes(ExportTraceServiceResponse().SerializeToString())
        if path == "/v1/metrics":
            self.accept_metrics(ExportMetricsServiceRequest.FromString(body), headers)
            return bytes(ExportMetricsServiceResponse().SerializeToString())
        return None

    def accept_traces(self, traces: ExportTraceServiceRequest, headers: dict[str, str]) -> None:
        """Keep the spans of one decoded export request."""
        spans = [
            ReceivedSpan(
                trace_id=span.trace_id.hex(),
                span_id=span.span_id.hex(),
                parent_span_id=span.parent_span_id.hex(),
                name=span.name,
                kind=SPAN_KINDS.get(span.kind, str(span.kind)),
                start_ns=span.start_time_unix_nano,
                end_ns=span.end_time_unix_nano,
                attributes=_attributes(span.attributes),
                links=[(link.trace_id.hex(), link.span_id.hex()) for link in span.links],
                status=STATUS_CODES.get(span.status.code, str(span.status.code)),
                status_message=span.status.message,
                scope=scope_spans.scope.name,
                resource=_attributes(resource_spans.resource.attributes),
            )
            for resource_spans in traces.resource_spans
            for scope_spans in resource_spans.scope_spans
            for span in scope_spans.spans
        ]
        with self._condition:
            self.requests.append(("/v1/traces", headers))
            self._spans.extend(spans)
            self._condition.notify_all()

    def accept_metrics(self, request: ExportMetricsServiceRequest, headers: dict[str, str]) -> None:
        """Keep the metric points of one decoded export request."""
        points = [
            point
            for resource_metrics in request.resource_metrics
            for scope_metrics in resource_metrics.scope_metrics
            for metric in scope_metrics.metrics
            for point in _points(metric, _attributes(resource_metrics.resource.attributes))
        ]
        with self._condition:
            self.requests.append(("/v1/metrics", headers))
            self._points.extend(points)
            self._condition.notify_all()

    @property
    def spans(self) -> list[ReceivedSpan]:
        with self._condition:
            return list(self._spans)

    @property
    def points(self) -> list[ReceivedPoint]:
        with self._condition:
            return list(self._points)

    def metric_names(self) -> set[str]:
        return {point.name for point in self.points}

    def latest(self, name: str, **attributes: Any) -> ReceivedPoint | None:
        """The last point received for metric `name` whose attributes include `attributes`."""
        matching = [
            p
            for p in self.points
            if p.name == name and all(p.attributes.get(k) == v for k, v in attributes.items())
        ]
        return matching[-1] if matching else None

    def wait_until(
        self,
        condition: Callable[[OtlpReceiver], _T | None],
        *,
        timeout_s: float = 15.0,
        what: str = "condition",
    ) -> _T:
        """Block until `condition(self)` is truthy (re-checked on every arrival) and return it.

        Raises:
            TimeoutError: it did not hold within `timeout_s`; says what did arrive.
        """
        with self._condition:
            result = self._condition.wait_for(lambda: condition(self), timeout=timeout_s)
            if not result:
                names = sorted({s.name for s in self._spans})
                raise TimeoutError(
                    f"{what} did not hold within {timeout_s}s; received {len(self._spans)} "
                    f"spans {names} and metrics {sorted({p.name for p in self._points})}"
                )
            return result

    def wait_for_spans(
        self, count: int, *, trace_id: str | None = None, **kw: Any
    ) -> list[ReceivedSpan]:
        """Wait until at least `count` spans (of `trace_id`, if given) arrived; return them."""

        def enough(receiver: OtlpReceiver) -> list[ReceivedSpan] | None:
            spans = [s for s in receiver._spans if trace_id is None or s.trace_id == trace_id]
            return spans if len(spans) >= count else None

        return self.wait_until(enough, what=f"{count} spans", **kw)

    def serve_grpc(self) -> str:
        """Also accept OTLP/gRPC (needs grpcio); returns its endpoint `http://127.0.0.1:<port>`."""
        import grpc  # type: ignore[import-untyped,import-not-found,unused-ignore]  # optional extra
        from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

        receiver = self

        def metadata(context: Any) -> dict[str, str]:
            return {str(k): str(v) for k, v in context.invocation_metadata()}

        class Traces(trace_service_pb2_grpc.TraceServiceServicer):  # type: ignore[misc,unused-ignore]  # generated, untyped
            def Export(self, request: Any, context: Any) -> ExportTraceServiceResponse:
                receiver.accept_traces(request, metadata(context))
                return ExportTraceServiceResponse()

        class Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):  # type: ignore[misc,unused-ignore]  # generated, untyped
            def Export(self, request: Any, context: Any) -> ExportMetricsServiceResponse:
                receiver.accept_metrics(request, metadata(context))
                return ExportMetricsServiceResponse()

        server = grpc.server(ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Traces(), server)  # type: ignore[no-untyped-call]  # generated
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(Metrics(), server)  # type: ignore[no-untyped-call]  # generated
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        self._grpc_server = server
        return f"http://127.0.0.1:{port}"

    def close(self) -> None:
        if self._grpc_server is not None:
            self._grpc_server.stop(grace=None).wait(5)
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> OtlpReceiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextmanager
def running_receiver() -> Iterator[OtlpReceiver]:
    """An `OtlpReceiver` that is closed afterwards."""
    receiver = OtlpReceiver()
    try:
        yield receiver
    finally:
        receiver.close()
