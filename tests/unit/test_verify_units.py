"""verify.py's workers layer: a worker Flower calls offline for a moment is asked about again
before it is reported (Flower marks one offline after two missed heartbeats)."""

from __future__ import annotations

from types import SimpleNamespace

from flowerbed.verify import WORKER_GRACE_S, workers_verdict

CHECKS = SimpleNamespace(min_workers_online=1, max_workers_offline=0)


class FakeFlower:
    """Flower's /api/workers?status=true answering each ask with the next of `answers`, on a
    clock that one pause moves by a second."""

    def __init__(self, *answers: dict):
        self.answers, self.asked, self.now = list(answers), 0, 0.0

    def get(self, path: str):
        assert path == "api/workers?status=true"
        self.asked += 1
        alive = self.answers[min(self.asked, len(self.answers) - 1)]
        return SimpleNamespace(status=200, json=lambda: alive)

    def pause(self, seconds: float):
        self.now += seconds

    def verdict(self):
        return workers_verdict(
            self.get, CHECKS, self.answers[0], clock=lambda: self.now, pause=self.pause
        )


def test_a_worker_online_at_once_is_not_asked_again():
    flower = FakeFlower({"w1": True})
    verdict, online = flower.verdict()
    assert verdict.ok and verdict.value == "1/0" and online == ["w1"]
    assert flower.asked == 0


def test_a_worker_offline_for_one_look_is_healthy_on_the_second():
    flower = FakeFlower({"w1": False}, {"w1": False}, {"w1": True})
    verdict, online = flower.verdict()
    assert verdict.ok, verdict.problem
    assert online == ["w1"] and flower.asked == 2


def test_a_worker_offline_through_the_grace_is_reported():
    flower = FakeFlower({"w1": True, "w2": False})
    verdict, _ = flower.verdict()
    assert not verdict.ok and verdict.problem == "offline: w2"
    assert WORKER_GRACE_S - 1 <= flower.now <= WORKER_GRACE_S + 1


def test_no_worker_at_all_is_reported_after_the_grace():
    flower = FakeFlower({})
    verdict, online = flower.verdict()
    assert not verdict.ok and "0 worker(s) online, expected at least 1" in verdict.problem
    assert online == [] and flower.now >= WORKER_GRACE_S
