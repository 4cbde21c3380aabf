"""SP 800-90B continuous health tests: cut-offs, exact trip points, and data that must pass.

The cut-offs are checked against values computed here independently of the
module: the repetition count test from its definition (the smallest C with
H * (C - 1) >= -log2(alpha), in exact rationals), the adaptive proportion
test from the binomial tail in exact rationals (integer H) or 60-digit
decimals (other H), and both against the table SP 800-90B itself prints.
"""

from __future__ import annotations

import os
import random
from decimal import Decimal, localcontext
from fractions import Fraction
from math import comb

import pytest
from hypothesis import given, settings, strategies as st

from prngd.health import (AdaptiveProportionTest, HealthTestFailure, HealthTests, RepetitionCountTest,
                          apt_cutoff, mcv_min_entropy, rct_cutoff)


# ---------------------------------------------------------------- independent references

def rct_reference(h: float, alpha_exp: int) -> int:
    """Smallest C such that C - 1 further repeats have probability 2^(-H (C-1)) <= 2^-alpha_exp."""
    c = 2
    while Fraction(h) * (c - 1) < alpha_exp:
        c += 1
    return c


def binomial_tail_exact(w: int, h: int, c: int) -> Fraction:
    """P(X >= c), X ~ Binomial(w, 2^-h), exactly: h is an integer, so every term is k / 2^(h w)."""
    numerator = sum(comb(w, k) * (2 ** h - 1) ** (w - k) for k in range(max(c, 0), w + 1))
    return Fraction(numerator, 2 ** (h * w))


def binomial_tail_decimal(w: int, h: float, c: int) -> Decimal:
    with localcontext() as ctx:
        ctx.prec = 60
        p = Decimal(2) ** (-Decimal(h))
        q = 1 - p
        return sum((comb(w, k) * p ** k * q ** (w - k) for k in range(max(c, 0), w + 1)), Decimal(0))


def apt_reference(w: int, h, alpha_exp: int) -> int:
    """Smallest C with P(X >= C) <= alpha, found by adding terms from the top of the tail."""
    if float(h).is_integer():
        h = int(h)
        terms = [Fraction(comb(w, k) * (2 ** h - 1) ** (w - k), 2 ** (h * w)) for k in range(w + 1)]
        alpha = Fraction(1, 2 ** alpha_exp)
    else:
        with localcontext() as ctx:
            ctx.prec = 60
            p = Decimal(2) ** (-Decimal(h))
            terms = [comb(w, k) * p ** k * (1 - p) ** (w - k) for k in range(w + 1)]
        alpha = Decimal(1) / Decimal(2 ** alpha_exp)
    tail = 0
    for k in range(w, -1, -1):
        tail += terms[k]  # now P(X >= k)
        if tail > alpha:
            return k + 1
    return 0


# ---------------------------------------------------------------- cut-offs

@pytest.mark.parametrize("h, alpha_exp, expected", [
    (1, 20, 21), (2, 20, 11), (4, 20, 6), (8, 20, 4), (0.5, 20, 41), (1, 30, 31), (3, 40, 15), (0.3, 20, 68),
])
def test_rct_cutoff(h, alpha_exp, expected):
    assert rct_reference(h, alpha_exp) == expected
    assert rct_cutoff(h, 2.0 ** -alpha_exp) == expected


# SP 800-90B (January 2018), section 4.4.2, Table 2: alpha = 2^-20, W = 512 (non-binary) and 1024 (binary).
SP800_90B_TABLE2 = [(512, 0.5, 410), (512, 1, 311), (512, 2, 177), (512, 4, 62), (512, 8, 13), (1024, 1, 589)]


@pytest.mark.parametrize("window, h, expected", SP800_90B_TABLE2)
def test_apt_cutoff_matches_the_standards_table(window, h, expected):
    assert apt_cutoff(h, 2.0 ** -20, window) == expected


@pytest.mark.parametrize("h, alpha_exp", [(1, 20), (2, 20), (4, 20), (8, 20), (1, 30), (2, 40), (0.5, 20), (3.3, 20)])
def test_apt_cutoff_matches_independent_binomial(h, alpha_exp):
    expected = apt_reference(512, h, alpha_exp)
    assert apt_cutoff(h, 2.0 ** -alpha_exp, 512) == expected
    # and it is the defining boundary: the tail at C is <= alpha, at C - 1 it is not
    if float(h).is_integer():
        alpha = Fraction(1, 2 ** alpha_exp)
        assert binomial_tail_exact(512, int(h), expected) <= alpha < binomial_tail_exact(512, int(h), expected - 1)


@settings(max_examples=40, deadline=None)
@given(h=st.floats(min_value=0.2, max_value=8.0), alpha_exp=st.integers(min_value=8, max_value=40))
def test_cutoffs_property(h, alpha_exp):
    assert rct_cutoff(h, 2.0 ** -alpha_exp) == rct_reference(h, alpha_exp)
    c = apt_cutoff(h, 2.0 ** -alpha_exp, 512)
    alpha = Decimal(1) / Decimal(2 ** alpha_exp)
    assert binomial_tail_decimal(512, h, c) <= alpha
    assert binomial_tail_decimal(512, h, c - 1) > alpha


def test_cutoffs_reject_zero_entropy():
    with pytest.raises(ValueError):
        rct_cutoff(0, 2.0 ** -20)
    with pytest.raises(ValueError):
        apt_cutoff(0.0, 2.0 ** -20)


# ---------------------------------------------------------------- trip points

@pytest.mark.parametrize("h, alpha_exp", [(1, 20), (2, 20), (8, 20), (0.5, 30), (4, 40)])
def test_stuck_input_trips_rct_at_exactly_c(h, alpha_exp):
    tests = HealthTests(h, alpha_exp)
    c = rct_reference(h, alpha_exp)
    assert tests.rct.cutoff == c
    tests.feed([7] * (c - 1))  # C - 1 identical samples pass
    assert not tests.failed
    with pytest.raises(HealthTestFailure, match="repetition count"):
        tests.feed([7])  # the C-th trips
    assert tests.failed and tests.rct.failed
    with pytest.raises(HealthTestFailure):  # and it stays failed
        tests.feed([1, 2, 3])


def test_rct_counts_runs_not_totals():
    rct = RepetitionCountTest(5)
    for _ in range(100):
        for x in (1, 1, 1, 1, 2):  # four in a row, then a break, forever
            rct.feed(x)
    assert not rct.failed


def _window(first, count: int, size: int = 512, filler_start: int = 1000) -> list:
    """A window opening with `first`, holding `count` of it in all, alternating with distinct fillers."""
    out = [first]
    fillers = iter(range(filler_start, filler_start + size))
    placed = 1
    while len(out) < size:
        if placed < count and out[-1] != first:
            out.append(first)
            placed += 1
        else:
            out.append(next(fillers))
    assert out.count(first) == count
    return out


@pytest.mark.parametrize("h, alpha_exp", [(2, 20), (4, 20), (8, 20), (4, 40)])
def test_biased_input_trips_apt_at_exactly_c(h, alpha_exp):
    c = apt_reference(512, h, alpha_exp)
    apt = AdaptiveProportionTest(apt_cutoff(h, 2.0 ** -alpha_exp, 512), 512)
    assert apt.cutoff == c
    # Windows holding C - 1 copies of their first value pass, window after window.
    for i in range(3):
        for x in _window(i, c - 1):
            apt.feed(x)
    assert not apt.failed
    # A window holding C copies trips exactly at the C-th copy.
    window = _window(9, c)
    position_of_cth = [i for i, x in enumerate(window) if x == 9][c - 1]
    for i, x in enumerate(window):
        if i < position_of_cth:
            apt.feed(x)
        else:
            with pytest.raises(HealthTestFailure, match="adaptive proportion"):
                apt.feed(x)
            break
    assert apt.failed


def test_biased_input_through_both_tests():
    # Half the samples are one value, never two in a row: the RCT stays quiet and
    # the APT (H = 2 claims p <= 1/4) must trip on the 177th copy, 2 * 176 samples in.
    tests = HealthTests(2, 20)
    assert (tests.rct.cutoff, tests.apt.cutoff) == (11, 177)
    samples = [0 if i % 2 == 0 else 1 + (i // 2) % 200 for i in range(1024)]
    fed = 0
    with pytest.raises(HealthTestFailure, match="adaptive proportion"):
        for x in samples:
            tests.feed([x])
            fed += 1
    assert fed == 2 * 176
    assert not tests.rct.failed


def test_randomly_biased_bytes_fail():
    rng = random.Random(1234)
    tests = HealthTests(4, 20)  # claims p_max <= 1/16
    biased = [0 if rng.random() < 0.3 else rng.randrange(1, 256) for _ in range(20000)]
    with pytest.raises(HealthTestFailure):
        tests.feed(biased)


@pytest.mark.parametrize("h, alpha_exp", [(1, 20), (2, 20), (4, 20), (8, 40)])
def test_good_data_passes(h, alpha_exp):
    tests = HealthTests(h, alpha_exp)
    for _ in range(4):
        tests.feed(os.urandom(65536))
    assert not tests.failed


# ---------------------------------------------------------------- entropy estimate

def test_mcv_estimate():
    assert mcv_min_entropy([5] * 1000) == 0.0
    # p_hat = 1/2 over 1000 samples: p_u = 0.5 + 2.576 * sqrt(0.25 / 999)
    data = [0, 1] * 500
    p_u = 0.5 + 2.576 * (0.25 / 999) ** 0.5
    assert mcv_min_entropy(data) == pytest.approx(-__import__("math").log2(p_u))
    uniform = list(range(256)) * 8
    assert 6.0 < mcv_min_entropy(uniform) < 8.0
