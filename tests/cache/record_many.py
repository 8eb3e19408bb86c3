"""Records answers through Recordings until killed: rounds of 100 at once, each answer a few
KiB in pieces of 2 KiB told to a real AnswerRecorder as the engine tells it.

Run by tests/cache/test_recording_kill.py: ``python record_many.py STORE_PATH``; prints
"ready" once the first round has started, then "round N" after each.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
from pathlib import Path

from multidict import CIMultiDict

from desktop.cache import Recordings
from desktop.engine.capture import ExchangeEnd
from desktop.engine.recall import RecallRequest

AT_ONCE = 100
PIECE_BYTES = 2048


def request_of(number: int) -> RecallRequest:
    """The number-th request: its body says how long its answer is."""
    size = 3000 + (number * 7919) % 20000  # 3 to 23 KB
    body = json.dumps({"model": "kill-test", "n": number, "size": size}).encode()
    return RecallRequest("record", "kill-test", "POST", "/v1/chat/completions", "", body, ())


def answer_of(body: bytes) -> bytes:
    """The answer the request with ``body`` gets: ``size`` bytes made from its number."""
    asked = json.loads(body)
    seed = hashlib.sha256(str(asked["n"]).encode()).hexdigest().encode()
    return (seed * (asked["size"] // len(seed) + 1))[: asked["size"]]


async def record_one(recordings: Recordings, number: int) -> None:
    loop = asyncio.get_running_loop()
    request = request_of(number)
    recorder = await recordings.lookup(request)
    assert recorder is not None
    data = answer_of(request.body)
    recorder.response(200, "OK", CIMultiDict({"Content-Type": "text/event-stream"}), loop.time())
    for start in range(0, len(data), PIECE_BYTES):
        recorder.chunk(data[start : start + PIECE_BYTES], loop.time())
        await asyncio.sleep(0.001)
    recorder.end(
        ExchangeEnd(
            status=200,
            note="",
            error="",
            target="kill-test",
            chosen_by="",
            attempts=(),
            bytes_down=len(data),
            own_body=None,
            websocket=None,
            ended=loop.time(),
        )
    )


async def main(path: Path) -> None:
    recordings = Recordings(path)
    print("ready", flush=True)
    for round_number in range(1_000_000):
        first = round_number * AT_ONCE
        await asyncio.gather(*(record_one(recordings, first + n) for n in range(AT_ONCE)))
        print(f"round {round_number}", flush=True)


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
