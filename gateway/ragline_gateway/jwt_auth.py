"""JWT authentication: a bearer token from the organisation's identity provider names the caller.

Tokens are verified with PyJWT against a JSON Web Key Set read from a file or fetched from
the identity provider's URL, with the issuer, the audience and the expiry checked and only
asymmetric algorithms accepted (a JWKS holds public keys; accepting `none` or HMAC would let
anyone who can read it sign tokens). Configured claims give the tenant and the role; the
subject is the credential id the audit log and the limits name.

Keys are looked up by the token's `kid` in memory, so a verification costs no I/O. A URL's
set is fetched in a worker thread (PyJWT's client is blocking) with a timeout, kept for
GATEWAY_JWT_JWKS_CACHE_SECONDS, and fetched again when a token names a key id it lacks: that
is how a rotated key is picked up; but not within REFRESH_COOLDOWN_SECONDS of the previous
fetch, so tokens with made-up key ids cannot make the gateway hammer the identity provider. A file is read again when it changed on disk and a token names a key id
it lacks.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Any

import jwt

from ragline.config import ConfigError
from ragline.errors import Unauthenticated, Unavailable
from ragline.validation import quote
from ragline_gateway.config import GatewayConfig
from ragline_gateway.principal import Principal, Role

log = logging.getLogger(__name__)

ROLE_NAMES = {"reader": Role.READER, "writer": Role.WRITER, "admin": Role.ADMIN}
# Longest tenant accepted from a claim; tenants are names, not documents.
MAX_TENANT_CHARS = 128
_FIX = "get a new token from your identity provider"
# Least time between two fetches of a JWKS URL caused by unknown key ids.
REFRESH_COOLDOWN_SECONDS = 30.0
# While a JWKS URL that never answered is down, calls are refused this long without trying it again.
FAILED_FETCH_RETRY_SECONDS = 2.0


class _Keys:
    """The JWKS's keys by key id, and where they come from."""

    def __init__(self, config: GatewayConfig) -> None:
        self.file = Path(config.jwt_jwks_file).expanduser() if config.jwt_jwks_file else None
        self.setting = "GATEWAY_JWT_JWKS_FILE" if self.file else "GATEWAY_JWT_JWKS_URL"
        self.client = (
            jwt.PyJWKClient(
                config.jwt_jwks_url,
                cache_jwk_set=True,
                lifespan=config.jwt_jwks_cache_seconds,
                timeout=config.jwt_jwks_timeout_seconds,
            )
            if config.jwt_jwks_url
            else None
        )
        self.lifespan = config.jwt_jwks_cache_seconds
        self.by_kid: dict[str | None, jwt.PyJWK] = {}
        self.loaded_at = 0.0
        self.fetched_at = -REFRESH_COOLDOWN_SECONDS
        self.failed: tuple[float, str] | None = None
        self.file_mtime = 0.0
        # One fetch at a time: concurrent calls with a new key id wait for the same fetch.
        self.lock = asyncio.Lock()

    def _index(self, keys: list[jwt.PyJWK]) -> None:
        signing = [key for key in keys if key.public_key_use in ("sig", None)]
        by_kid: dict[str | None, jwt.PyJWK] = {key.key_id: key for key in signing}
        # A set with one key may be used by tokens that name no key id.
        if len(signing) == 1:
            by_kid[None] = signing[0]
        self.by_kid = by_kid
        self.loaded_at = time.monotonic()

    def load_file(self) -> None:
        """Reads the JWKS file; ConfigError when it is missing or holds no usable key."""
        assert self.file is not None
        try:
            mtime = self.file.stat().st_mtime
            keys = jwt.PyJWKSet.from_json(self.file.read_text()).keys
        except (OSError, ValueError, jwt.PyJWTError) as exc:
            raise ConfigError(f"GATEWAY_JWT_JWKS_FILE={str(self.file)!r}: not a usable JWKS: {exc}") from None
        self._index(keys)
        self.file_mtime = mtime

    def _refresh_file(self) -> None:
        assert self.file is not None
        try:
            changed = self.file.stat().st_mtime != self.file_mtime
        except OSError:
            return
        if changed:
            try:
                self.load_file()
            except ConfigError as exc:
                # Keep the keys we have: a half-written file must not lock everyone out.
                log.warning("%s; keeping the keys read before", exc)

    def _fetch_url(self, refresh: bool) -> None:
        assert self.client is not None
        self._index(self.client.get_signing_keys(refresh=refresh))
        self.fetched_at = time.monotonic()

    async def get(self, kid: str | None) -> jwt.PyJWK | None:
        """The key `kid` names, refreshing the set once when it is unknown or the cached set is old."""
        stale = self.client is not None and time.monotonic() - self.loaded_at > self.lifespan
        key = self.by_kid.get(kid)
        if key is not None and not stale:
            return key
        async with self.lock:
            key = self.by_kid.get(kid)
            if key is not None and time.monotonic() - self.loaded_at <= self.lifespan:
                return key
            if self.file is not None:
                await asyncio.to_thread(self._refresh_file)
            else:
                await self._refresh_url(forced=key is None)
            return self.by_kid.get(kid)

    async def _refresh_url(self, forced: bool) -> None:
        assert self.client is not None
        if forced and self.by_kid and time.monotonic() - self.fetched_at < REFRESH_COOLDOWN_SECONDS:
            return
        if (
            not self.by_kid
            and self.failed is not None
            and time.monotonic() - self.failed[0] < FAILED_FETCH_RETRY_SECONDS
        ):
            raise self._unavailable(self.failed[1])
        try:
            await asyncio.to_thread(self._fetch_url, forced and bool(self.by_kid))
        except (jwt.PyJWTError, ValueError) as exc:
            self.failed = (time.monotonic(), str(exc))
            if self.by_kid:
                log.warning(
                    "JWKS fetch from %s failed (%s); using the keys fetched before", self.client.uri, exc
                )
                self.loaded_at = time.monotonic()  # retry after another lifespan, not on every call
                return
            raise self._unavailable(str(exc)) from None
        self.failed = None

    def _unavailable(self, reason: str) -> Unavailable:
        assert self.client is not None
        return Unavailable(
            f"the identity provider's JWKS could not be fetched from GATEWAY_JWT_JWKS_URL "
            f"({self.client.uri}): {reason}; retry later"
        )


class JwtVerifier:
    """Turns a bearer JWT into the Principal it names, or refuses it with a reason the caller can act on."""

    def __init__(self, config: GatewayConfig) -> None:
        self._keys = _Keys(config)
        self._algorithms = config.jwt_algorithm_names()
        self._issuer = config.jwt_issuer
        self._audience = config.jwt_audience
        self._leeway = config.jwt_leeway_seconds
        self._tenant_claim = config.jwt_tenant_claim
        self._role_claim = config.jwt_role_claim

    @classmethod
    def from_config(cls, config: GatewayConfig) -> JwtVerifier | None:
        """The verifier the settings describe, or None when no JWKS is configured (JWT authentication off).

        A JWKS file is read here, so a missing or broken one stops the gateway at start (ConfigError).
        """
        if not (config.jwt_jwks_file or config.jwt_jwks_url):
            return None
        verifier = cls(config)
        if verifier._keys.file is not None:
            verifier._keys.load_file()
        return verifier

    async def principal(self, token: str) -> Principal:
        """The caller `token` names; Unauthenticated saying why when it is not acceptable.

        Unavailable when the key set cannot be fetched at all (the token may be fine).
        """
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthenticated(
                "the credential is neither a Ragline API key (rgl_…) nor a well-formed JWT"
            ) from None
        algorithm = header.get("alg")
        if algorithm not in self._algorithms:
            raise Unauthenticated(
                f"the JWT is signed with algorithm {quote(str(algorithm))}; this gateway accepts "
                f"{', '.join(self._algorithms)} (GATEWAY_JWT_ALGORITHMS)"
            )
        kid = header.get("kid")
        key = await self._keys.get(kid if isinstance(kid, str) else None)
        if key is None:
            named = f"key id {quote(kid)}" if isinstance(kid, str) else "no key id"
            raise Unauthenticated(
                f"the JWT names {named}, which is not in the JWKS ({self._keys.setting}); "
                f"{_FIX}, or check that the gateway uses this provider's key set"
            )
        claims = self._decode(token, key)
        return Principal(
            tenant=self._tenant(claims),
            role=self._role(claims),
            credential_id=self._subject(claims),
        )

    def _decode(self, token: str, key: jwt.PyJWK) -> dict[str, Any]:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=self._algorithms,
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated(f"the JWT has expired; {_FIX}") from None
        except jwt.ImmatureSignatureError:
            raise Unauthenticated(
                "the JWT is not valid yet (its nbf or iat is in the future); check the clocks"
            ) from None
        except jwt.InvalidAudienceError:
            raise Unauthenticated(
                f"the JWT's audience is not {quote(str(self._audience))} (GATEWAY_JWT_AUDIENCE); "
                "ask your identity provider for a token for this gateway"
            ) from None
        except jwt.InvalidIssuerError:
            raise Unauthenticated(
                f"the JWT was not issued by {quote(str(self._issuer))} (GATEWAY_JWT_ISSUER); "
                "use a token from the identity provider this gateway trusts"
            ) from None
        except jwt.MissingRequiredClaimError as exc:
            raise Unauthenticated(f"the JWT has no {quote(exc.claim)} claim; {_FIX}") from None
        except jwt.InvalidSignatureError:
            raise Unauthenticated(
                "the JWT's signature does not verify with the key its kid names; the token was altered "
                "or signed by another key"
            ) from None
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"the JWT is not acceptable: {exc}") from None
        return claims

    @staticmethod
    def _claim(claims: dict[str, Any], name: str) -> Any:
        """The claim `name`: a top-level claim of that exact name (URLs are common claim names), else a dotted path."""
        if name in claims:
            return claims[name]
        value: Any = claims
        for part in name.split("."):
            if not isinstance(value, dict) or part not in value:
                return None
            value = value[part]
        return value

    def _tenant(self, claims: dict[str, Any]) -> str:
        tenant = self._claim(claims, self._tenant_claim)
        if tenant is None:
            raise Unauthenticated(
                f"the JWT has no {quote(self._tenant_claim)} claim naming the tenant "
                "(GATEWAY_JWT_TENANT_CLAIM); ask your identity provider to add it"
            )
        if not isinstance(tenant, str) or not tenant.strip() or len(tenant) > MAX_TENANT_CHARS:
            raise Unauthenticated(
                f"the JWT's {quote(self._tenant_claim)} claim must be a tenant name of 1 to "
                f"{MAX_TENANT_CHARS} characters"
            )
        return tenant

    def _role(self, claims: dict[str, Any]) -> Role:
        value = self._claim(claims, self._role_claim)
        values = value if isinstance(value, list) else [value]
        roles = [ROLE_NAMES[v] for v in values if isinstance(v, str) and v in ROLE_NAMES]
        if not roles:
            found = "no such claim" if value is None else f"it is {quote(json.dumps(value, default=str))}"
            raise Unauthenticated(
                f"the JWT's {quote(self._role_claim)} claim (GATEWAY_JWT_ROLE_CLAIM) must be reader, writer "
                f"or admin, or a list holding one; {found}"
            )
        return max(roles)

    @staticmethod
    def _subject(claims: dict[str, Any]) -> str:
        subject = claims["sub"]
        if not isinstance(subject, str) or not subject:
            raise Unauthenticated("the JWT's sub claim must be a non-empty string")
        return subject
