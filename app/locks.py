"""Every Postgres advisory-lock key Corral takes, in one registry.

Advisory locks live in one key space per database, shared by every feature and every replica:
two features that pick the same number serialise each other by accident, and a `try` lock of
one then silently skips its work while the other runs (the budget job and the reconcile period
once shared 724004). So every key is a member of `Lock`, `@unique` refuses a repeated value at
import, and a new lock takes the next free number here rather than a literal at its call site.

    MIGRATIONS        724001  xact   `db.migrate`: one replica upgrades the schema at a time
    ADMIN_BOOTSTRAP   724002  xact   `main.bootstrap_admin_key`: one replica issues the first
                                     admin key
    RECONCILE_LEADER  724003  session `reconcile.leader.Leadership`: the one reconcile leader,
                                     held for as long as it leads
    RECONCILE_PERIOD  724004  session `reconcile.leader.period_lock`: one reconcile period at a
                                     time, the leader's or one run by hand
    BUDGET_ENFORCE    724005  session `usage.budget.enforce_budgets`: one budget job at a time
    SESSION_RATE      724006  xact   `sessions.repository.lock_user`: the first half of the
                                     two-int key (class, hashtext(team:user)) serialising one
                                     user's session mints
    CLOCK_GATE        724007  session `clock_gate.turn` (shared, each upstream call that dates
                                     a move) and `operations.clock.advance` (exclusive, the
                                     jump of a simulated clock): no call spans a jump
    UPSTREAM_WORK     724008  xact   `metering.charge`: the first half of the two-int keys
                                     (class, team) and (class, key) serialising the count and
                                     the insert of one team's and one key's sessions (forks
                                     and starts are serialised by the org row instead)

Postgres keeps one-bigint and two-int keys apart, so `SESSION_RATE` and `UPSTREAM_WORK` could
not collide with the others; each still takes a distinct value so that each number has exactly
one meaning.
"""

from __future__ import annotations

from enum import IntEnum, unique


@unique
class Lock(IntEnum):
    MIGRATIONS = 724001
    ADMIN_BOOTSTRAP = 724002
    RECONCILE_LEADER = 724003
    RECONCILE_PERIOD = 724004
    BUDGET_ENFORCE = 724005
    SESSION_RATE = 724006
    CLOCK_GATE = 724007
    UPSTREAM_WORK = 724008
