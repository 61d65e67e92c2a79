"""Request and response shapes of the session routes.

`SandboxSessionOut` is, field for field, the `SandboxSession` type of `@codesandbox/sdk` 2.4.2
(`dist/esm/types.d.ts`), which the browser SDK's `connectToSandbox({session})` takes; the
TypeScript check in `tests/node/session-type.ts` holds a recorded answer against that type."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from app.inputs import Owner, RequestBody

Permission = Literal["read", "write"]
# Any printable string a team uses for a person (an email, an internal id): an owner's rules.
User = Owner
# A browser token lives at most 15 minutes (DESIGN §6).
MAX_TOKEN_TTL_SECONDS = 900


class SessionCreate(RequestBody):
    user: User
    permission: Permission = "write"


class SandboxSessionOut(BaseModel):
    """Exactly the SDK's `SandboxSession` (without the optional hostToken)."""

    sandboxId: str
    sessionId: str
    isPint: Literal[False] = False
    bootupType: Literal["RUNNING", "CLEAN", "RESUME", "FORK"]
    cluster: str
    pitcherURL: str
    # A live credential: kept out of reprs, so no traceback or debug print shows it.
    pitcherToken: str = Field(repr=False)
    userWorkspacePath: str
    workspacePath: str
    pitcherVersion: str
    latestPitcherVersion: str
    pitcherManagerVersion: str


class SessionRecordOut(BaseModel):
    """One minted session as recorded: who, for whom, with what, when; never the token."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    sandbox_id: str
    team_id: str
    user: str
    session_id: str
    permission: str
    key_id: str | None
    via: str
    bootup_type: str | None
    minted_at: datetime


class SessionRecordPage(BaseModel):
    items: list[SessionRecordOut]
    next_cursor: str | None = None


class BrowserTokenCreate(RequestBody):
    user: User
    permission: Permission = "write"
    ttl_seconds: int = Field(default=MAX_TOKEN_TTL_SECONDS, ge=1, le=MAX_TOKEN_TTL_SECONDS)


class BrowserTokenOut(BaseModel):
    token: str
    token_type: Literal["Bearer"] = "Bearer"
    sandbox_id: str
    user: str
    permission: Permission
    expires_at: datetime


class BrowserSessionRequest(RequestBody):
    """What a page may send with its browser token: the sandbox it thinks it is reconnecting
    to (Corral's id or the upstream id that `getSession(sandboxId)` receives)."""

    sandbox_id: str | None = Field(default=None, max_length=64)
