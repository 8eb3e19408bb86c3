"""The inspector's store keeps what passed within its bounds (issue 15, "Bounded").

Driven the way the controller drives it: a real ProxyService given ``tap=InspectorStore(...)``
and a real aiohttp target on 127.0.0.1, requests made by aiohttp's client. What a person would
notice: how many rows the list holds, that a hostile page's refused requests cannot push real
ones out, that bodies are kept up to their caps (oldest dropped first, the row staying), that
nothing is kept with body capture off, that Clear forgets everything, and that the page's push
stream hears of each request as it starts and ends.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp import web

from desktop.config.model import ProxySettings, Target
from desktop.engine.capture import CaptureTap
from desktop.engine.service import ProxyService
from desktop.inspector.store import MAX_REFUSAL_ROWS, Exchange, Gone, InspectorStore

# Deadlock guard on every wait: a hang fails the test instead of stalling the run.
WAIT_S = 10.0
SETTINGS = ProxySettings(hosts=("127.0.0.1",), port=0, stop_grace_s=2.0)
# A page on the web: the guard refuses its requests (403) before they reach the target.
FOREIGN_ORIGIN = "https://evil.example"

GATES = web.AppKey("gates", dict[str, asyncio.Event])


def pattern(size: int) -> bytes:
    """``size`` bytes that show any shift or cut."""
    return bytes(i % 251 for i in range(size))


def target_app() -> web.Application:
    """``/bytes/N``: N bytes of ``pattern`` in 16 KiB writes (chunked); ``/echo``: the body
    back; ``/gate/NAME``: the head at once, then ``done`` once the test opens gate NAME."""

    async def some_bytes(request: web.Request) -> web.StreamResponse:
        data = pattern(int(request.match_info["size"]))
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        await response.prepare(request)
        for start in range(0, len(data), 16384):
            await response.write(data[start : start + 16384])
        await response.write_eof()
        return response

    async def echo(request: web.Request) -> web.Response:
        return web.Response(body=await request.read())

    async def gate(request: web.Request) -> web.StreamResponse:
        opened = request.app[GATES].setdefault(request.match_info["name"], asyncio.Event())
        response = web.StreamResponse()
        await response.prepare(request)
        await opened.wait()
        await response.write(b"done")
        await response.write_eof()
        return response

    app = web.Application()
    app[GATES] = {}
    app.router.add_get("/bytes/{size}", some_bytes)
    app.router.add_post("/echo", echo)
    app.router.add_get("/gate/{name}", gate)
    return app


Serve = Callable[[CaptureTap | None], Awaitable[str]]


@dataclass
class Upstream:
    url: str
    gates: dict[str, asyncio.Event]

    def open(self, name: str) -> None:
        self.gates.setdefault(name, asyncio.Event()).set()


@pytest.fixture
async def target(aiohttp_server) -> Upstream:  # type: ignore[no-untyped-def]
    server = await aiohttp_server(target_app())
    return Upstream(str(server.make_url("")), server.app[GATES])


@pytest.fixture
async def serve(target: Upstream) -> AsyncIterator[Serve]:
    """``await serve(tap)``: a proxy to the target with that capture tap; its base URL."""
    services: list[ProxyService] = []

    async def start(tap: CaptureTap | None) -> str:
        service = ProxyService(SETTINGS, Target(url=target.url, name="target"), tap=tap)
        await service.start()
        services.append(service)
        return f"http://127.0.0.1:{service.port}"

    yield start
    for service in services:
        await service.stop(grace_s=0.5)


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WAIT_S)) as session:
        yield session


async def get(client: aiohttp.ClientSession, url: str, **kwargs: object) -> tuple[int, bytes]:
    async with client.get(url, **kwargs) as response:  # type: ignore[arg-type]
        return response.status, await response.read()


async def until(condition: Callable[[], bool], what: str) -> None:
    """Wait for ``condition`` (the store hears of a request's end just after the client
    has its last byte)."""
    for _ in range(int(WAIT_S / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"not within {WAIT_S} s: {what}")


def all_done(store: InspectorStore) -> Callable[[], bool]:
    return lambda: all(exchange.done for exchange in store.exchanges())


def paths(exchanges: list[Exchange]) -> list[str]:
    return [exchange.head.raw_path for exchange in exchanges]


# --- rows -----------------------------------------------------------------------------------------


async def test_the_list_keeps_the_newest_max_rows(serve: Serve, client: aiohttp.ClientSession) -> None:
    store = InspectorStore(max_rows=5)
    base = await serve(store)
    for number in range(8):
        assert (await get(client, f"{base}/bytes/10?n={number}"))[0] == 200
    await until(all_done(store), "every request ended")
    assert paths(store.exchanges()) == [f"/bytes/10?n={number}" for number in (7, 6, 5, 4, 3)]
    assert len(store) == 5


async def test_refused_requests_have_their_own_short_list_and_push_no_real_row_out(
    serve: Serve, client: aiohttp.ClientSession
) -> None:
    """A page on the web hammering the proxy (each request refused by the guard) fills only
    the refusals' list of 200, newest kept; the real requests of a full list all stay."""
    store = InspectorStore(max_rows=5)
    base = await serve(store)
    for number in range(5):
        await get(client, f"{base}/bytes/10?real={number}")
    flood = MAX_REFUSAL_ROWS + 50
    for number in range(flood):
        status, _ = await get(client, f"{base}/bytes/10?refused={number}", headers={"Origin": FOREIGN_ORIGIN})
        assert status == 403
    await until(all_done(store), "every request ended")
    held = store.exchanges()
    real = [exchange for exchange in held if "real" in exchange.head.raw_path]
    refused = [exchange for exchange in held if "refused" in exchange.head.raw_path]
    assert paths(real) == [f"/bytes/10?real={number}" for number in (4, 3, 2, 1, 0)]
    assert paths(refused) == [f"/bytes/10?refused={number}" for number in range(flood - 1, 49, -1)]
    assert all(exchange.end is not None and exchange.end.status == 403 for exchange in refused)
    assert len(store) == 5 + MAX_REFUSAL_ROWS
    # A refusal is found by its id like any row; the first ones are gone.
    assert store.get(refused[0].id) is refused[0]
    assert store.get(refused[-1].id - 1) is None


async def test_a_subscriber_asking_for_removals_hears_of_each_request_pushed_out(
    serve: Serve, client: aiohttp.ClientSession
) -> None:
    """The page's push stream: a row the store no longer holds must leave the page too, the
    real ones pushed out by max_rows and refusals by the refusals' own list."""
    store = InspectorStore(max_rows=5)
    base = await serve(store)
    told, plain = store.subscribe(removals=True), store.subscribe()
    for number in range(8):
        await get(client, f"{base}/bytes/10?real={number}")
    for number in range(MAX_REFUSAL_ROWS + 3):
        await get(client, f"{base}/bytes/10?refused={number}", headers={"Origin": FOREIGN_ORIGIN})
    await until(all_done(store), "every request ended")
    seen: set[int] = set()
    gone: list[int] = []
    while not told.queue.empty():
        change = told.queue.get_nowait()
        if isinstance(change, Gone):
            gone.append(change.exchange_id)
        elif change is not None:
            seen.add(change.id)
    held = {exchange.id for exchange in store.exchanges()}
    assert len(gone) == 3 + 3
    assert set(gone) == seen - held
    assert not any(isinstance(plain.queue.get_nowait(), Gone) for _ in range(plain.queue.qsize()))


# --- bodies ---------------------------------------------------------------------------------------


async def test_bodies_live_in_a_ring_capped_in_bytes_the_oldest_dropped_first(
    serve: Serve, client: aiohttp.ClientSession
) -> None:
    """Five 60 KB answers with a 200 KB ring: the first two answers' bodies make room for
    the later ones, and their rows stay (status, bytes), marked evicted."""
    store = InspectorStore(body_cap_bytes=200_000)
    base = await serve(store)
    body = pattern(60_000)
    for number in range(5):
        assert await get(client, f"{base}/bytes/60000?n={number}") == (200, body)
    await until(all_done(store), "every request ended")
    oldest_first = store.exchanges()[::-1]
    assert [exchange.evicted for exchange in oldest_first] == [True, True, False, False, False]
    for exchange in oldest_first[:2]:
        assert exchange.response_body() == b""
        assert (exchange.status, exchange.response_bytes) == (200, 60_000)
    for exchange in oldest_first[2:]:
        assert exchange.response_body() == body
        assert not exchange.body_cut
    assert 3 * 60_000 < store.body_bytes <= 200_000


async def test_a_body_over_the_per_request_cap_is_cut_and_marked(
    serve: Serve, client: aiohttp.ClientSession
) -> None:
    """The client gets the whole answer and the whole request reaches the target; the store
    keeps each one's start, up to the cap, and says it is cut."""
    store = InspectorStore(request_cap_bytes=50_000)
    base = await serve(store)
    assert await get(client, f"{base}/bytes/200000") == (200, pattern(200_000))
    sent = pattern(80_000)[::-1]
    async with client.post(f"{base}/echo", data=sent) as response:
        assert await response.read() == sent
    await until(all_done(store), "every request ended")
    echoed, downloaded = store.exchanges()
    kept = downloaded.response_body()
    assert downloaded.body_cut
    assert 0 < len(kept) <= 50_000
    assert kept == pattern(200_000)[: len(kept)]
    assert downloaded.response_bytes == 200_000
    assert echoed.request_body_cut
    assert echoed.request_body is not None
    assert 40_000 < len(echoed.request_body) <= 50_000
    assert echoed.request_body == sent[: len(echoed.request_body)]
    # The cap is the exchange's, for its bodies together: the answer's share is spent.
    assert echoed.body_cut
    assert echoed.response_bytes == 80_000
    assert downloaded.kept_bytes <= 50_000
    assert echoed.kept_bytes <= 50_000
    assert store.body_bytes <= 2 * 50_000


async def test_with_body_capture_off_no_body_stays_after_the_end(
    serve: Serve, client: aiohttp.ClientSession
) -> None:
    """keep_bodies=False: the answer is read back for its facts (model, tokens) at its end,
    then dropped with the request body; the row keeps its status and byte count."""
    read: list[bytes] = []

    def read_back(exchange: Exchange) -> dict[str, object]:
        read.append(exchange.response_body())
        return {"model": "read"}

    store = InspectorStore(keep_bodies=False, read_back=read_back)
    base = await serve(store)
    assert await get(client, f"{base}/bytes/30000") == (200, pattern(30_000))
    async with client.post(f"{base}/echo", data=b'{"model": "m"}') as response:
        assert response.status == 200
    await until(lambda: all(exchange.facts for exchange in store.exchanges()), "both read back")
    assert read == [pattern(30_000), b'{"model": "m"}']
    for exchange in store.exchanges():
        assert not exchange.chunks
        assert exchange.request_body is None
        assert exchange.facts == {"model": "read"}
    assert [exchange.response_bytes for exchange in store.exchanges()] == [14, 30_000]
    assert store.body_bytes == 0


# --- clear and push ---------------------------------------------------------------------------


async def test_clear_forgets_everything_and_an_open_request_comes_back_to_no_row(
    serve: Serve, client: aiohttp.ClientSession, target: Upstream
) -> None:
    store = InspectorStore()
    base = await serve(store)
    for _ in range(3):
        await get(client, f"{base}/bytes/20000")
    await until(all_done(store), "every request ended")
    waiting = asyncio.ensure_future(get(client, f"{base}/gate/clear"))
    await until(lambda: len(store) == 4 and store.exchanges()[0].status == 200, "the open request listed")
    with store.subscribe() as subscription:
        store.clear()
        assert store.exchanges() == []
        assert store.body_bytes == 0
        assert subscription.queue.get_nowait() is None  # "read the list again"
        target.open("clear")
        assert await waiting == (200, b"done")
        await asyncio.sleep(0.1)  # its end, heard by the store
        assert store.exchanges() == []
        assert store.body_bytes == 0
        assert subscription.queue.empty()
    await get(client, f"{base}/bytes/5")
    await until(all_done(store), "the next request ended")
    assert paths(store.exchanges()) == ["/bytes/5"]


async def test_subscribers_hear_of_a_request_as_it_starts_and_as_it_ends(
    serve: Serve, client: aiohttp.ClientSession, target: Upstream
) -> None:
    store = InspectorStore()
    base = await serve(store)
    subscription = store.subscribe()
    waiting = asyncio.ensure_future(get(client, f"{base}/gate/push"))
    async with asyncio.timeout(WAIT_S):
        started = await subscription.queue.get()
    assert started is not None
    assert started.head.raw_path == "/gate/push"
    assert not started.done
    target.open("push")
    assert await waiting == (200, b"done")
    await until(lambda: started.done, "its end heard")
    told = [started]
    while not subscription.queue.empty():
        told.append(subscription.queue.get_nowait())
    # One row, told again as it changed: its start, its answer's head, its end.
    assert told == [started] * 3
    assert started.end is not None
    assert started.end.status == 200
    subscription.close()
    await get(client, f"{base}/bytes/5")
    await until(lambda: len(store) == 2 and all_done(store)(), "the next request ended")
    assert subscription.queue.empty()


async def test_a_service_without_an_inspector_forwards_as_before(
    serve: Serve, client: aiohttp.ClientSession
) -> None:
    base = await serve(None)
    assert await get(client, f"{base}/bytes/100000") == (200, pattern(100_000))
    async with client.post(f"{base}/echo", data=b"x" * 70_000) as response:
        assert await response.read() == b"x" * 70_000
    status, _ = await get(client, f"{base}/bytes/1", headers={"Origin": FOREIGN_ORIGIN})
    assert status == 403
