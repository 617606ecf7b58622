"""Prometheus metrics shared by the api and the consumers."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

HTTP_REQUESTS = Counter(
    "mailgw_http_requests_total", "HTTP requests", ["method", "route", "status"]
)
HTTP_SECONDS = Histogram(
    "mailgw_http_request_seconds", "HTTP request latency", ["method", "route"]
)
CONSUMED = Counter(
    "mailgw_messages_consumed_total", "AMQP messages handled", ["role", "outcome"]
)


def observe_http(method: str, route: str, status: int, seconds: float) -> None:
    HTTP_REQUESTS.labels(method, route, str(status)).inc()
    HTTP_SECONDS.labels(method, route).observe(seconds)
