"""Prometheus metrics of one ChatStream (its own registry, served at ``GET /metrics``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
TOKEN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    """Per instance; Prometheus sums the instances of a cluster."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = CollectorRegistry() if registry is None else registry
        self.time_to_first_token = Histogram(
            "chatstream_time_to_first_token_seconds",
            "From the request's arrival (queue wait included) to the first text sent.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.inter_token_latency = Histogram(
            "chatstream_inter_token_latency_seconds",
            "Time between two consecutive text deltas of one stream.",
            buckets=TOKEN_BUCKETS,
            registry=self.registry,
        )
        self.queue_wait = Histogram(
            "chatstream_queue_wait_seconds",
            "Time spent waiting for a generation permit, granted or not.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.generations_active = Gauge(
            "chatstream_generations_active",
            "Generations running on this instance.",
            registry=self.registry,
        )
        self.generations_waiting = Gauge(
            "chatstream_generations_waiting",
            "Requests of this instance waiting for a permit.",
            registry=self.registry,
        )
        self.tokens_generated = Counter(
            "chatstream_tokens_generated", "Completion tokens generated.", registry=self.registry
        )
        self.prompt_tokens = Counter(
            "chatstream_prompt_tokens",
            "Prompt tokens of finished generations.",
            registry=self.registry,
        )
        self.prompt_tokens_cached = Counter(
            "chatstream_prompt_tokens_cached",
            "Prompt tokens whose keys and values came from the engine's prefix cache.",
            registry=self.registry,
        )
        self.outcomes = Counter(
            "chatstream_outcomes",
            "Chat streams by how they ended.",
            ["outcome"],
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
