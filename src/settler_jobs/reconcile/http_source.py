"""The HTTP adapter: a paginated JSON API read with GET through the SSRF guard.

Every request goes through `net_guard.guarded_client` (public addresses only, vetted at
connect time, no redirects, no proxies). A page is a JSON object whose `items_field`
lists records; `next_field` names the next page, either as a cursor (sent as the query
parameter `cursor_param`) or as an absolute URL, which must keep the first URL's origin
so the secret headers never travel to another host. Numbers are kept as exact text.
Pages are capped in count (`max_pages`) and size (`MAX_PAGE_BYTES`). Records are
numbered from 1 across pages.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any, Final

import httpx
import polars as pl

from settler_jobs.net_guard import GuardPolicy, Refused, Resolver, guarded_client
from settler_jobs.reconcile.raw import RawBuilder, SourceError, lookup
from settler_jobs.reconcile.specs import HttpSource

MAX_PAGE_BYTES: Final = 64 * 2**20
TIMEOUT: Final = httpx.Timeout(30.0, connect=10.0)


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return url.scheme, url.host, url.port


async def _page(client: httpx.AsyncClient, url: httpx.URL, headers: Mapping[str, str]) -> Any:
    try:
        async with client.stream("GET", url, headers=dict(headers)) as response:
            if response.status_code != 200:
                transient = response.status_code in (408, 429) or response.status_code >= 500
                raise SourceError(
                    f"the API answered HTTP {response.status_code}", transient=transient
                )
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body.extend(chunk)
                if len(body) > MAX_PAGE_BYTES:
                    raise SourceError(f"an API page is larger than {MAX_PAGE_BYTES} bytes")
    except Refused as exc:
        raise SourceError(f"the API address is refused: {exc.detail} ({exc.rule})") from exc
    except httpx.HTTPError as exc:
        raise SourceError(f"the API cannot be read: {type(exc).__name__}", transient=True) from exc
    try:
        return json.loads(bytes(body), parse_float=str, parse_int=str)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SourceError("an API page is not valid JSON") from exc


def _next_url(spec: HttpSource, first: httpx.URL, current: httpx.URL, token: object) -> httpx.URL:
    if isinstance(token, str) and token.startswith(("https://", "http://")):
        following = httpx.URL(token)
        if _origin(following) != _origin(first):
            raise SourceError("the API's next page is on another origin; refused")
        return following
    if not isinstance(token, str | int) or isinstance(token, bool):
        raise SourceError(f"the API's '{spec.next_field}' is neither a cursor nor a URL")
    return current.copy_set_param(spec.cursor_param, str(token))


async def fetch(spec: HttpSource, client: httpx.AsyncClient) -> tuple[pl.DataFrame, list[Any]]:
    """Every page of `spec` read with `client`, as a raw frame and unreadable records."""
    builder = RawBuilder(spec.mapping)
    first = url = httpx.URL(spec.url)
    number = 0
    for _ in range(spec.max_pages):
        page = await _page(client, url, spec.headers)
        items = lookup(page, spec.items_field) if isinstance(page, Mapping) else None
        if not isinstance(items, list):
            raise SourceError(f"an API page has no list '{spec.items_field}'")
        for item in items:
            number += 1
            builder.add(number, item)
        token = lookup(page, spec.next_field) if spec.next_field else None
        if token in (None, "") or not items:
            return builder.frame(), builder.rejects
        url = _next_url(spec, first, url, token)
    raise SourceError(f"the API has more than {spec.max_pages} pages (max_pages)")


async def _guarded_fetch(
    spec: HttpSource, policy: GuardPolicy, resolver: Resolver | None
) -> tuple[pl.DataFrame, list[Any]]:
    async with guarded_client(policy, timeout=TIMEOUT, resolver=resolver) as client:
        return await fetch(spec, client)


def read_http(
    spec: HttpSource, policy: GuardPolicy, resolver: Resolver | None = None
) -> tuple[pl.DataFrame, list[dict[str, object]]]:
    """Fetch every page through the SSRF guard (blocking: runs its own event loop)."""
    return asyncio.run(_guarded_fetch(spec, policy, resolver))
