"""The price book: versions of credits per hour per tier and the USD price of a credit.

Invariants:
- versions are never edited or deleted; a change is a new version with an `effective_from`;
- a version may not take effect in the past (beyond `CLOCK_SKEW`, which forgives an admin's
  clock running slightly ahead of ours), so a new version never reprices minutes already run;
- effective_from is unique, so exactly one version is in force at any instant (the seeded
  list-price version is in force from 1970).
How intervals running across a version change are priced: see `ledger` and `amounts`.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from app.audit import service as audit
from app.errors import Conflict, Unprocessable
from app.identity.actor import Actor
from app.models import PriceBook
from app.usage import repository
from app.usage.schemas import PriceBookOut, PriceVersionIn, PriceVersionOut

CLOCK_SKEW = timedelta(seconds=60)


async def price_book(session: AsyncSession, at: datetime) -> PriceBookOut:
    versions = await repository.price_versions(session)
    current = [v for v in versions if v.effective_from <= at][-1]
    return PriceBookOut(
        at=at,
        current=PriceVersionOut.model_validate(current),
        versions=[PriceVersionOut.model_validate(v) for v in versions],
    )


async def add_version(
    session: AsyncSession, actor: Actor, body: PriceVersionIn, at: datetime
) -> PriceVersionOut:
    effective_from = body.effective_from or at
    if effective_from < at - CLOCK_SKEW:
        raise Unprocessable(
            "effective_from is in the past: a price change may not reprice time already run.",
            kind="price-in-the-past",
            extra={"effective_from": effective_from.isoformat(), "now": at.isoformat()},
        )
    # Writers queue here, so two admins cannot both pass the uniqueness check below.
    await repository.lock_price_book(session)
    if await repository.price_version_from(session, effective_from) is not None:
        raise Conflict(
            "A price-book version with this effective_from exists; versions are never edited.",
            kind="price-version-exists",
            extra={"effective_from": effective_from.isoformat()},
        )
    version = PriceBook(
        effective_from=effective_from,
        credits_per_hour={tier: str(rate) for tier, rate in body.credits_per_hour.items()},
        credit_usd=body.credit_usd,
        created_by=actor.key_id,
    )
    session.add(version)
    await session.flush()
    await session.refresh(version)
    await audit.record(
        session,
        actor=actor.key_id,
        action="price_book.create",
        team_id=None,
        target=str(version.id),
        detail={
            "effective_from": effective_from.isoformat(),
            "credits_per_hour": version.credits_per_hour,
            "credit_usd": str(body.credit_usd),
        },
    )
    return PriceVersionOut.model_validate(version)
