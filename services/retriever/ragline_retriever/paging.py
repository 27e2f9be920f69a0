"""Keyset pagination shared by every listing of both services: page sizes and opaque page tokens.

A token holds the listing's scope (with the caller's tenant) and the key of the last row
returned, so a token of one listing is refused by another (INVALID_ARGUMENT, as a forged one), and a
page never skips or repeats rows when others change. A token of the same listing of another tenant
is NOT_FOUND, as another tenant's collection or job is. That says nothing about the other tenant:
tokens are not signed, so anyone can write one naming any tenant, real or not, and the answer is
decided from the token alone, before any row is read.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from typing import TypeVar

from ragline.errors import InvalidArgument, NotFound

T = TypeVar("T")

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


def page_size(value: int) -> int:
    """The page size a request asks for (0 means DEFAULT_PAGE_SIZE); INVALID_ARGUMENT beyond MAX_PAGE_SIZE."""
    if value == 0:
        return DEFAULT_PAGE_SIZE
    if not 1 <= value <= MAX_PAGE_SIZE:
        raise InvalidArgument(
            f"page_size must be from 1 to {MAX_PAGE_SIZE} (0 means {DEFAULT_PAGE_SIZE})", field="page_size"
        )
    return value


def listing_scope(listing: str, tenant: str) -> str:
    """The scope of a tenant's listing: its token is refused in any other tenant's listing (whose
    rows the listing's statement would never return anyway, whatever key a token holds)."""
    # Last, after the listing's own parts (which hold no '|'), so any tenant name keeps scopes apart.
    return f"{listing}|{tenant}"


def encode_page_token(scope: str, after: str) -> str:
    """An opaque token for the page that starts after the key `after` of a listing of `scope`."""
    return base64.urlsafe_b64encode(json.dumps([scope, after]).encode()).decode()


def decode_page_token(token: str, scope: str) -> str:
    """The key after which the page of `token` starts ("" for no token); INVALID_ARGUMENT if it is not ours,
    NOT_FOUND if it continues the same listing of another tenant."""
    if not token:
        return ""
    try:
        decoded = json.loads(base64.urlsafe_b64decode(token.encode("ascii")))
    except (ValueError, binascii.Error):
        decoded = None
    if not (
        isinstance(decoded, list)
        and len(decoded) == 2
        and isinstance(decoded[0], str)
        and isinstance(decoded[1], str)
    ):
        decoded = None
    if decoded is not None and decoded[0] == scope:
        return str(decoded[1])
    if decoded is not None and _same_listing(decoded[0], scope):
        # The same listing of another tenant (the scopes differ only after the '|').
        raise NotFound(
            "page_token continues a listing that was not found; leave it empty to list from the start"
        )
    raise InvalidArgument(
        "page_token is not a next_page_token of this listing; send it back unchanged or leave it empty",
        field="page_token",
    )


def _same_listing(token_scope: str, scope: str) -> bool:
    """Whether the scopes (`listing_scope`s) name the same listing, whatever their tenants."""
    listing, separator, _ = scope.partition("|")
    return bool(separator) and token_scope.partition("|")[0] == listing


def next_page_token(scope: str, rows: Sequence[T], size: int, key: Callable[[T], str]) -> str:
    """The token of the page after `rows`, fetched with a limit of `size + 1`; "" when they were the last."""
    return encode_page_token(scope, key(rows[size - 1])) if len(rows) > size else ""
