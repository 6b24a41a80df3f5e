"""benchmarks/fleet.py's arithmetic, without the lab: the line through the sizes and the model
of a larger fleet (pyinfra's CPU serial, hosts in waves of pyinfra's --parallel)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from fleet import ROTATE, VERIFY, Fit, least_squares, modelled_mib, modelled_wall, round_trips  # noqa: E402, I001


def test_the_line_through_the_sizes_is_least_squares():
    assert least_squares([(10, 1.5), (20, 2.0), (30, 2.5)]) == pytest.approx((1.0, 0.05))
    # noise on the middle size moves the intercept, not the slope between the outer ones
    assert least_squares([(10, 1.0), (20, 1.6), (30, 2.0)])[1] == pytest.approx(0.05)


def test_the_model_adds_pyinfras_serial_cpu_and_one_wait_per_wave_of_hosts():
    fit = Fit(
        wall=(0, 0),
        cpu=(1.0, 0.02),
        rss=(80.0, 0.5),
        machine=(0, 0),
        hosts=(0, 0),
        host_work=0.5,
    )
    # a 2-core controller: 40 hosts in flight; 100 hosts are 3 waves, 1,000 are 25
    assert modelled_wall(fit, 100, trips=10, rtt=0.05, cores=2) == pytest.approx(
        1.0 + 0.02 * 100 + 3 * (10 * 0.05 + 0.5)
    )
    assert modelled_wall(fit, 1000, trips=10, rtt=0.05, cores=2) == pytest.approx(
        1.0 + 0.02 * 1000 + 25 * (10 * 0.05 + 0.5)
    )
    assert modelled_wall(fit, 30, trips=10, rtt=0.0, cores=2) == pytest.approx(1.0 + 0.6 + 0.5)
    assert modelled_mib(fit, 1000) == pytest.approx(580.0)


def test_round_trips_count_the_connection_each_command_and_each_https_request():
    assert round_trips("no-op converge", commands=2) == 6 + 2 * 2
    assert round_trips(VERIFY, commands=3) == 6 + 2 * 3 + 3 * 5
    assert round_trips(ROTATE, commands=4) == 6 + 2 * 4 + 3 * 2
