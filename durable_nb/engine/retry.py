"""Retry policy of an activity: how many attempts, how long between them, what never retries."""

from __future__ import annotations

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
    non_retryable: tuple[type[BaseException], ...] = ()
    retry_programming_errors: bool = False
    _programming: tuple[type[BaseException], ...] = field(default=PROGRAMMING_ERRORS, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.retries, int) or self.retries < 0:
            raise ValueError(f"retries must be a whole number >= 0, got {self.retries!r}")
        if self.timeout is not None and not self.timeout > 0:
            raise ValueError(f"timeout must be a positive number of seconds, got {self.timeout!r}")
        if self.backoff < 0 or self.max_backoff < 0 or self.backoff_factor < 1:
            raise ValueError("backoff and max_backoff must be >= 0 and backoff_factor >= 1")

    def is_retryable(self, exc: BaseException) -> bool:
        if isinstance(exc, self.non_retryable):
            return False
        return self.retry_programming_errors or not isinstance(exc, self._programming)

    def delay(self, retry_number: int) -> float:
        """Seconds to wait before retry ``retry_number`` (1 for the first retry)."""
        base = min(self.max_backoff, self.backoff * self.backoff_factor ** (retry_number - 1))
        return max(0.0, base * (1 + random.uniform(-self.jitter, self.jitter)))
