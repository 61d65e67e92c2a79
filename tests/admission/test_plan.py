"""`quota.set_plan`: the org plan and its audit row, in the caller's transaction."""

from __future__ import annotations

from sqlalchemy import select

from app.admission import quota
from app.admission.schemas import PlanIn
from app.db import transaction
from app.identity.actor import Actor
from app.models import AuditEntry, OrgPlan
from app.runtime import Runtime

ADMIN = Actor(key_id="admin-1", team_id=None, scopes=frozenset({"admin"}), is_admin=True)


class TestSetPlan:
    async def test_writes_the_plan_and_its_audit_row_together(self, runtime: Runtime) -> None:
        async with transaction(runtime.sessions) as session:
            out = await quota.set_plan(session, ADMIN, PlanIn(plan="build"))
        assert (out.plan, out.plan_limit) == ("build", 10)
        async with transaction(runtime.sessions) as session:
            [row] = await session.scalars(
                select(AuditEntry).where(AuditEntry.action == "plan.update")
            )
        assert (row.actor, row.target, row.detail) == (
            "admin-1",
            "org",
            {"plan": "build", "limit": 10},
        )

    async def test_commits_neither_itself(self, runtime: Runtime) -> None:
        async with runtime.sessions() as session, session.begin():
            await quota.set_plan(session, ADMIN, PlanIn(plan="build"))
            await session.rollback()
        async with transaction(runtime.sessions) as session:
            plan = await session.get(OrgPlan, 1)
            audited = list(await session.scalars(select(AuditEntry)))
        assert plan is not None and plan.plan == "scale"
        assert audited == []
