"""Creating sandboxes: create (fork a template, then start) and fork (of a team's sandbox).

The fork is never retried blindly: when its answer is lost, the sandbox is looked up by its
`corral-op-<operation id>` tag instead, so a lost answer never makes a second sandbox. Every
created sandbox carries that tag upstream, which is also how the reconciler finds a create whose
process died. What may be forked at all is `app.templates.service.fork_source` (DESIGN §15),
checked before anything is recorded. See `lifecycle` for the states and phases.
"""

from __future__ import annotations

import re
import secrets
import string
import uuid
from dataclasses import dataclass

from app import clock, clock_gate, metering
from app.admission import service as admission
from app.db import transaction
from app.errors import (
    InvalidState,
    OwnerMismatch,
    TeamNotFound,
    TeamRequired,
    Unprocessable,
    WrongTeam,
)
from app.identity.actor import Actor
from app.models import Sandbox
from app.runtime import Runtime
from app.sandboxes import access, lifecycle, transitions
from app.sandboxes.schemas import TAG_PATTERN, SandboxCreate, SandboxFork
from app.sandboxes.states import FINAL, SandboxState
from app.sandboxes.transitions import Audit, Birth
from app.templates import service as templates
from app.upstream.errors import UpstreamError, UpstreamNotFound, UpstreamUnavailable
from app.upstream.problems import to_problem

PRIVACY = {"public": 0, "unlisted": 1, "private": 2}
CORRAL_TAG = "corral"
_ID_ALPHABET = string.ascii_lowercase + string.digits


def new_sandbox_id() -> str:
    return "sbx_" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(12))


def operation_tag(operation_id: str) -> str:
    return f"corral-op-{operation_id}"


@dataclass(frozen=True)
class CreateSpec:
    team_id: str
    owner: str | None
    template: str
    title: str | None
    tier: str
    hibernation_timeout_seconds: int
    tags: list[str]
    privacy: str
    start: bool
    automatic_wakeup: bool


def _owner_for(actor: Actor, requested: str | None) -> str | None:
    if actor.owner is not None and requested not in (None, actor.owner):
        raise OwnerMismatch()
    return actor.owner or requested


def _team_for(actor: Actor, requested: str | None) -> str:
    if actor.is_admin:
        if requested is None:
            raise TeamRequired("owning team")
        return requested
    if requested not in (None, actor.team_id):
        raise WrongTeam("creates sandboxes for its own team")
    assert actor.team_id is not None
    return actor.team_id


def _tags(tags: list[str]) -> list[str]:
    for tag in tags:
        if not re.match(TAG_PATTERN, tag) or tag.startswith(CORRAL_TAG):
            raise Unprocessable(
                f"Tag {tag!r} is not allowed (letters, digits, _.:- ; no 'corral' prefix).",
                kind="invalid-tag",
            )
    return list(dict.fromkeys(tags))


def create_spec(rt: Runtime, actor: Actor, body: SandboxCreate) -> CreateSpec:
    return CreateSpec(
        team_id=_team_for(actor, body.team),
        owner=_owner_for(actor, body.owner),
        template=body.template or rt.settings.default_template,
        title=body.title,
        tier=body.tier or rt.settings.default_tier,
        hibernation_timeout_seconds=body.hibernation_timeout_seconds
        or rt.settings.default_hibernation_timeout_seconds,
        tags=_tags(body.tags),
        privacy=body.privacy,
        start=body.start,
        automatic_wakeup=body.automatic_wakeup,
    )


@clock_gate.operation
async def create(
    rt: Runtime, actor: Actor, spec: CreateSpec, *, action: str = "create"
) -> lifecycle.Outcome:
    """Fork the template upstream and (unless start=false) start it.

    The fork is never retried blindly: when its answer is lost, the sandbox is looked up by
    its operation tag instead, so a lost answer never makes a second sandbox."""
    operation_id = uuid.uuid4().hex
    at = clock.now()
    sandbox = Sandbox(
        id=new_sandbox_id(),
        upstream_id=None,
        team_id=spec.team_id,
        owner=spec.owner,
        title=spec.title,
        template=spec.template,
        tier=spec.tier,
        hibernation_timeout_seconds=spec.hibernation_timeout_seconds,
        privacy=PRIVACY[spec.privacy],
        automatic_wakeup=spec.automatic_wakeup,
        tags=spec.tags,
        state=SandboxState.STARTING,
        last_cause="api",
        operation_id=operation_id,
        reservation_expires_at=at + rt.settings.reservation_ttl,
        managed=True,
        missed_polls=0,
        created_at=at,
        updated_at=at,
        state_changed_at=at,
        last_started_at=None,
        last_seen_running_at=None,
        upstream_last_active_at=None,
    )
    async with transaction(rt.sessions) as session:
        # Before any record or upstream call; the same refusal whether or not the id exists.
        await templates.fork_source(
            session,
            actor,
            spec.template,
            team_id=spec.team_id,
            default_template=rt.settings.default_template,
        )
        # The reservation goes in first: no other transaction sees it before the commit,
        # and the org row's lock below is then held for less.
        born = await transitions.insert(
            session,
            [
                Birth(
                    sandbox,
                    cause="api",
                    actor=actor.key_id,
                    detail={"template": spec.template, "operation_id": operation_id},
                )
            ],
        )
        if not born:
            raise TeamNotFound(spec.team_id)
        # The org row, then the meter's charge, which the org row serialises, then the
        # decision: one lock, held for the charge, the counts and the commit.
        held = await admission.hold(session, spec.team_id)
        charge = await metering.charge(
            session, rt.settings, actor, spec.team_id, metering.creating(spec.start), held=held
        )
        if spec.start:
            await admission.admit(
                session,
                held,
                owner=spec.owner,
                tier=spec.tier,
                action=action,
                at=at,
                timezone=rt.settings.budget_timezone,
                reserved=sandbox.id,
            )

    fork, err = await lifecycle.call_upstream(
        lambda: rt.upstream.fork(
            spec.template,
            title=spec.title,
            privacy=PRIVACY[spec.privacy],
            private_preview=spec.privacy == "private",
            tags=[*spec.tags, CORRAL_TAG, operation_tag(operation_id)],
            path="/corral",
        )
    )
    upstream_id: str | None = fork.id if fork is not None else None
    if err is not None:
        if isinstance(err, UpstreamUnavailable) and err.maybe_applied:
            upstream_id, lookup_failed = await _find_by_operation(rt, operation_id)
            if upstream_id is None and lookup_failed:
                await metering.refund(rt.engine, charge, err)
                await _settle_create_failure(
                    rt, actor, sandbox.id, err, to_state=SandboxState.UNKNOWN
                )
                raise to_problem(err, sandbox_id=sandbox.id)
        if upstream_id is None:
            await metering.refund(rt.engine, charge, err)
            await _settle_create_failure(rt, actor, sandbox.id, err, to_state=SandboxState.FAILED)
            if isinstance(err, UpstreamNotFound):
                raise Unprocessable(
                    f"Template {spec.template!r} does not exist upstream.",
                    kind="template-not-found",
                )
            raise to_problem(err, sandbox_id=sandbox.id)

    assert upstream_id is not None
    if spec.start:
        return await lifecycle.start_reserved(
            rt,
            actor,
            sandbox,
            action="sandbox.create",
            revert_to=None,
            upstream_id=upstream_id,
            charged=charge.of(metering.Work.START),
        )
    async with transaction(rt.sessions) as session:
        sandbox = await lifecycle.reload(session, sandbox.id)
        await transitions.move(
            session,
            sandbox,
            SandboxState.SHUTDOWN,
            cause="api",
            actor=actor.key_id,
            upstream_id=upstream_id,
            audit=Audit("sandbox.create", {"upstream_id": upstream_id, "start": False}),
        )
    return lifecycle.Outcome(sandbox)


@clock_gate.operation
async def fork(rt: Runtime, actor: Actor, source_id: str, body: SandboxFork) -> lifecycle.Outcome:
    async with transaction(rt.sessions) as session:
        source = await access.load(session, actor, source_id)
        if source.upstream_id is None or source.state in FINAL:
            raise InvalidState(source_id, source.state, cannot="be forked")
    spec = CreateSpec(
        team_id=source.team_id,
        owner=_owner_for(actor, body.owner) or source.owner,
        template=source.upstream_id,
        title=body.title,
        tier=body.tier or source.tier,
        hibernation_timeout_seconds=body.hibernation_timeout_seconds
        or source.hibernation_timeout_seconds,
        tags=_tags(body.tags),
        privacy=body.privacy,
        start=body.start,
        automatic_wakeup=body.automatic_wakeup,
    )
    return await create(rt, actor, spec, action="fork")


async def _find_by_operation(rt: Runtime, operation_id: str) -> tuple[str | None, bool]:
    """The upstream id of the sandbox created under this operation: (id, lookup_failed)."""
    try:
        page = await rt.upstream.list_sandboxes(tags=[operation_tag(operation_id)], page_size=50)
    except UpstreamError:
        return None, True
    for found in page.sandboxes:
        if operation_tag(operation_id) in found.tags:
            return found.id, False
    return None, False


async def _settle_create_failure(
    rt: Runtime, actor: Actor, sandbox_id: str, err: UpstreamError, *, to_state: SandboxState
) -> None:
    async with transaction(rt.sessions) as session:
        sandbox = await lifecycle.reload(session, sandbox_id)
        await transitions.move(
            session,
            sandbox,
            to_state,
            cause="api",
            actor=actor.key_id,
            detail={"error": err.operation, "upstream_status": err.status},
            audit=Audit(
                "sandbox.create",
                {"upstream_status": err.status, "state": str(to_state)},
                outcome="error",
            ),
        )
