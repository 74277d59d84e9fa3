"""Prometheus metrics of one server (its own registry, so several apps in one process never share counts)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

ENDPOINTS = ("/predict", "/embed", "/similar", "/explain", "/health", "/info", "/metrics", "/", "/rerank", "/tokenize",
             "/v1/embeddings", "/embeddings")


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self):
        self.registry = r = CollectorRegistry()
        self.requests = Counter("bertkit_requests", "HTTP requests by endpoint and status", ["endpoint", "status"],
                                registry=r)
        self.latency = Histogram("bertkit_request_seconds", "Request latency", ["endpoint"], registry=r,
                                 buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30))
        self.batch_inputs = Histogram("bertkit_batch_inputs", "Inputs per model batch", registry=r,
                                      buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512))
        self.batch_tokens = Histogram("bertkit_batch_tokens", "Padded tokens per model batch", registry=r,
                                      buckets=(64, 256, 1024, 2048, 4096, 8192, 16384, 32768, 65536))
        self.queue_depth = Gauge("bertkit_queue_depth", "Requests waiting for the model", registry=r)

    def observe_request(self, path: str, status: int, seconds: float) -> None:
        endpoint = path if path in ENDPOINTS else "other"  # unknown paths must not grow the label set
        self.requests.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)

    def observe_batch(self, inputs: int, tokens: int) -> None:
        self.batch_inputs.observe(inputs)
        self.batch_tokens.observe(tokens)

    def render(self, queue_depth: int) -> bytes:
        self.queue_depth.set(queue_depth)
        return generate_latest(self.registry)
