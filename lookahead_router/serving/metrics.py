"""Prometheus metrics of the proxy (`GET /metrics`). Each app gets its own registry, so several
proxies in one process (tests) do not share counters."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_ROUTER_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)


class ProxyMetrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("lookahead_requests", "Chat requests, every one, by the candidate "
                                "that answered (or 'none'), final status (499: the client left) and "
                                "cause", ["model", "status", "cause"], registry=r)
        self.latency = Histogram("lookahead_request_latency_seconds", "Arrival to last byte, per "
                                 "candidate", ["model"], buckets=_LATENCY_BUCKETS, registry=r)
        self.first_byte = Histogram("lookahead_time_to_first_byte_seconds", "Arrival to the first "
                                    "upstream byte, per candidate", ["model"], buckets=_LATENCY_BUCKETS,
                                    registry=r)
        self.router_latency = Histogram("lookahead_router_latency_seconds", "Router inference per "
                                        "request (queueing included)", buckets=_ROUTER_BUCKETS, registry=r)
        self.router_batch = Histogram("lookahead_router_batch_size", "Prompts per router forward pass",
                                      buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=r)
        self.fallbacks = Counter("lookahead_fallbacks", "Upstream attempts that failed and were "
                                 "retried on the next candidate", ["model", "reason"], registry=r)
        self.upstream_errors = Counter("lookahead_upstream_errors", "Failed upstream attempts",
                                       ["model", "reason"], registry=r)
        self.tokens = Counter("lookahead_tokens", "Tokens the upstreams reported (usage), per candidate; "
                              "kind: prompt or completion", ["model", "kind"], registry=r)
        self.cost = Counter("lookahead_cost_usd", "Cost in USD of the reported tokens at the candidate's "
                            "price_input/price_output (candidates without prices: not counted)", ["model"],
                            registry=r)
        self.usage_missing = Counter("lookahead_usage_missing", "Answered chat requests (200) whose "
                                     "upstream reported no usage: no tokens or cost counted", ["model"],
                                     registry=r)
        self.circuit_open = Gauge("lookahead_circuit_open", "1 while a candidate's circuit is open",
                                  ["model"], registry=r)
        self.in_flight = Gauge("lookahead_in_flight_requests", "Requests being answered", registry=r)
        self.log_written = Counter("lookahead_request_log_rows_written", "Request-log rows stored in the "
                                   "database", registry=r)
        self.log_dropped = Counter("lookahead_request_log_rows_dropped", "Request-log rows dropped: the "
                                   "spool was full while the database was unreachable", registry=r)
        self.log_failures = Counter("lookahead_request_log_write_failures", "Failed writes to the request "
                                    "log's database (each is retried)", registry=r)
        self.log_pending = Gauge("lookahead_request_log_rows_waiting", "Request-log rows in this "
                                 "replica's spool, not yet in the database", registry=r)
        self.log_up = Gauge("lookahead_request_log_up", "1 while the last write to the request log's "
                            "database succeeded", registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
