"""Retry policy of an activity: how many attempts, how long between them, what never retries."""

from __future__ import annotations

import math
import numbers
import random
from dataclasses import dataclass, field

# Errors in the code itself: retrying cannot help, so they fail at once unless asked.
PROGRAMMING_ERRORS: tuple[type[BaseException], ...] = (
    TypeError, NameError, AttributeError, SyntaxError, ImportError,
)


@dataclass(frozen=True)
class RetryPolicy:
    """``retries`` is the number of retries after the first attempt (0 = one attempt)."""

    retries: int = 0
    backoff: float = 1.0          # seconds before the first retry
    backoff_factor: float = 2.0
    max_backoff: float = 60.0
    jitter: float = 0.1           # +/- fraction of each delay
    timeout: float | None = None  # seconds per attempt
    heartbeat_timeout: float | None = None  # seconds without a heartbeat that fail an attempt
    non_retryable: tuple[type[BaseException], ...] = ()
    retry_programming_errors: bool = False
    _programming: tuple[type[BaseException], ...] = field(default=PROGRAMMING_ERRORS, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.retries, bool) or not isinstance(self.retries, int) \
                or self.retries < 0:
            raise ValueError(f"retries must be a whole number >= 0, got {self.retries!r}")
        for name in ("timeout", "heartbeat_timeout"):
            value = getattr(self, name)
            if value is not None and not (_finite(value) and value > 0):
                raise ValueError(f"{name} must be a positive, finite number of seconds (or "
                                 f"None for no limit), got {value!r}")
        for name, rule in (("backoff", "of seconds >= 0"), ("max_backoff", "of seconds >= 0"),
                           ("backoff_factor", ">= 1")):
            value = getattr(self, name)
            if not (_finite(value) and value >= (1 if name == "backoff_factor" else 0)):
                raise ValueError(f"{name} must be a finite number {rule}, got {value!r}")
        if not (_finite(self.jitter) and 0 <= self.jitter <= 1):
            raise ValueError(f"jitter must be a fraction between 0 and 1, got {self.jitter!r}")

    def is_retryable(self, exc: BaseException) -> bool:
        if isinstance(exc, self.non_retryable):
            return False
        return self.retry_programming_errors or not isinstance(exc, self._programming)

    def delay(self, retry_number: int) -> float:
        """Seconds to wait before retry ``retry_number`` (1 for the first retry)."""
        try:
            grown = self.backoff * self.backoff_factor ** (retry_number - 1)
        except OverflowError:  # thousands of retries: the cap applies long before
            grown = math.inf
        base = min(self.max_backoff, grown) if self.backoff else 0.0
        return max(0.0, base * (1 + random.uniform(-self.jitter, self.jitter)))


def _finite(value: object) -> bool:
    """A real number that is neither NaN nor infinite (``nan < 0`` is False, so say it)."""
    return (isinstance(value, numbers.Real) and not isinstance(value, bool)
            and math.isfinite(value))
