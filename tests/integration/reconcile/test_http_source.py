"""The HTTP JSON adapter: pagination, exact numbers, limits and the SSRF guard.

Paging rules run against `httpx.MockTransport`; the guarded path runs against a real
server on 127.0.0.1 (allowed only by the test's policy) and is refused by the default one.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from settler_jobs.net_guard import GuardPolicy
from settler_jobs.reconcile import FieldMapping, HttpSource, SourceError
from settler_jobs.reconcile.http_source import fetch, read_http

API = "https://api.example.com/v1/payments"
PAGES: dict[str, str] = {
    "": '{"data": [{"id": "a", "amount": 10.10, "currency": "USD"}], "next": "c2"}',
    "c2": '{"data": [{"id": "b", "amount": {"value": 1}, "currency": "USD"}, 7], "next": "c3"}',
    "c3": '{"data": [{"id": "c", "amount": "3", "currency": "JPY"}], "next": null}',
}


def pages_handler(request: httpx.Request) -> httpx.Response:
    assert request.headers["authorization"] == "Bearer k"
    cursor = request.url.params.get("cursor", "")
    return httpx.Response(200, text=PAGES[cursor])


def run(spec: HttpSource, handler: Any) -> tuple[Any, list[Any]]:
    async def go() -> tuple[Any, list[Any]]:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            return await fetch(spec, client)

    return asyncio.run(go())


def spec(url: str = API, **extra: Any) -> HttpSource:
    return HttpSource(url=url, headers={"Authorization": "Bearer k"}, **extra)


def test_cursor_pages_are_read_in_order_with_exact_numbers() -> None:
    frame, rejects = run(spec(), pages_handler)
    assert frame.select("line", "id", "amount", "currency").rows() == [
        (1, "a", "10.10", "USD"),
        (4, "c", "3", "JPY"),
    ]
    assert [(r["line"], r["reason"]) for r in rejects] == [
        (2, "field 'amount' is a dict, not a scalar"),
        (3, "the record is not a JSON object"),
    ]


def test_next_links_and_nested_fields() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.params.get("page") == "2":
            return httpx.Response(200, json={"result": {"items": [], "next": None}})
        body = {
            "items": [{"tx": {"id": "a"}, "money": {"amount": "1.5", "ccy": "EUR"}}],
            "next": f"{API}?page=2",
        }
        return httpx.Response(200, json={"result": body})

    mapping = FieldMapping(id="tx.id", amount="money.amount", currency="money.ccy", date=None)
    source = spec(items_field="result.items", next_field="result.next", mapping=mapping)
    frame, _rejects = run(source, handler)
    assert frame.select("id", "amount", "currency").rows() == [("a", "1.5", "EUR")]


def test_a_next_link_to_another_origin_is_refused() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"data": [{}], "next": "https://evil.example/steal"})

    with pytest.raises(SourceError, match="another origin"):
        run(spec(), handler)


@pytest.mark.parametrize(
    ("response", "message", "transient"),
    [
        (httpx.Response(503), "HTTP 503", True),
        (httpx.Response(401), "HTTP 401", False),
        (httpx.Response(200, text="<html>"), "not valid JSON", False),
        (httpx.Response(200, json={"rows": []}), "no list 'data'", False),
    ],
)
def test_bad_answers_fail_the_source(
    response: httpx.Response, message: str, transient: bool
) -> None:
    with pytest.raises(SourceError, match=message) as caught:
        run(spec(), lambda request: response)
    assert caught.value.transient is transient


def test_pages_are_capped() -> None:
    def endless(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"data": [{"id": "x"}], "next": "more"})

    with pytest.raises(SourceError, match="more than 3 pages"):
        run(spec(max_pages=3), endless)


class _Api(BaseHTTPRequestHandler):
    paths: list[str]

    def do_GET(self) -> None:
        self.paths.append(self.path)
        cursor = parse_qs(urlsplit(self.path).query).get("cursor", [""])[0]
        body = PAGES[cursor].encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return None


@pytest.fixture
def local_api() -> Iterator[tuple[str, list[str]]]:
    """A JSON API on 127.0.0.1 serving PAGES; yields its URL and the paths it was asked."""
    handler: type[_Api] = type("Api", (_Api,), {"paths": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/payments", handler.paths
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_the_guarded_client_reads_an_allowed_server(local_api: tuple[str, list[str]]) -> None:
    url, paths = local_api
    policy = GuardPolicy.from_strings(True, ["127.0.0.1/32"])
    frame, rejects = read_http(spec(url), policy)
    assert frame["id"].to_list() == ["a", "c"] and len(rejects) == 2
    assert paths == ["/payments", "/payments?cursor=c2", "/payments?cursor=c3"]


def test_the_default_guard_refuses_local_addresses(local_api: tuple[str, list[str]]) -> None:
    url, paths = local_api
    with pytest.raises(SourceError, match="refused"):
        read_http(spec(url), GuardPolicy(allow_http=True))
    with pytest.raises(SourceError, match="refused"):
        read_http(spec("https://169.254.169.254/latest"), GuardPolicy())
    assert paths == []  # the server was never asked
