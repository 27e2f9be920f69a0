"""Ragline API keys: making, reading and hashing the tokens, and finding the one a client should send.

A token is `rgl_<key_id>_<secret>`: the recognisable prefix lets secret scanners and people
tell a Ragline key at a glance; the key id (16 lowercase base32 characters, 80 random bits)
is public, names the key in listings and audit lines, and finds its record; the secret (32
random bytes, base64url without padding) is shown once and stored only as its SHA-256.
The gateway (checking keys), the devstack (the local admin key) and the CLI (the operator's
path) all use this one module, so the format is defined in one place.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

import grpc

from ragline.channels import blocking_channel
from ragline.config import state_dir
from ragline.tls import ClientCertificates
from ragline.v1 import admin_service_pb2, api_key_store_service_pb2, api_key_store_service_pb2_grpc

TOKEN_PREFIX = "rgl_"
# The environment variable a client reads its key from, before the state folder's file.
API_KEY_ENV = "RAGLINE_API_KEY"
# The file in the state folder where `make run` keeps the local admin key.
API_KEY_FILE = "api_key"
KEY_ID_CHARS = 16
SECRET_BYTES = 32
_KEY_ID = re.compile(r"[a-z2-7]{16}")
# base64url of 32 bytes without padding is 43 characters, the last one carrying only 4 bits.
_SECRET = re.compile(r"[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]")


@dataclass(frozen=True)
class ApiKeyToken:
    """A token's two parts."""

    key_id: str
    """The key's public id."""
    secret: str
    """The secret part, as it is written in the token."""

    def __str__(self) -> str:
        return f"{TOKEN_PREFIX}{self.key_id}_{self.secret}"


def new_token() -> ApiKeyToken:
    """A new token, from the operating system's random source."""
    key_id = base64.b32encode(secrets.token_bytes(10)).decode().lower()
    secret = base64.urlsafe_b64encode(secrets.token_bytes(SECRET_BYTES)).decode().rstrip("=")
    return ApiKeyToken(key_id, secret)


def is_key_id(value: str) -> bool:
    """Whether `value` has the form of a key id."""
    return _KEY_ID.fullmatch(value) is not None


def parse_token(token: str) -> ApiKeyToken | None:
    """The parts of `token`, or None when it is not a well-formed Ragline API key."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    key_id, underscore, secret = token[len(TOKEN_PREFIX) :].partition("_")
    if not underscore or not is_key_id(key_id) or _SECRET.fullmatch(secret) is None:
        return None
    return ApiKeyToken(key_id, secret)


def secret_sha256(secret: str) -> str:
    """The stored form of a secret: its SHA-256 as 64 lowercase hex characters.

    A fast hash is right here, unlike for passwords: the secret has 256 random bits, so no
    dictionary or brute-force search of the hashes can succeed however fast each guess is,
    and a slow hash (bcrypt, argon2) would only add milliseconds to every key check.
    """
    return hashlib.sha256(secret.encode()).hexdigest()


def token_file(state: Path | None = None) -> Path:
    """Where `make run` keeps the local admin key: the state folder's `api_key` file."""
    return (state or state_dir()) / API_KEY_FILE


def write_token_file(path: Path, token: str) -> None:
    """Writes `token` to a new file at `path` that only its owner may read (mode 0600 from its creation).

    The file is created with that mode (never world-readable, even briefly) and must not exist.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(token + "\n")


def client_token() -> str | None:
    """The API key a client sends: RAGLINE_API_KEY, else the state folder's `api_key` file, else None."""
    token = os.environ.get(API_KEY_ENV, "").strip()
    if token:
        return token
    try:
        return token_file().read_text().strip() or None
    except FileNotFoundError:
        return None


def role_name(role: int) -> str:
    """The lowercase name of a `ragline.v1.Role` value (reader, writer, admin), as stored and shown."""
    return admin_service_pb2.Role.Name(role).removeprefix("ROLE_").lower()


def role_value(name: str) -> int:
    """The `ragline.v1.Role` value of a lowercase role name; ValueError for another name."""
    return int(admin_service_pb2.Role.Value("ROLE_" + name.upper()))


def store_new_key(
    retriever_address: str,
    tenant: str,
    role: int,
    display_name: str = "",
    *,
    timeout: float = 30.0,
    certificates: ClientCertificates | None = None,
) -> tuple[admin_service_pb2.ApiKey, str]:
    """Makes a key and stores it straight in the retriever's key store; returns it and its token.

    The operator's path, on the internal network: a new tenant's first admin key (`ragline keys
    create --tenant`) and the local admin key of `make run`. Once a tenant has an admin key, its
    keys are made through the gateway's AdminService.
    """
    token = new_token()
    key = admin_service_pb2.ApiKey(key_id=token.key_id, tenant=tenant, role=role, display_name=display_name)  # type: ignore[arg-type]
    request = api_key_store_service_pb2.CreateStoredApiKeyRequest(
        api_key=key, secret_sha256=secret_sha256(token.secret)
    )
    with blocking_channel(retriever_address, certificates) as channel:
        reply = api_key_store_service_pb2_grpc.ApiKeyStoreServiceStub(channel).CreateStoredApiKey(
            request, timeout=timeout
        )
    return reply.api_key, str(token)


def key_is_usable(
    retriever_address: str,
    token: str,
    *,
    timeout: float = 30.0,
    certificates: ClientCertificates | None = None,
) -> bool:
    """Whether the retriever's key store holds `token`'s key, with its secret, unrevoked."""
    parsed = parse_token(token)
    if parsed is None:
        return False
    request = api_key_store_service_pb2.LookupStoredApiKeyRequest(key_id=parsed.key_id)
    with blocking_channel(retriever_address, certificates) as channel:
        try:
            found = api_key_store_service_pb2_grpc.ApiKeyStoreServiceStub(channel).LookupStoredApiKey(
                request, timeout=timeout
            )
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return False
            raise
    return found.secret_sha256 == secret_sha256(parsed.secret) and not found.api_key.HasField("revoke_time")
