"""What the inspector shows of the recording of answers: each row and detail says whether the
answer came from the recording ("hit"), was sent and recorded ("miss", "record") or was refused
offline ("offline-miss"), and the exports carry it too.

A real TrayProxy (ProxyService) with the real recording (desktop.cache.Recordings, in this
test's folder) in front of a scripted target on 127.0.0.1, through the openai SDK.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from aiohttp import web
from llm_answers import CHAT_STREAM
from netservers import LoopbackResolver
from scripted_llm import Inspected

from desktop.cache import Recordings
from desktop.config.model import ProxySettings, Target
from desktop.engine.service import ProxyService
from desktop.inspector.har import har_bytes
from desktop.inspector.jsonl import jsonl_bytes
from desktop.inspector.readback import facts_of
from desktop.inspector.store import InspectorStore
from desktop.inspector.views import detail_json, row_json

HI = [{"role": "user", "content": "Weather in Paris?"}]


@dataclass
class Recorded:
    inspected: Inspected
    target: Target
    asked: list[str]


@pytest.fixture
async def recorded(aiohttp_server: Any, tmp_path: Path) -> AsyncIterator[Recorded]:
    asked: list[str] = []

    async def answer(request: web.Request) -> web.StreamResponse:
        await request.read()
        asked.append(request.path)
        response = web.StreamResponse(headers={"Content-Type": CHAT_STREAM.content_type})
        await response.prepare(request)
        for piece in CHAT_STREAM.pieces:
            if isinstance(piece, bytes):
                await response.write(piece)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    server = await aiohttp_server(app, host="127.0.0.1")
    target = Target(url=str(server.make_url("")), name="scripted", cache="replay")
    store = InspectorStore(read_back=facts_of)
    recordings = Recordings(tmp_path / "recordings" / "answers.sqlite3")
    service = ProxyService(
        ProxySettings(hosts=("127.0.0.1",), port=0, stop_grace_s=2.0),
        target,
        resolver=LoopbackResolver(),
        tap=store,
        recall=recordings,
    )
    await service.start()
    try:
        yield Recorded(Inspected(store, service, {}, []), target, asked)
    finally:
        await service.stop(grace_s=0.5)
        recordings.close()


async def ask(recorded: Recorded, content: str = "Weather in Paris?") -> None:
    async with httpx.AsyncClient(trust_env=False) as http:
        sdk = openai.AsyncOpenAI(
            base_url=recorded.inspected.url + "/v1", api_key="unused", http_client=http, max_retries=0
        )
        try:
            stream = await sdk.chat.completions.create(
                model="gpt-asked", messages=[{"role": "user", "content": content}], stream=True
            )
            [chunk async for chunk in stream]
        except openai.APIStatusError:
            pass  # offline, not recorded: the row says so


async def test_rows_details_and_exports_say_what_the_recording_did(recorded: Recorded) -> None:
    inspected = recorded.inspected
    await ask(recorded)
    first = await inspected.settled(1)
    await ask(recorded)
    again = await inspected.settled(2)
    assert recorded.asked == ["/v1/chat/completions"]  # the repeat came from the recording
    assert (row_json(first)["cache"], row_json(again)["cache"]) == ("miss", "hit")
    assert detail_json(again)["cache"] == "hit"
    # The replay's speed says nothing of the model's (it showed 2000 and 6000 tok/s).
    assert row_json(first)["tokens_per_s"] is not None
    assert row_json(again)["tokens_per_s"] is None
    assert detail_json(again)["status"] == 200

    inspected.service.set_target(replace(recorded.target, cache="offline"))
    await ask(recorded, "Weather in Rome?")
    refused = await inspected.settled(3)
    assert (row_json(refused)["cache"], row_json(refused)["status"]) == ("offline-miss", 504)
    inspected.service.set_target(replace(recorded.target, cache="off"))
    await ask(recorded, "Weather in Oslo?")
    plain = await inspected.settled(4)
    assert row_json(plain)["cache"] == ""

    newest_first = inspected.store.exchanges()
    har = json.loads(har_bytes(newest_first))
    assert [entry["_trayproxy"]["cache"] for entry in har["log"]["entries"]] == ["", "offline-miss", "hit", "miss"]
    lines = jsonl_bytes(newest_first).decode().splitlines()
    assert [json.loads(line)["cache"] for line in lines] == ["", "offline-miss", "hit", "miss"]
