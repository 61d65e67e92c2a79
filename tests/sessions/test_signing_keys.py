"""Browser-token signing keys: PyJWT with a strict reading of the token, keys derived from a
root the database never holds, and rotation with an overlap that signs nobody out."""

from __future__ import annotations

import base64
import json
import stat
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from pydantic import SecretStr
from sqlalchemy import inspect, select

from app import clock
from app.main import create_app
from app.models import Base, BrowserTokenKey
from app.runtime import Runtime
from app.sessions import signing_keys, tokens
from app.sessions.signing_keys import KeyRing, Root
from app.settings import Settings
from tests.fixtures import factories

ADMIN = factories.ADMIN
KEYS = "/v1/admin/browser-token-keys"


async def _issue(client: httpx.AsyncClient, headers: dict[str, str], sandbox_id: str) -> str:
    response = await client.post(
        f"/v1/sandboxes/{sandbox_id}/browser-tokens",
        json={"user": "alice", "permission": "write", "ttl_seconds": 900},
        headers=headers,
    )
    assert response.status_code == 201, response.text
    token: str = response.json()["token"]
    return token


async def _trade(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.post("/v1/browser/session", headers={"Authorization": f"Bearer {token}"})


async def _setup(client: httpx.AsyncClient) -> tuple[dict[str, str], dict[str, Any], str]:
    headers = await factories.team_with_key(client)
    sandbox = await factories.sandbox(client, headers)
    return headers, sandbox, await _issue(client, headers, sandbox["id"])


async def _advance(client: httpx.AsyncClient, seconds: float) -> None:
    response = await client.post(
        "/v1/admin/clock/advance", json={"seconds": seconds}, headers=ADMIN
    )
    assert response.status_code == 200, response.text


def _kid(token: str) -> str:
    kid: str = jwt.get_unverified_header(token)["kid"]
    return kid


def _claims(token: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims


def _replica(runtime: Runtime, settings: Settings | None = None) -> Runtime:
    """Another replica: the same database, its own key ring."""
    return replace(runtime, settings=settings or runtime.settings, browser_token_keys=None)


def _client(runtime: Runtime) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(runtime=runtime)), base_url="http://b"
    )


class TestStrictReading:
    async def test_a_respelt_token_is_refused_though_pyjwt_accepts_one(
        self, client: httpx.AsyncClient, runtime: Runtime, sim: httpx.AsyncClient
    ) -> None:
        _, _, token = await _setup(client)
        head, body, signature = token.split(".")
        # 32 bytes take 43 characters, whose last carries 2 unused bits: flipping the lowest
        # one spells the same signature differently.
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        stray_bits = f"{head}.{body}.{signature[:-1]}{alphabet[alphabet.index(signature[-1]) ^ 1]}"
        padded = f"{token}="
        key = await tokens.signing_key(runtime)
        # PyJWT alone takes a padded signature: this is why Corral reads the segments first.
        lenient = jwt.decode(
            padded,
            key.secret,
            algorithms=["HS256"],
            audience=tokens.AUDIENCE,
            options={"verify_exp": False, "verify_iat": False},
        )
        assert lenient["sub"] == "alice"
        for forged in (
            padded,
            stray_bits,
            f"{head}.{body}=.{signature}",
            f"{head}=.{body}.{signature}",
        ):
            assert forged != token
            response = await _trade(client, forged)
            assert response.status_code == 401, forged
            assert response.json()["detail"] == "The browser token is malformed."
        assert (await _trade(client, token)).status_code == 200

    async def test_only_corrals_hs256_tokens_for_this_service_with_every_claim_verify(
        self, client: httpx.AsyncClient, runtime: Runtime, sim: httpx.AsyncClient
    ) -> None:
        _, _, token = await _setup(client)
        key = await tokens.signing_key(runtime)
        claims = _claims(token)

        def signed(payload: dict[str, Any], **headers: Any) -> str:
            return jwt.encode(
                payload, key.secret, algorithm="HS256", headers={"kid": key.kid, **headers}
            )

        forged = {
            "wrong audience": signed({**claims, "aud": "someone-else"}),
            "audience list": signed({**claims, "aud": [tokens.AUDIENCE, "x"]}),
            "wrong issuer": signed({**claims, "iss": "not-corral"}),
            "no jti": signed({k: v for k, v in claims.items() if k != "jti"}),
            "no exp": signed({k: v for k, v in claims.items() if k != "exp"}),
            "no key": signed({k: v for k, v in claims.items() if k != "key"}),
            "bad permission": signed({**claims, "perm": "admin"}),
            "string exp": signed({**claims, "exp": str(claims["exp"])}),
            "extra header": signed(claims, jku="https://evil.example/keys"),
            "unknown kid": jwt.encode(
                claims, key.secret, algorithm="HS256", headers={"kid": "0" * 16}
            ),
            "no kid": jwt.encode(claims, key.secret, algorithm="HS256"),
            # HS512 wants a 64-byte key; what matters is that the algorithm is refused.
            "HS512": jwt.encode(
                claims, key.secret * 2, algorithm="HS512", headers={"kid": key.kid}
            ),
            "alg none": jwt.encode(claims, None, algorithm="none", headers={"kid": key.kid}),
            "expired": signed(
                {**claims, "exp": int(clock.now().timestamp()) - 1, "iat": claims["iat"] - 900}
            ),
        }
        for name, forgery in forged.items():
            response = await _trade(client, forgery)
            assert response.status_code == 401, name
            assert response.json()["type"].endswith("invalid-browser-token"), name
        # The same key and claims, signed as Corral signs them, do verify.
        assert (await _trade(client, signed(claims))).status_code == 200

    async def test_pyjwt_never_sees_alg_none_even_past_the_header_check(
        self, runtime: Runtime, client: httpx.AsyncClient, sim: httpx.AsyncClient
    ) -> None:
        """The header check is a courtesy; `algorithms=["HS256"]` is what refuses."""
        _, _, token = await _setup(client)
        key = await tokens.signing_key(runtime)
        unsigned = jwt.encode(_claims(token), None, algorithm="none", headers={"kid": key.kid})
        with pytest.raises(jwt.InvalidAlgorithmError):
            jwt.decode(unsigned, key.secret, algorithms=[tokens.ALGORITHM])


class TestNoStoredSecret:
    async def test_nothing_in_a_database_dump_forges_a_token(
        self, client: httpx.AsyncClient, runtime: Runtime, sim: httpx.AsyncClient
    ) -> None:
        headers, sandbox, token = await _setup(client)
        assert (await client.post(f"{KEYS}/rotate", headers=ADMIN)).status_code == 201
        other = await factories.sandbox(client, headers)
        # Every value of every row of every table, as an attacker with a dump holds them.
        cells: set[bytes] = set()
        async with runtime.sessions() as session:
            for table in Base.metadata.sorted_tables:
                for row in (await session.execute(select(table))).all():
                    for value in row:
                        cells |= _secrets_in(value)
            keys = (await session.scalars(select(BrowserTokenKey))).all()
        assert len(keys) == 2 and all(k.salt in cells for k in keys)
        claims = {**_claims(token), "sbx": other["id"]}
        payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
        candidates = set(cells)
        # Also the derivation itself, with any stored value taken for the root.
        for row in keys:
            for cell in cells:
                for source in ("browser-token-secret", "admin-key", "data-dir"):
                    candidates.add(signing_keys.derive(Root(source, cell), row.kid, row.salt))
        verifying = await signing_keys.ring_of(runtime).verifying(runtime)
        assert tokens.decode(token, verifying, at=clock.now()).sbx == sandbox["id"]
        # The header a page already holds, and one naming each stored key id.
        headers = {token.split(".")[0]} | {
            _b64(json.dumps({"alg": "HS256", "kid": row.kid, "typ": "JWT"}).encode())
            for row in keys
        }
        for head in headers:
            signing_input = f"{head}.{payload}"
            for secret in candidates:
                forged = f"{signing_input}.{_b64(_hmac(secret, signing_input))}"
                with pytest.raises(tokens.InvalidToken, match="signature"):
                    tokens.decode(forged, verifying, at=clock.now())
            # And through the API, with every raw stored value as the key.
            for secret in cells:
                forged = f"{signing_input}.{_b64(_hmac(secret, signing_input))}"
                assert (await _trade(client, forged)).status_code == 401

    async def test_the_table_of_plaintext_secrets_is_gone(self, runtime: Runtime) -> None:
        async with runtime.engine.connect() as conn:
            names = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
        assert "browser_token_keys" in names and "signing_secrets" not in names

    async def test_replicas_need_the_same_root_not_just_the_same_database(
        self, client: httpx.AsyncClient, runtime: Runtime, settings: Settings
    ) -> None:
        _, _, token = await _setup(client)
        same = _replica(runtime)
        elsewhere = _replica(
            runtime,
            settings.model_copy(update={"browser_token_secret": SecretStr("r" * 40)}),
        )
        async with _client(same) as b, _client(elsewhere) as c:
            assert (await _trade(b, token)).status_code == 200
            refused = await _trade(c, token)
        # A changed root invalidates outstanding tokens (README: Browser tokens).
        assert refused.status_code == 401
        assert "signature" in refused.json()["detail"]


def _secrets_in(value: object) -> set[bytes]:
    if isinstance(value, bytes):
        return {value, value.hex().encode()}
    if isinstance(value, str):
        return {value.encode()}
    if isinstance(value, dict):
        return {s for v in value.values() for s in _secrets_in(v)} | {
            s for k in value for s in _secrets_in(k)
        }
    if isinstance(value, list):
        return {s for v in value for s in _secrets_in(v)}
    return set()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _hmac(secret: bytes, text: str) -> bytes:
    import hashlib
    import hmac

    return hmac.new(secret, text.encode(), hashlib.sha256).digest()


class TestRoot:
    def test_the_configured_secret_comes_first_then_the_admin_key(
        self, settings: Settings, tmp_path: Path
    ) -> None:
        configured = settings.model_copy(update={"browser_token_secret": SecretStr("s" * 40)})
        assert signing_keys.root_of(configured) == Root("browser-token-secret", b"s" * 40)
        assert signing_keys.root_of(settings).source == "admin-key"
        # The same text as a different setting derives different keys.
        a = signing_keys.derive(Root("browser-token-secret", b"x" * 40), "k", b"salt")
        b = signing_keys.derive(Root("admin-key", b"x" * 40), "k", b"salt")
        assert a != b and len(a) == 32

    def test_without_either_a_private_root_is_made_once_in_the_data_dir(
        self, settings: Settings, tmp_path: Path
    ) -> None:
        bare = settings.model_copy(update={"admin_key": None, "data_dir": tmp_path / "data"})
        first = signing_keys.root_of(bare)
        assert first.source == "data-dir" and len(first.secret) == 64
        path = tmp_path / "data" / signing_keys.ROOT_FILE
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert signing_keys.root_of(bare) == first
        assert [p.name for p in path.parent.iterdir()] == [signing_keys.ROOT_FILE]


class TestRotation:
    def test_the_timeline_outlasts_the_cache_and_the_token_lifetime(self) -> None:
        assert signing_keys.ACTIVATION_SECONDS > signing_keys.KEY_CACHE_SECONDS
        assert signing_keys.RETIREMENT_SECONDS >= (
            signing_keys.MAX_TOKEN_TTL_SECONDS + signing_keys.KEY_CACHE_SECONDS
        )

    async def test_a_rotation_signs_nobody_out(
        self, client: httpx.AsyncClient, runtime: Runtime, sim: httpx.AsyncClient
    ) -> None:
        headers, sandbox, before = await _setup(client)
        old = _kid(before)
        rotated = await client.post(f"{KEYS}/rotate", headers=ADMIN)
        assert rotated.status_code == 201, rotated.text
        new = rotated.json()
        assert new["state"] == "pending" and new["kid"] != old
        activates_at = datetime.fromisoformat(new["activates_at"])
        assert activates_at - clock.now() > timedelta(seconds=signing_keys.KEY_CACHE_SECONDS)
        listed = {k["kid"]: k for k in (await client.get(KEYS, headers=ADMIN)).json()}
        assert listed[old]["state"] == "signing"
        retires_at = datetime.fromisoformat(listed[old]["retires_at"])
        assert retires_at == activates_at + timedelta(seconds=signing_keys.RETIREMENT_SECONDS)

        # Until the new key activates, the old one signs; then the new one does.
        assert _kid(await _issue(client, headers, sandbox["id"])) == old
        await _advance(client, (activates_at - clock.now()).total_seconds() + 1)
        after = await _issue(client, headers, sandbox["id"])
        assert _kid(after) == new["kid"]
        listed = {k["kid"]: k for k in (await client.get(KEYS, headers=ADMIN)).json()}
        assert (listed[old]["state"], listed[new["kid"]]["state"]) == ("verifying", "signing")

        # A token signed just before the switch keeps working until it expires.
        last_old = await _issue(client, headers, sandbox["id"])
        assert _kid(last_old) == new["kid"]
        assert (await _trade(client, before)).status_code == 200
        expires = datetime.fromtimestamp(_claims(before)["exp"]).astimezone()
        await _advance(client, (expires - clock.now()).total_seconds() - 2)
        assert (await _trade(client, before)).status_code == 200
        assert (await _trade(client, after)).status_code == 200

        # Past its retirement the old key verifies nothing, even an unexpired token.
        old_key = next(k for k in await _ring_keys(runtime) if k.kid == old)
        await _advance(client, (retires_at - clock.now()).total_seconds() + 1)
        fresh = {**_claims(before), "exp": int(clock.now().timestamp()) + 600}
        late = jwt.encode(fresh, old_key.secret, algorithm="HS256", headers={"kid": old})
        response = await _trade(client, late)
        assert response.status_code == 401
        assert "retired" in response.json()["detail"]
        listed = {k["kid"]: k for k in (await client.get(KEYS, headers=ADMIN)).json()}
        assert listed[old]["state"] == "retired"

    async def test_every_replica_accepts_a_new_key_before_any_signs_with_it(
        self, client: httpx.AsyncClient, runtime: Runtime, sim: httpx.AsyncClient
    ) -> None:
        headers, sandbox, _ = await _setup(client)
        other = _replica(runtime)
        async with _client(other) as b:
            # Replica b has the key set cached from before the rotation.
            before = await _issue(client, headers, sandbox["id"])
            assert (await _trade(b, before)).status_code == 200
            assert other.browser_token_keys is not None
            new = (await client.post(f"{KEYS}/rotate", headers=ADMIN)).json()
            activates_at = datetime.fromisoformat(new["activates_at"])
            stale = await other.browser_token_keys.verifying(other)
            assert new["kid"] not in stale
            # One cache period on, still before the activation, b accepts the new key.
            await _advance(client, signing_keys.KEY_CACHE_SECONDS)
            assert clock.now() < activates_at
            assert new["kid"] in await other.browser_token_keys.verifying(other)
            await _advance(client, (activates_at - clock.now()).total_seconds())
            signed_by_a = await _issue(client, headers, sandbox["id"])
            assert _kid(signed_by_a) == new["kid"]
            assert (await _trade(b, signed_by_a)).status_code == 200
            signed_by_b = await _issue(b, headers, sandbox["id"])
            assert _kid(signed_by_b) == new["kid"]
            assert (await _trade(client, signed_by_b)).status_code == 200

    async def test_the_first_key_signs_at_once_and_replicas_share_it(
        self, client: httpx.AsyncClient, runtime: Runtime, sim: httpx.AsyncClient
    ) -> None:
        assert (await client.get(KEYS, headers=ADMIN)).json() == []
        _, _, token = await _setup(client)
        async with _client(_replica(runtime)) as b:
            assert (await _trade(b, token)).status_code == 200
        [only] = (await client.get(KEYS, headers=ADMIN)).json()
        assert only["kid"] == _kid(token) and only["state"] == "signing"
        assert set(only) == {"kid", "state", "created_at", "activates_at", "retires_at"}

    async def test_rotation_is_audited_and_for_admins_only(
        self, client: httpx.AsyncClient, sim: httpx.AsyncClient
    ) -> None:
        team = await factories.team_with_key(client)
        assert (await client.post(f"{KEYS}/rotate", headers=team)).status_code == 403
        assert (await client.get(KEYS, headers=team)).status_code == 403
        first = (await client.post(f"{KEYS}/rotate", headers=ADMIN)).json()
        assert first["state"] == "signing"  # nothing to overlap with
        second = (await client.post(f"{KEYS}/rotate", headers=ADMIN)).json()
        assert second["state"] == "pending"
        audit = await client.get(
            "/v1/admin/audit", params={"action": "browser_token_key.rotate"}, headers=ADMIN
        )
        rows = audit.json()["items"]
        assert [r["target"] for r in rows] == [second["kid"], first["kid"]]
        assert rows[0]["detail"]["retiring"] == [first["kid"]]


async def _ring_keys(runtime: Runtime) -> list[signing_keys.SigningKey]:
    ring = KeyRing(runtime.settings)
    async with runtime.sessions() as session:
        rows = (await session.scalars(select(BrowserTokenKey))).all()
    return [
        signing_keys.SigningKey(
            kid=r.kid,
            secret=signing_keys.derive(ring.root, r.kid, r.salt),
            activates_at=r.activates_at,
            retires_at=r.retires_at,
        )
        for r in rows
    ]
