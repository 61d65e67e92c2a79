"""Webhook secrets and signatures, per the Standard Webhooks spec, by its reference library.

A secret is `whsec_` + base64 of 24 random bytes, the form the `standardwebhooks` library
reads. While a rotated-out secret is inside its overlap, each delivery carries both
signatures (space-separated in `webhook-signature`), so a receiver still holding the old
secret keeps verifying until it has the new one.

`webhook-timestamp` is the wall-clock moment of sending, not Corral's (possibly simulated)
clock: receivers reject a timestamp more than five minutes from their own clock, to refuse
replays. When the event happened is in the body.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Sequence
from datetime import datetime

from standardwebhooks import Webhook

PREFIX = "whsec_"


def new_secret() -> str:
    return PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


def headers(
    secrets_: Sequence[str], *, message_id: str, sent_at: datetime, body: str
) -> dict[str, str]:
    """The three Standard Webhooks headers for one attempt, signed with every given secret."""
    signatures = [
        Webhook(secret).sign(msg_id=message_id, timestamp=sent_at, data=body) for secret in secrets_
    ]
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(sent_at.timestamp())),
        "webhook-signature": " ".join(signatures),
    }
