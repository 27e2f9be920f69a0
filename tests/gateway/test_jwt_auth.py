"""JWT authentication: tokens from an identity provider are verified against its JWKS, file or URL.

The identity provider is a real HTTP server in a thread serving the JWKS (nothing else here
speaks the protocol); keys are made in the test with `cryptography`.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from ragline.config import ConfigError, load_config
from ragline.errors import Unauthenticated, Unavailable
from ragline_gateway import jwt_auth
from ragline_gateway.config import GatewayConfig
from ragline_gateway.jwt_auth import JwtVerifier
from ragline_gateway.principal import Principal, Role

ISSUER = "https://idp.example.test/"
AUDIENCE = "ragline"


def claims(**overrides: Any) -> dict[str, Any]:
    """A valid token's claims, with `overrides` (None leaves a claim out)."""
    now = int(time.time())
    base = {"iss": ISSUER, "aud": AUDIENCE, "sub": "service-a", "exp": now + 300, "iat": now}
    merged = {**base, "tenant": "acme", "role": "writer", **overrides}
    return {k: v for k, v in merged.items() if v is not None}


class Signer:
    """A key pair of the identity provider: signs tokens, and shows its public half as a JWK."""

    def __init__(self, kid: str, kind: str = "RS256") -> None:
        self.kid = kid
        self.algorithm = kind
        if kind == "RS256":
            self.private: Any = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            self.jwk = RSAAlgorithm.to_jwk(self.private.public_key(), as_dict=True)
        else:
            self.private = ec.generate_private_key(ec.SECP256R1())
            self.jwk = ECAlgorithm.to_jwk(self.private.public_key(), as_dict=True)
        self.jwk.update(kid=kid, use="sig", alg=kind)

    def token(self, **overrides: Any) -> str:
        return jwt.encode(
            claims(**overrides), self.private, algorithm=self.algorithm, headers={"kid": self.kid}
        )


class IdentityProvider:
    """An HTTP server serving a JWKS at /jwks.json, counting the fetches."""

    def __init__(self, signers: list[Signer]) -> None:
        self.keys = [s.jwk for s in signers]
        self.fetches = 0
        self.delay = 0.0
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                provider.fetches += 1
                time.sleep(provider.delay)
                body = json.dumps({"keys": provider.keys}).encode()
                self.send_response(200 if self.path == "/jwks.json" else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/jwks.json"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def signer() -> Signer:
    return Signer("key-1")


@pytest.fixture
def idp(signer: Signer) -> Iterator[IdentityProvider]:
    provider = IdentityProvider([signer])
    yield provider
    provider.close()


def config(**env: str) -> GatewayConfig:
    base = {"GATEWAY_JWT_ISSUER": ISSUER, "GATEWAY_JWT_AUDIENCE": AUDIENCE}
    return load_config(GatewayConfig, environ={**base, **env})


def url_verifier(idp: IdentityProvider, **env: str) -> JwtVerifier:
    verifier = JwtVerifier.from_config(config(GATEWAY_JWT_JWKS_URL=idp.url, **env))
    assert verifier is not None
    return verifier


async def refused(verifier: JwtVerifier, token: str) -> str:
    with pytest.raises(Unauthenticated) as raised:
        await verifier.principal(token)
    assert token not in raised.value.message
    return raised.value.message


async def test_a_valid_token_names_its_tenant_role_and_subject(idp: IdentityProvider, signer: Signer) -> None:
    verifier = url_verifier(idp)
    assert await verifier.principal(signer.token()) == Principal("acme", Role.WRITER, "service-a")
    # The key set is kept: more tokens cost no fetch.
    assert await verifier.principal(signer.token(role="admin", sub="ops")) == Principal(
        "acme", Role.ADMIN, "ops"
    )
    assert idp.fetches == 1


async def test_expired_wrong_issuer_wrong_audience_and_missing_claims_are_refused(
    idp: IdentityProvider, signer: Signer
) -> None:
    verifier = url_verifier(idp)
    now = int(time.time())
    assert "expired" in await refused(verifier, signer.token(exp=now - 120))
    # Within the leeway (30 s by default) a token just expired is still accepted.
    await verifier.principal(signer.token(exp=now - 5))
    assert "not valid yet" in await refused(verifier, signer.token(nbf=now + 600))
    assert "GATEWAY_JWT_ISSUER" in await refused(verifier, signer.token(iss="https://evil.test/"))
    assert "GATEWAY_JWT_AUDIENCE" in await refused(verifier, signer.token(aud="someone-else"))
    assert "'exp' claim" in await refused(verifier, signer.token(exp=None))
    assert "'sub' claim" in await refused(verifier, signer.token(sub=None))
    assert "GATEWAY_JWT_TENANT_CLAIM" in await refused(verifier, signer.token(tenant=None))
    assert "1 to 128 characters" in await refused(verifier, signer.token(tenant=["a", "b"]))
    message = await refused(verifier, signer.token(role="superuser"))
    assert "reader, writer or admin" in message and "superuser" in message
    assert "GATEWAY_JWT_ROLE_CLAIM" in await refused(verifier, signer.token(role=None))


async def test_role_lists_and_nested_claims_are_understood(idp: IdentityProvider, signer: Signer) -> None:
    verifier = url_verifier(idp, GATEWAY_JWT_TENANT_CLAIM="org.id", GATEWAY_JWT_ROLE_CLAIM="roles")
    token = signer.token(org={"id": "globex"}, roles=["offline_access", "reader", "writer"])
    assert await verifier.principal(token) == Principal("globex", Role.WRITER, "service-a")


async def test_a_token_signed_by_another_key_or_with_alg_none_is_refused(
    idp: IdentityProvider, signer: Signer
) -> None:
    verifier = url_verifier(idp)
    impostor = Signer("key-1")  # claims the provider's key id, signs with its own key
    assert "signature does not verify" in await refused(verifier, impostor.token())
    unsigned = jwt.encode(
        claims(),
        None,
        algorithm="none",
        headers={"kid": "key-1"},
    )
    assert "'none'" in await refused(verifier, unsigned)
    # HS256 (the confusion attack keys it with the provider's public key) is not an accepted algorithm.
    forged = jwt.encode(
        claims(),
        "s" * 32,
        algorithm="HS256",
        headers={"kid": "key-1"},
    )
    assert "'HS256'" in await refused(verifier, forged)
    assert "neither a Ragline API key" in await refused(verifier, "not-a-jwt")


async def test_an_es256_key_verifies_es256_tokens_only(signer: Signer) -> None:
    ec_signer = Signer("ec-1", "ES256")
    provider = IdentityProvider([signer, ec_signer])
    try:
        verifier = url_verifier(provider)
        assert (await verifier.principal(ec_signer.token())).tenant == "acme"
        # An RS256 token claiming the EC key's id: the key's own algorithm decides, not the header.
        mislabelled = jwt.encode(
            claims(),
            signer.private,
            algorithm="RS256",
            headers={"kid": "ec-1"},
        )
        await refused(verifier, mislabelled)
    finally:
        provider.close()


async def test_a_rotated_key_is_fetched_once_and_made_up_key_ids_do_not_hammer_the_provider(
    idp: IdentityProvider, signer: Signer, monkeypatch: pytest.MonkeyPatch
) -> None:
    verifier = url_verifier(idp)
    await verifier.principal(signer.token())
    rotated = Signer("key-2")
    idp.keys = [signer.jwk, rotated.jwk]
    # Within the cooldown an unknown key id does not cause a fetch.
    assert "'key-2', which is not in the JWKS" in await refused(verifier, rotated.token())
    assert idp.fetches == 1
    monkeypatch.setattr(jwt_auth, "REFRESH_COOLDOWN_SECONDS", 0.0)
    assert (await verifier.principal(rotated.token())).credential_id == "service-a"
    assert idp.fetches == 2
    await refused(verifier, Signer("made-up").token())
    monkeypatch.setattr(jwt_auth, "REFRESH_COOLDOWN_SECONDS", 30.0)
    for _ in range(5):
        await refused(verifier, Signer("made-up").token())
    assert idp.fetches == 3


async def test_an_unreachable_provider_is_unavailable_not_unauthenticated(signer: Signer) -> None:
    provider = IdentityProvider([signer])
    url = provider.url
    provider.close()
    verifier = JwtVerifier.from_config(config(GATEWAY_JWT_JWKS_URL=url, GATEWAY_JWT_JWKS_TIMEOUT_SECONDS="1"))
    assert verifier is not None
    with pytest.raises(Unavailable, match="GATEWAY_JWT_JWKS_URL"):
        await verifier.principal(signer.token())


async def test_a_slow_provider_neither_blocks_the_event_loop_nor_holds_calls_past_the_timeout(
    idp: IdentityProvider, signer: Signer
) -> None:
    idp.delay = 0.4
    verifier = url_verifier(idp)
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    assert (await verifier.principal(signer.token())).tenant == "acme"
    ticker.cancel()
    assert ticks >= 10  # the loop kept running during the 0.4 s fetch
    idp.delay = 3.0
    slow = url_verifier(idp, GATEWAY_JWT_JWKS_TIMEOUT_SECONDS="0.3")
    started = time.perf_counter()
    with pytest.raises(Unavailable, match="timed out"):
        await slow.principal(signer.token())
    assert time.perf_counter() - started < 2.0


async def test_a_jwks_file_is_read_at_start_and_again_when_it_changes(tmp_path: Path, signer: Signer) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [signer.jwk]}))
    verifier = JwtVerifier.from_config(config(GATEWAY_JWT_JWKS_FILE=str(path)))
    assert verifier is not None
    assert (await verifier.principal(signer.token())).tenant == "acme"
    rotated = Signer("key-2")
    assert "GATEWAY_JWT_JWKS_FILE" in await refused(verifier, rotated.token())
    path.write_text(json.dumps({"keys": [rotated.jwk]}))
    os.utime(path, (time.time() + 5, time.time() + 5))
    assert (await verifier.principal(rotated.token())).tenant == "acme"


def test_settings_are_checked_at_start(tmp_path: Path) -> None:
    assert JwtVerifier.from_config(load_config(GatewayConfig, environ={})) is None
    with pytest.raises(ConfigError, match="GATEWAY_JWT_AUDIENCE is required"):
        load_config(
            GatewayConfig, environ={"GATEWAY_JWT_JWKS_URL": "https://idp/jwks", "GATEWAY_JWT_ISSUER": "x"}
        )
    with pytest.raises(ConfigError, match="GATEWAY_JWT_ISSUER is set but no JWKS"):
        load_config(GatewayConfig, environ={"GATEWAY_JWT_ISSUER": "x"})
    with pytest.raises(ConfigError, match="not both"):
        config(GATEWAY_JWT_JWKS_URL="https://idp/jwks", GATEWAY_JWT_JWKS_FILE="/x")
    with pytest.raises(ConfigError, match="asymmetric algorithms only"):
        config(GATEWAY_JWT_JWKS_URL="https://idp/jwks", GATEWAY_JWT_ALGORITHMS="RS256,HS256")
    with pytest.raises(ConfigError, match="https://"):
        config(GATEWAY_JWT_JWKS_URL="file:///etc/passwd")
    with pytest.raises(ConfigError, match="not a usable JWKS"):
        JwtVerifier.from_config(config(GATEWAY_JWT_JWKS_FILE=str(tmp_path / "missing.json")))
