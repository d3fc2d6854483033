"""What every generation run of one ChatStream uses: its engine, admission, metrics, rate
limiter, and the recent service times a queue's wait is estimated from."""

from __future__ import annotations

from dataclasses import dataclass

from ..admission.base import Admission, RateLimiter
from ..engines.base import Engine
from ..metrics import Metrics


class ServiceTimes:
    """How long this instance's recent generations took (an exponential moving average), to
    estimate a queued request's wait: its position times that, shared by the generations that
    run at once. An estimate, shown as one: the queue is cluster-wide, the average this
    instance's."""

    WEIGHT = 0.2

    def __init__(self, concurrency: int) -> None:
        self.concurrency = max(1, concurrency)
        self.average: float | None = None

    def add(self, seconds: float) -> None:
        previous = self.average
        self.average = (
            seconds if previous is None else previous + self.WEIGHT * (seconds - previous)
        )

    def wait(self, position: int) -> float | None:
        if self.average is None:
            return None
        return round(position * self.average / self.concurrency, 1)


@dataclass(frozen=True, slots=True)
class Services:
    """What every run of one ChatStream uses."""

    engine: Engine
    admission: Admission
    metrics: Metrics
    rate_limiter: RateLimiter | None = None
    times: ServiceTimes | None = None
