"""The README's CI recipe, run as written: record a suite's answers on "your machine", export
them into the repository, then on a fresh machine (a new, empty home with no config file and no
key) import them and serve offline with the target gone: the suite's requests get the recorded
answers, byte for byte, and an unrecorded one gets 504 cache_offline_miss.

The commands are read from the README's recipe block, so the recipe and this test change
together; its line that waits for serve to listen is run as written (where curl is). Each
serve gets ``--port`` (a free one; 8000 may be taken here) and ``--host 127.0.0.1`` (a test
listens on loopback only); nothing else is added.
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from cli_process import REPO, run_cli
from isolated_home import home_environ
from numbered_target import NumberedTarget
from recorded import chat_exchange
from serve_started import START_TIMEOUT_S, Serves
from tapped_sdks import Tapped, openai_client
from upstreams import dead_port

from desktop.cache import RecordingStore
from desktop.config.store import DEFAULT_CONFIG, config_path

# The key "your machine" has; CI has none.
DEV_KEY = "sk-recipe-dev-0123456789abcdef"
RECIPE_INTRO = "**A test suite on CI, with no key and no network**"
EXPORTED = "tests/recorded-answers.jsonl"


def recipe_lines() -> list[str]:
    """The lines of the README's CI recipe that are run, in order, comments left out."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    block = re.search(r"```sh\n(.*?)```", readme[readme.index(RECIPE_INTRO) :], re.DOTALL)
    assert block is not None, "the recipe's sh block is gone"
    return [
        " ".join(shlex.split(line, comments=True)) for line in block.group(1).splitlines() if line.strip()
    ]


def recipe_commands() -> list[list[str]]:
    """The ``trayproxy`` commands of the recipe, without ``trayproxy`` and ``&``."""
    commands = [shlex.split(line) for line in recipe_lines() if line.startswith("trayproxy ")]
    return [[word for word in words[1:] if word != "&"] for words in commands]


def wait_line(port: int) -> str:
    """The recipe's line that waits for serve to listen, at ``port`` instead of 8000."""
    waits = [line for line in recipe_lines() if line.startswith("until ")]
    assert len(waits) == 2, waits
    assert waits[0] == waits[1]
    assert ":8000/" in waits[1]
    return waits[1].replace(":8000/", f":{port}/")


@pytest.fixture
def serves() -> Iterator[Serves]:
    started = Serves()
    yield started
    started.stop_all()


async def suite(url: str) -> tuple[list[Any], Tapped]:
    """ "Your suite": a whole and a streamed chat completion through the openai SDK."""
    messages: Any = [{"role": "user", "content": "Weather in Paris?"}]
    async with openai_client(url + "/v1") as (client, tapped):
        whole = await client.chat.completions.create(model="gpt-4o-mini", messages=messages)
        chunks = await client.chat.completions.create(model="gpt-4o-mini", messages=messages, stream=True)
        return [whole.model_dump(), [chunk.model_dump() async for chunk in chunks]], tapped


async def test_an_export_imported_on_a_fresh_home_replays_offline(
    aiohttp_server: Any, serves: Serves, tmp_path: Path
) -> None:
    clear, record, export, import_, offline = recipe_commands()
    assert (clear, record, export, import_, offline) == (
        ["cache", "clear"],
        ["serve", "--cache", "record"],
        ["cache", "export", "-o", EXPORTED],
        ["cache", "import", EXPORTED],
        ["serve", "--cache", "offline"],
    )
    project = tmp_path / "project"
    (project / "tests").mkdir(parents=True)

    # Your machine: the config file as a first run writes it, openai's URL at the scripted target.
    target = NumberedTarget("openai")
    server = await aiohttp_server(target.app(), host="127.0.0.1")
    address = str(server.make_url("")).rstrip("/")
    config_path().parent.mkdir(parents=True)
    config_path().write_text(DEFAULT_CONFIG.replace("https://api.openai.com", address))
    # A notebook session recorded before: the recipe's clear keeps it out of the export.
    with RecordingStore.open() as store:
        assert store.put(chat_exchange("PRIVATE: my medical report"), max_bytes=64 * 1024 * 1024)
    assert run_cli(*clear).returncode == 0
    yours = serves.start(None, *record[1:], env={"OPENAI_API_KEY": DEV_KEY})
    recorded, recorded_tap = await suite(yours.url)
    exported = run_cli(*export, cwd=project)
    assert exported.returncode == 0, exported.stderr
    yours.process.stop()
    await server.close()
    text = (project / EXPORTED).read_text()
    assert len(text.splitlines()) == 2
    assert DEV_KEY not in text
    assert "PRIVATE" not in text
    assert len(target.received) == 2
    assert target.received[0].header("Authorization") == f"Bearer {DEV_KEY}"

    # CI: a home of its own, no config file, no key, the target gone. An outgoing proxy that
    # refuses everything: a request that did try to leave would fail here, never reach a network.
    ci = {
        **os.environ,
        **home_environ(tmp_path / "ci-home"),
        "HTTPS_PROXY": f"http://127.0.0.1:{dead_port()}",
    }
    imported = run_cli(*import_, cwd=project, env=ci)
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.startswith(f"Imported 2 recorded answers from {EXPORTED} into ")
    on_ci = serves.start(None, *offline[1:], env=ci, wait=False)
    if shutil.which("curl"):  # the recipe's wait, as written
        waiting = await asyncio.create_subprocess_exec("sh", "-c", wait_line(on_ci.port))
        try:
            assert await asyncio.wait_for(waiting.wait(), START_TIMEOUT_S) == 0
        finally:
            if waiting.returncode is None:  # it never saw serve answer: stop its loop
                waiting.kill()
                await waiting.wait()
    serves.wait(on_ci)
    replayed, replayed_tap = await suite(on_ci.url)
    assert replayed == recorded
    assert [answer.pieces for answer in replayed_tap.answers] == [
        answer.pieces for answer in recorded_tap.answers
    ]
    async with openai_client(on_ci.url + "/v1") as (client, _):
        with pytest.raises(openai.APIStatusError) as refused:
            await client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "Weather in Rome?"}]
            )
    assert (refused.value.status_code, refused.value.code) == (504, "cache_offline_miss")
    assert "on target openai" in refused.value.message
    assert "none with this body and query" in refused.value.message  # what is recorded instead
    assert on_ci.cache_outcomes(3) == ["hit", "hit", "offline-miss"]
    # The CI log says it runs offline (it read "-> https://api.openai.com" alone: cold user trial).
    assert any("recorded answers: offline (Ctrl+C stops)" in line for line in on_ci.process.lines_with("TrayProxy "))
    assert (tmp_path / "ci-home" / "config" / "TrayProxy" / "config.toml").exists()  # a first run
