"""The reconciler's decision rules on plain values: no database, no upstream."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from app.reconcile.plan import Plan, Row, classify, estimate_end, last_sighting
from app.upstream.schemas import RunningVM, VMSpecs
from app.upstream.tiers import tier_of as upstream_tier

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
INTENT_WINDOW = timedelta(seconds=300)
GRACE = timedelta(seconds=90)
REFRESH = timedelta(seconds=60)


def s(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def row(**changes: object) -> Row:
    base = Row(
        id="sbx_1",
        upstream_id="vm1",
        team_id="t",
        owner=None,
        tier="Nano",
        state="running",
        managed=True,
        operation_id="op",
        hibernation_timeout_seconds=300,
        reservation_expires_at=None,
        state_changed_at=s(0),
        last_started_at=s(0),
        last_seen_running_at=s(10),
        upstream_last_active_at=s(5),
        missed_polls=0,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def vm(**changes: object) -> RunningVM:
    fields: dict[str, object] = {
        "id": "vm1",
        "last_active_at": s(5),
        "session_started_at": s(0),
        "credit_basis": "10",
        "specs": {"cpu": 2, "memory": 4, "storage": 20},
    }
    fields.update(changes)
    return RunningVM.model_validate(fields)


def plan_for(
    rows: list[Row],
    vms: list[RunningVM],
    *,
    at: float,
    previous: float | None,
    written: float | str | None = "previous",
) -> Plan:
    """`written`: the last finished period's poll; by default the previous one finished."""
    finished = previous if written == "previous" else written
    assert not isinstance(finished, str)
    return classify(
        vms,
        rows,
        poll_at=s(at),
        previous_poll_at=s(previous) if previous is not None else None,
        written_poll_at=s(finished) if finished is not None else None,
        grace=GRACE,
        refresh=REFRESH,
        intent_window=INTENT_WINDOW,
    )


class TestEstimateEnd:
    def test_last_activity_plus_timeout_when_inside_the_sightings(self) -> None:
        end = estimate_end(
            last_active_at=s(100),
            hibernation_timeout_seconds=60,
            seen_running_at=s(120),
            seen_stopped_at=s(200),
        )
        assert end == s(160)

    def test_never_before_the_last_sighting_running(self) -> None:
        end = estimate_end(
            last_active_at=s(0),
            hibernation_timeout_seconds=60,
            seen_running_at=s(120),
            seen_stopped_at=s(200),
        )
        assert end == s(120)

    def test_never_after_the_first_sighting_stopped(self) -> None:
        end = estimate_end(
            last_active_at=s(190),
            hibernation_timeout_seconds=60,
            seen_running_at=s(120),
            seen_stopped_at=s(200),
        )
        assert end == s(200)


class TestUpstreamTier:
    def test_specs_win_over_the_credit_basis(self) -> None:
        assert upstream_tier(vm(specs={"cpu": 8, "memory": 16}, credit_basis="10")) == "Small"

    def test_the_credit_basis_when_specs_are_missing_or_unknown(self) -> None:
        assert upstream_tier(vm(specs=None, credit_basis="320")) == "XLarge"
        assert upstream_tier(vm(specs={"cpu": 3, "memory": 3}, credit_basis=" 20.0 ")) == "Micro"

    def test_unknown_when_neither_says(self) -> None:
        assert upstream_tier(vm(specs=VMSpecs().model_dump(), credit_basis="abc")) is None
        assert upstream_tier(vm(specs=None, credit_basis=None)) is None


class TestSightings:
    def test_a_listed_row_with_nothing_new_is_not_rewritten(self) -> None:
        plan = plan_for([row()], [vm()], at=100, previous=85)
        assert (plan.sightings, plan.resets, plan.missed) == ([], [], [])

    def test_the_first_sighting_since_a_start_is_written(self) -> None:
        plan = plan_for([row(last_seen_running_at=None)], [vm()], at=100, previous=85)
        assert [r.id for r, _ in plan.sightings] == ["sbx_1"]

    def test_new_activity_is_written_once_the_last_write_is_old_enough(self) -> None:
        fresh = plan_for([row()], [vm(last_active_at=s(50))], at=30, previous=15)
        assert fresh.sightings == []
        stale = plan_for([row()], [vm(last_active_at=s(50))], at=100, previous=85)
        assert [r.id for r, _ in stale.sightings] == ["sbx_1"]

    def test_a_row_missed_once_and_listed_again_is_reset(self) -> None:
        plan = plan_for([row(missed_polls=1)], [vm()], at=100, previous=85)
        assert [r.id for r, _ in plan.resets] == ["sbx_1"]

    def test_activity_is_recorded_on_the_clock_of_the_interval_corral_opened(self) -> None:
        """Corral dated the start when it sent it, 0.25 s before the upstream's session began:
        the activity is recorded as much earlier, so the estimated end (activity + timeout)
        gives the interval the upstream stretch's length, not 0.25 s more (a sixth minute)."""
        started = row(last_seen_running_at=None, upstream_last_active_at=None)
        listed = vm(session_started_at=s(0.25), last_active_at=s(0.25))
        [(_, active)] = plan_for([started], [listed], at=100, previous=85).sightings
        assert active == s(0)
        assert estimate_end(
            last_active_at=active,
            hibernation_timeout_seconds=300,
            seen_running_at=s(100),
            seen_stopped_at=s(400),
        ) - started.last_started_at == timedelta(seconds=300)  # type: ignore[operator]

    def test_another_sessions_activity_is_recorded_as_listed(self) -> None:
        started = row(last_seen_running_at=None, last_started_at=s(50))
        # A stale listing of the session before this start.
        [(_, active)] = plan_for(
            [started], [vm(session_started_at=s(0))], at=100, previous=85
        ).sightings
        assert active == s(5)

    def test_an_unwritten_sighting_is_implied_by_the_previous_poll(self) -> None:
        assert last_sighting(row(), s(85)) == s(85)
        assert last_sighting(row(missed_polls=1), s(85)) == s(10)
        # Never seen since its start: it was running when it started.
        assert last_sighting(row(last_seen_running_at=None, last_started_at=s(3)), s(85)) == s(3)


class TestMisses:
    def test_the_first_miss_records_the_implied_sighting(self) -> None:
        plan = plan_for([row()], [], at=100, previous=85)
        assert [(r.id, seen) for r, seen in plan.missed] == [("sbx_1", s(85))]
        assert plan.closing == []

    def test_a_period_that_failed_before_its_misses_implies_no_sighting(self) -> None:
        # The period at 85 polled (the VM was not listed) and failed before it wrote the
        # miss: the counter still says 0, but only the period at 70 finished.
        plan = plan_for([row()], [], at=100, previous=85, written=70)
        assert [(r.id, seen) for r, seen in plan.missed] == [("sbx_1", s(70))]
        # The stop the next miss closes is dated from that sighting: activity at 5 plus a
        # 30 s timeout is before it, so the stop is the sighting itself, not the failed poll.
        _, seen = plan.missed[0]
        missed_once = row(
            missed_polls=1,
            last_seen_running_at=seen,
            upstream_last_active_at=s(5),
            hibernation_timeout_seconds=30,
        )
        [closing] = plan_for([missed_once], [], at=115, previous=100).closing
        assert closing.ended_at == s(70)
        never_listed = row(last_seen_running_at=s(10), upstream_last_active_at=s(5))
        plan = plan_for([never_listed], [], at=100, previous=85, written=None)
        assert [seen for _, seen in plan.missed] == [s(10)]

    def test_the_second_miss_closes_between_the_sightings(self) -> None:
        missed_once = row(missed_polls=1, last_seen_running_at=s(85), upstream_last_active_at=s(5))
        plan = plan_for([missed_once], [], at=115, previous=100)
        [closing] = plan.closing
        # 5 + 300 is after the first sighting stopped (100): clamped to it.
        assert closing.ended_at == s(100)

    def test_a_fresh_start_not_yet_listed_is_not_missed(self) -> None:
        fresh = row(last_started_at=s(50), last_seen_running_at=s(10), missed_polls=1)
        plan = plan_for([fresh], [], at=100, previous=85)
        assert plan.missed == [] and plan.closing == []
        assert [r.id for r in plan.unobservable] == ["sbx_1"]

    def test_after_the_grace_an_unlisted_start_counts(self) -> None:
        old = row(last_started_at=s(0), last_seen_running_at=None)
        plan = plan_for([old], [], at=100, previous=85)
        assert [(r.id, seen) for r, seen in plan.missed] == [("sbx_1", s(0))]


class TestWokenAndUnknown:
    def test_a_session_newer_than_the_stop_here_is_a_wake(self) -> None:
        stopped = row(state="hibernated", state_changed_at=s(50))
        plan = plan_for([stopped], [vm(session_started_at=s(60))], at=100, previous=85)
        [waking] = plan.waking
        assert waking.started_at == s(60)

    def test_the_session_corral_stopped_is_a_stale_listing(self) -> None:
        stopped = row(state="hibernated", state_changed_at=s(50))
        plan = plan_for([stopped], [vm(session_started_at=s(0))], at=100, previous=85)
        assert plan.waking == []

    def test_a_session_start_in_our_future_opens_the_interval_now(self) -> None:
        stopped = row(state="shutdown", state_changed_at=s(50))
        plan = plan_for([stopped], [vm(session_started_at=s(500))], at=100, previous=85)
        assert plan.waking[0].started_at == s(100)

    def test_vms_without_a_row_are_unknown_and_pending_creates_are_listed(self) -> None:
        pending = row(
            id="sbx_2",
            upstream_id=None,
            state="starting",
            reservation_expires_at=s(200),
        )
        expired = replace(pending, id="sbx_3", reservation_expires_at=s(50))
        plan = plan_for([row(), pending, expired], [vm(), vm(id="vm9")], at=100, previous=85)
        assert [v.id for v in plan.unknown_vms] == ["vm9"]
        assert [r.id for r in plan.pending] == ["sbx_2"]
        assert [r.id for r in plan.unresolved] == ["sbx_3"]


class TestStaleness:
    def test_an_old_stop_is_trusted_even_against_an_older_session(self) -> None:
        # The upstream's clock runs behind ours: its session start predates our stop.
        stopped = row(state="hibernated", state_changed_at=s(50))
        plan = plan_for([stopped], [vm(session_started_at=s(40))], at=500, previous=485)
        assert [w.started_at for w in plan.waking] == [s(50)]

    def test_a_deleted_sandbox_in_a_stale_listing_is_not_an_orphan(self) -> None:
        deleted = row(state="deleted", state_changed_at=s(50))
        assert plan_for([deleted], [vm()], at=100, previous=85).orphans == []
        assert len(plan_for([deleted], [vm()], at=500, previous=485).orphans) == 1


class TestPendingIntents:
    """A stop, delete or resize whose outcome was never recorded left its intent behind."""

    def test_a_stop_asked_and_unrecorded_closes_as_asked_when_asked(self) -> None:
        stopping = row(
            missed_polls=1,
            last_seen_running_at=s(85),
            pending_intent="shutdown",
            pending_at=s(90),
        )
        [closing] = plan_for([stopping], [], at=115, previous=100).closing
        assert (closing.to_state, closing.ended_at) == ("shutdown", s(90))

    def test_a_stop_asked_after_the_vm_hibernated_itself_is_the_upstreams_hibernation(
        self,
    ) -> None:
        # Last active at 5 with a 60 s timeout: it hibernated itself at 65; the stop came at 90.
        late = row(
            missed_polls=1,
            last_seen_running_at=s(20),
            hibernation_timeout_seconds=60,
            pending_intent="shutdown",
            pending_at=s(90),
        )
        [closing] = plan_for([late], [], at=115, previous=100).closing
        assert (closing.to_state, closing.ended_at) == ("hibernated", s(65))

    def test_an_intent_older_than_any_call_is_dropped_and_ignored(self) -> None:
        stale = row(
            missed_polls=1,
            last_seen_running_at=s(85),
            pending_intent="shutdown",
            pending_at=s(115 - 301),
        )
        plan = plan_for([stale], [], at=115, previous=100)
        assert [r.id for r in plan.stale_intents] == ["sbx_1"]
        [closing] = plan.closing
        assert closing.to_state == "hibernated"  # the upstream's own, estimated

    def test_a_resize_asked_and_unrecorded_splits_when_asked(self) -> None:
        resizing = row(pending_intent="resize:Small", pending_at=s(50))
        small = vm(specs={"cpu": 8, "memory": 16, "storage": 20})
        [resize] = plan_for([resizing], [small], at=100, previous=85).resizing
        assert (resize.tier, resize.at) == ("Small", s(50))
        other = row(pending_intent="resize:Micro", pending_at=s(50))
        [resize] = plan_for([other], [small], at=100, previous=85).resizing
        assert resize.at == s(100), "another tier than asked: seen now"

    def test_a_tier_recorded_after_or_just_before_the_poll_is_not_split_back(self) -> None:
        """A resize Corral recorded while the period ran (the poll, taken before it reached
        the upstream, lists the old tier), or within the grace before the poll (a listing may
        be a snapshot that old): splitting back would bill the resized stretch at the old
        tier. Written earlier than that, the listed tier is news."""
        small = vm(specs={"cpu": 8, "memory": 16, "storage": 20})
        resized = row(tier="Nano", updated_at=s(100.5))
        assert plan_for([resized], [small], at=100, previous=85).resizing == []
        within_grace = row(tier="Nano", updated_at=s(100) - GRACE + timedelta(seconds=1))
        assert plan_for([within_grace], [small], at=100, previous=85).resizing == []
        settled = row(tier="Nano", updated_at=s(100) - GRACE)
        [resize] = plan_for([settled], [small], at=100, previous=85).resizing
        assert (resize.tier, resize.at) == ("Small", s(100))

    def test_a_stopped_sandbox_whose_delete_was_asked_is_looked_up(self) -> None:
        deleting = row(state="shutdown", pending_intent="deleted", pending_at=s(90))
        plan = plan_for([deleting], [], at=100, previous=85)
        assert [r.id for r in plan.deleting] == ["sbx_1"]


class TestRestartedUnseen:
    def test_a_session_begun_well_after_the_start_here_splits_at_the_estimate(self) -> None:
        # Started at 0, last active at 5, timeout 300: hibernated at 305 (after the poll at 300
        # that listed it); woken at 1000.
        running = row(
            last_started_at=s(0), last_seen_running_at=s(10), upstream_last_active_at=s(5)
        )
        [restart] = plan_for(
            [running], [vm(session_started_at=s(1000))], at=1100, previous=300
        ).restarted
        assert (restart.ended_at, restart.started_at) == (s(305), s(1000))

    def test_the_session_corral_started_is_not_a_restart(self) -> None:
        running = row(last_started_at=s(0))
        plan = plan_for([running], [vm(session_started_at=s(1))], at=100, previous=85)
        assert plan.restarted == []
