"""SP 800-90B health tests (section 4.4) and the most-common-value estimate (section 6.3.1).

A source runs its raw symbols through `HealthTests`; a trip raises
HealthTestFailure, and the gatherer disables that source at once.
No I/O, and nothing of prngd imported.
"""

from __future__ import annotations

import collections
import math
from fractions import Fraction
from typing import Iterable, Sequence


class HealthTestFailure(Exception):
    """A health test tripped: the source is no longer trusted and is disabled at once."""


# Both tests look for a noise source that has become stuck or strongly biased
# relative to the entropy H (bits per sample) it is assessed at, with a false
# alarm probability alpha per sample.  The cut-offs are those of SP 800-90B
# section 4.4.1 and 4.4.2.


def rct_cutoff(h: float, alpha: float) -> int:
    """Repetition count test: C identical samples in a row trip it.  C = 1 + ceil(-log2(alpha) / H)."""
    if not h > 0:
        raise ValueError("entropy per sample must be positive")
    # Exact rational division: a float quotient a hair off an integer would move C by one.
    return 1 + math.ceil(Fraction(-math.log2(alpha)) / Fraction(h))


def apt_cutoff(h: float, alpha: float, window: int = 512) -> int:
    """Adaptive proportion test: C copies of a window's first sample within the window trip it.

    C = 1 + CRITBINOM(W, 2^-H, 1 - alpha): the smallest C with P(X >= C) <= alpha
    for X ~ Binomial(W, 2^-H).  The tail is summed from the top in log space
    (lgamma), so it neither overflows nor needs scipy.  W + 1 means the test
    can never trip (the claimed H is too small for this window).
    """
    if not h > 0:
        raise ValueError("entropy per sample must be positive")
    p = 2.0 ** -h
    log_p, log_q = math.log(p), math.log1p(-p)
    log_wfact = math.lgamma(window + 1)
    tail = 0.0  # P(X >= k + 1) before adding pmf(k)
    for k in range(window, -1, -1):
        tail += math.exp(log_wfact - math.lgamma(k + 1) - math.lgamma(window - k + 1)
                         + k * log_p + (window - k) * log_q)
        if tail > alpha:
            return k + 1
    return 0


class RepetitionCountTest:
    """SP 800-90B 4.4.1: fail when one value repeats `cutoff` times in a row."""

    def __init__(self, cutoff: int):
        self.cutoff = cutoff
        self.failed = False
        self._last: object = None
        self._count = 0

    def feed(self, x) -> None:
        if self._count and x == self._last:
            self._count += 1
            if self._count >= self.cutoff:
                self.failed = True
                raise HealthTestFailure(f"repetition count test: {self._count} identical samples in a row "
                                        f"(cut-off {self.cutoff})")
        else:
            self._last, self._count = x, 1


class AdaptiveProportionTest:
    """SP 800-90B 4.4.2: fail when a window's first value occurs `cutoff` times among its `window` samples."""

    def __init__(self, cutoff: int, window: int = 512):
        self.cutoff = cutoff
        self.window = window
        self.failed = False
        self._first: object = None
        self._count = 0
        self._seen = 0  # samples of the current window so far (0: the next sample opens one)

    def feed(self, x) -> None:
        if self._seen == 0:
            self._first, self._count, self._seen = x, 1, 1
            return
        self._seen += 1
        if x == self._first:
            self._count += 1
            if self._count >= self.cutoff:
                self.failed = True
                raise HealthTestFailure(f"adaptive proportion test: {self._count} of {self._seen} samples "
                                        f"equal (cut-off {self.cutoff} in {self.window})")
        if self._seen >= self.window:
            self._seen = 0


class HealthTests:
    """Both continuous tests for a source assessed at `h` bits per sample, alpha = 2^-alpha_exp."""

    def __init__(self, h: float, alpha_exp: int = 20, window: int = 512):
        alpha = 2.0 ** -alpha_exp
        self.h = h
        self.alpha_exp = alpha_exp
        self.rct = RepetitionCountTest(rct_cutoff(h, alpha))
        self.apt = AdaptiveProportionTest(apt_cutoff(h, alpha, window), window)

    @property
    def failed(self) -> bool:
        return self.rct.failed or self.apt.failed

    def feed(self, samples: Iterable) -> None:
        """Run every sample through both tests; raises HealthTestFailure at the first trip."""
        if self.failed:
            raise HealthTestFailure("health tests failed earlier")
        rct, apt = self.rct.feed, self.apt.feed
        for x in samples:
            rct(x)
            apt(x)

    def stats(self) -> dict:
        return {"h": round(self.h, 4), "rct_cutoff": self.rct.cutoff, "apt_cutoff": self.apt.cutoff,
                "apt_window": self.apt.window, "alpha_exp": self.alpha_exp}


def mcv_min_entropy(samples: Sequence) -> float:
    """SP 800-90B 6.3.1 most-common-value estimate, bits per sample (99% upper bound on p_max)."""
    n = len(samples)
    if n < 2:
        return 0.0
    p_hat = max(collections.Counter(samples).values()) / n
    p_u = min(1.0, p_hat + 2.576 * math.sqrt(p_hat * (1.0 - p_hat) / (n - 1)))
    return max(0.0, -math.log2(p_u))
