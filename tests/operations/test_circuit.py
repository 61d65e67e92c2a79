"""The upstream circuit: closed → open on a failure ratio, half-open after the cooldown, and
the next attempt decides. Driven by a fake clock, so no test sleeps."""

from __future__ import annotations

from app.operations.circuit import UpstreamCircuit, chain


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def circuit(clock: Clock) -> UpstreamCircuit:
    return UpstreamCircuit(
        window_seconds=60, min_attempts=4, failure_ratio=0.5, cooldown_seconds=30, clock=clock
    )


class TestUpstreamCircuit:
    def test_stays_closed_below_the_minimum_number_of_attempts(self) -> None:
        c = circuit(Clock())
        for _ in range(3):
            c.observe("fork", None, 0.1)
        assert c.state == "closed"

    def test_opens_when_half_the_recent_attempts_fail(self) -> None:
        c = circuit(Clock())
        c.observe("fork", 200, 0.1)
        c.observe("fork", 201, 0.1)
        c.observe("start", 503, 0.1)
        assert c.state == "closed"
        c.observe("start", None, 0.1)
        assert c.state == "open"
        assert c.summary() == {
            "state": "open",
            "recent_attempts": 4,
            "recent_failures": 2,
            "window_seconds": 60,
        }

    def test_client_errors_count_as_answers_not_failures(self) -> None:
        c = circuit(Clock())
        for status in (404, 429, 422, 409, 400):
            c.observe("hibernate", status, 0.1)
        assert c.state == "closed"

    def test_old_failures_leave_the_window(self) -> None:
        clock = Clock()
        c = circuit(clock)
        for _ in range(3):
            c.observe("fork", 500, 0.1)
        clock.now = 61
        c.observe("fork", 500, 0.1)
        c.observe("fork", 200, 0.1)
        c.observe("fork", 200, 0.1)
        assert c.state == "closed"

    def test_half_open_after_cooldown_then_a_success_closes(self) -> None:
        clock = Clock()
        c = circuit(clock)
        for _ in range(4):
            c.observe("fork", 502, 0.1)
        assert c.state == "open"
        clock.now = 29.9
        assert c.state == "open"
        clock.now = 30
        assert c.state == "half-open"
        c.observe("running", 200, 0.1)
        assert c.state == "closed"
        # The window starts over: one more failure does not reopen it.
        c.observe("running", 500, 0.1)
        assert c.state == "closed"

    def test_half_open_failure_reopens_for_a_new_cooldown(self) -> None:
        clock = Clock()
        c = circuit(clock)
        for _ in range(4):
            c.observe("fork", None, 0.1)
        clock.now = 40
        assert c.state == "half-open"
        c.observe("running", None, 0.1)
        assert c.state == "open"
        clock.now = 69
        assert c.state == "open"
        clock.now = 70
        assert c.state == "half-open"


def test_chain_tells_every_observer_in_order() -> None:
    heard: list[tuple[str, str, int | None]] = []
    observer = chain(
        lambda op, status, _s: heard.append(("first", op, status)),
        lambda op, status, _s: heard.append(("second", op, status)),
    )
    observer("fork", 201, 0.2)
    assert heard == [("first", "fork", 201), ("second", "fork", 201)]
