"""Routes on one port, through a real ``trayproxy serve`` (issue 14, "Done when").

One main port serves several targets: ``gpt-*`` goes to one, ``claude-*`` to another, each with
its own key and never the other's, streamed or not; the Anthropic target also claims the prefix
``/anthropic`` (a tool's ``ANTHROPIC_BASE_URL=http://127.0.0.1:8000/anthropic``); ``/defm/...``
goes to the target claiming that prefix, the prefix stripped and the query kept, and a redirect
from it comes back under the prefix; a WebSocket is relayed by prefix or by its ``?model=``; a
``model_map`` renames the model in the body the target gets and leaves the answer alone.
Everything else reaches the chosen target as before. The openai and anthropic SDKs are the real
ones; httpx makes only the requests no SDK sends (a curl, a chunked or exact body, Gemini's and
Azure's paths).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass

import anthropic
import httpx
import openai
import pytest
from background import BackgroundServer
from llm_targets import MESSAGE_PIECES, Received, TargetLog, llm_app
from route_serve import RunningServe, StartServe
from sdk_clients import PLACEHOLDER, anthropic_sdk
from wsclients import ws_client

OPENAI_KEY = "sk-routes-openai-0123456789abcdef"
ANTHROPIC_KEY = "sk-ant-routes-anthropic-0123456789abcdef"
OPENROUTER_KEY = "sk-or-routes-openrouter-0123456789abcdef"
GEMINI_KEY = "AIza-routes-gemini-0123456789abcdef"
KEYS = (OPENAI_KEY, ANTHROPIC_KEY, OPENROUTER_KEY, GEMINI_KEY)
CLIENT_TIMEOUT_S = 15.0
TARGETS = ("chosen", "openai", "anthropic", "openrouter", "defm", "gemini")


@dataclass
class Routed:
    """The running serve and what each of its targets received."""

    serve: RunningServe
    logs: dict[str, TargetLog]

    def tagged(self, case: str) -> dict[str, int]:
        """How many requests marked ``X-Test-Case: case`` each target received."""
        return {name: len(log.tagged(case)) for name, log in self.logs.items()}


def config_text(urls: dict[str, str]) -> str:
    return f"""\
active = "chosen"
[listen]
hosts = ["127.0.0.1"]
port = {{port}}

[targets.chosen]
url = "{urls["chosen"]}"

[targets.openai]
url = "{urls["openai"]}"
key = {{ env = "TP_ROUTES_OPENAI_KEY" }}
headers = {{ Authorization = "Bearer {{key}}" }}
models = ["gpt-*", "o[0-9]*"]
model_map = {{ "gpt-realtime-mini" = "gpt-4o-mini-realtime-preview" }}

[targets.anthropic]
url = "{urls["anthropic"]}"
key = {{ env = "TP_ROUTES_ANTHROPIC_KEY" }}
headers = {{ x-api-key = "{{key}}" }}
models = ["claude-*"]
prefix = "/anthropic"

[targets.openrouter]
url = "{urls["openrouter"]}/api"
key = {{ env = "TP_ROUTES_OPENROUTER_KEY" }}
headers = {{ Authorization = "Bearer {{key}}" }}
models = ["llama-*"]
model_map = {{ "llama-3.3-70b" = "meta-llama/llama-3.3-70b-instruct" }}

[targets.defm]
url = "{urls["defm"]}/base"
prefix = "/defm"

[targets.gemini]
url = "{urls["gemini"]}"
key = {{ env = "TP_ROUTES_GEMINI_KEY" }}
headers = {{ x-goog-api-key = "{{key}}" }}
models = ["gemini-*"]
model_map = {{ "gemini-2.5-pro" = "gemini-2.5-pro-preview-06-05" }}
"""


@pytest.fixture(scope="module")
def routed(start_serve: StartServe) -> Iterator[Routed]:
    logs = {name: TargetLog(name) for name in TARGETS}
    with ExitStack() as stack:
        urls = {name: stack.enter_context(BackgroundServer(llm_app(name, logs[name]))).url for name in TARGETS}
        serve = start_serve(
            config_text(urls),
            {
                "TP_ROUTES_OPENAI_KEY": OPENAI_KEY,
                "TP_ROUTES_ANTHROPIC_KEY": ANTHROPIC_KEY,
                "TP_ROUTES_OPENROUTER_KEY": OPENROUTER_KEY,
                "TP_ROUTES_GEMINI_KEY": GEMINI_KEY,
            },
        )
        yield Routed(serve, logs)
        log = serve.process.stop()
        for key in KEYS:
            assert key not in log


def client() -> httpx.Client:
    return httpx.Client(trust_env=False, timeout=CLIENT_TIMEOUT_S)


def assert_only_anthropics_key(received: Received) -> None:
    """The Anthropic target got its own key in ``x-api-key`` and nobody else's: no other
    target's key, no tool placeholder, no ``Authorization``."""
    assert received.header("x-api-key") == [ANTHROPIC_KEY]
    assert received.header("Authorization") == []
    values = " ".join(value for _, value in received.headers)
    assert not any(other in values for other in (OPENAI_KEY, OPENROUTER_KEY, GEMINI_KEY, PLACEHOLDER))


def test_gpt_and_claude_reach_their_own_targets_on_one_port_each_with_its_own_key(routed: Routed) -> None:
    """One address for both SDKs: the openai SDK's ``gpt-*`` request reaches the OpenAI target
    with the OpenAI key, the anthropic SDK's ``claude-*`` request the Anthropic target with the
    Anthropic key; neither target sees the other's key or the tool's placeholder, and the
    chosen (default) target sees neither request."""
    with client() as http:
        sdk = openai.OpenAI(
            base_url=f"{routed.serve.url}/v1", api_key=PLACEHOLDER, max_retries=0, http_client=http
        )
        completion = sdk.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"X-Test-Case": "sdks"},
        )
    with anthropic_sdk(routed.serve.url, timeout_s=CLIENT_TIMEOUT_S) as claude:
        message = claude.messages.create(
            model="claude-sonnet-4-5",
            max_tokens=16,
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"X-Test-Case": "sdks"},
        )
    assert completion.choices[0].message.content == "hello from openai"
    assert message.content[0].type == "text"
    assert message.content[0].text == "hello from anthropic"
    assert routed.tagged("sdks") == {"chosen": 0, "openai": 1, "anthropic": 1, "openrouter": 0, "defm": 0, "gemini": 0}

    [at_openai] = routed.logs["openai"].tagged("sdks")
    assert at_openai.raw_path == "/v1/chat/completions"
    assert at_openai.header("Authorization") == [f"Bearer {OPENAI_KEY}"]
    assert at_openai.header("x-api-key") == []
    [at_anthropic] = routed.logs["anthropic"].tagged("sdks")
    assert at_anthropic.raw_path == "/v1/messages"
    assert_only_anthropics_key(at_anthropic)
    values = " ".join(value for _, value in at_openai.headers)
    assert not any(other in values for other in (ANTHROPIC_KEY, PLACEHOLDER))

    line = routed.serve.access_line('"POST /v1/chat/completions" via model:gpt-* ')
    assert " -> openai 200 " in line
    line = routed.serve.access_line('"POST /v1/messages" via model:claude-* ')
    assert " -> anthropic 200 " in line


def read_stream(sdk: anthropic.Anthropic, how: str, model: str, case: str) -> tuple[list[str], str]:
    """Stream a message from ``model`` the way ``how`` names, marked ``X-Test-Case: case`` and
    ``?case=case`` (so its access line is its own): the text pieces as they came, and the text
    of the message the SDK made of the whole stream (``messages.stream``) or of its events
    (``stream=True``)."""
    arguments = {
        "model": model,
        "max_tokens": 16,
        "messages": [{"role": "user", "content": "hi"}],
        "extra_headers": {"X-Test-Case": case},
        "extra_query": {"case": case},
    }
    if how == "messages.stream":
        with sdk.messages.stream(**arguments) as stream:
            pieces = list(stream.text_stream)
            final = stream.get_final_message()
        assert final.content[0].type == "text"
        return pieces, final.content[0].text
    events = list(sdk.messages.create(stream=True, **arguments))
    assert (events[0].type, events[-1].type) == ("message_start", "message_stop")
    pieces = [event.delta.text for event in events if event.type == "content_block_delta"]
    return pieces, "".join(pieces)


@pytest.mark.parametrize(("how", "case"), [("messages.stream", "stream-helper"), ("stream=True", "stream-events")])
def test_a_streamed_claude_message_arrives_from_its_target_through_the_anthropic_sdk(
    routed: Routed, how: str, case: str
) -> None:
    """``claude-*`` streamed on the main port: the anthropic SDK gets the Anthropic target's
    event stream, its text in the pieces it was sent in, and makes the whole message of it;
    the target got the streaming request with its own key only."""
    with anthropic_sdk(routed.serve.url, timeout_s=CLIENT_TIMEOUT_S) as claude:
        pieces, text = read_stream(claude, how, "claude-sonnet-4-5", case)
    assert pieces == [*MESSAGE_PIECES, " anthropic"]
    assert text == "hello from anthropic"
    assert routed.tagged(case) == {name: int(name == "anthropic") for name in TARGETS}
    [received] = routed.logs["anthropic"].tagged(case)
    assert received.raw_path == f"/v1/messages?case={case}"
    assert received.json()["stream"] is True
    assert_only_anthropics_key(received)
    line = routed.serve.access_line(f'"POST /v1/messages?case={case}" ')
    assert " via model:claude-* -> anthropic 200 " in line


@pytest.mark.parametrize(
    ("model", "stream"),
    [
        pytest.param("claude-sonnet-4-5", False, id="claude"),
        pytest.param("claude-sonnet-4-5", True, id="claude-streamed"),
        pytest.param("llama-3.3-70b", False, id="a-model-the-gateway-claims"),
    ],
)
def test_the_anthropic_sdk_under_the_anthropic_prefix_reaches_that_target_alone(
    routed: Routed, model: str, stream: bool
) -> None:
    """``ANTHROPIC_BASE_URL=http://127.0.0.1:8000/anthropic``: the SDK's ``/anthropic/v1/messages``
    reaches the Anthropic target as ``/v1/messages`` with its key, streamed or not. The prefix
    decides before the model: a model the gateway claims (and would rename) goes to the
    Anthropic target too, named as sent; the gateway and the OpenAI target see nothing."""
    case = f"prefix-{model}-{'streamed' if stream else 'whole'}"
    with anthropic_sdk(f"{routed.serve.url}/anthropic", timeout_s=CLIENT_TIMEOUT_S) as claude:
        if stream:
            pieces, text = read_stream(claude, "messages.stream", model, case)
            assert pieces == [*MESSAGE_PIECES, " anthropic"]
        else:
            message = claude.messages.create(
                model=model,
                max_tokens=16,
                messages=[{"role": "user", "content": "hi"}],
                extra_headers={"X-Test-Case": case},
                extra_query={"case": case},
            )
            assert message.content[0].type == "text"
            text = message.content[0].text
            assert message.model == model
    assert text == "hello from anthropic"
    assert routed.tagged(case) == {name: int(name == "anthropic") for name in TARGETS}
    [received] = routed.logs["anthropic"].tagged(case)
    assert received.raw_path == f"/v1/messages?case={case}"
    assert received.json()["model"] == model
    assert_only_anthropics_key(received)
    line = routed.serve.access_line(f'"POST /anthropic/v1/messages?case={case}" ')
    assert " via prefix:/anthropic -> anthropic 200 " in line


def test_a_models_list_under_a_prefix_reaches_that_target_with_the_prefix_stripped_and_the_query_kept(
    routed: Routed,
) -> None:
    """``curl http://127.0.0.1:8000/defm/v1/models`` lists the ``defm`` target's models (its
    URL's base path in front, the query as sent); a path that only starts with the same letters
    (``/defmx``) and a plain ``/v1/models`` (no body, no model) go to the chosen target."""
    with client() as http:
        prefixed = http.get(f"{routed.serve.url}/defm/v1/models?limit=2&after=a%2Fb", headers={"X-Test-Case": "list"})
        lookalike = http.get(f"{routed.serve.url}/defmx/v1/models", headers={"X-Test-Case": "list"})
        plain = http.get(f"{routed.serve.url}/v1/models", headers={"X-Test-Case": "list"})
    assert prefixed.status_code == 200
    assert prefixed.json()["target"] == "defm"
    assert prefixed.json()["raw_path"] == "/base/v1/models?limit=2&after=a%2Fb"
    assert lookalike.json() == {"target": "chosen", "method": "GET", "raw_path": "/defmx/v1/models"}
    assert plain.json() == {"target": "chosen", "method": "GET", "raw_path": "/v1/models"}
    assert routed.tagged("list") == {"chosen": 2, "openai": 0, "anthropic": 0, "openrouter": 0, "defm": 1, "gemini": 0}
    line = routed.serve.access_line('"GET /defm/v1/models?limit=2&after=a%2Fb" via prefix:/defm ')
    assert " -> defm 200 " in line


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        pytest.param("{self}/base/v1/next?page=2", "http://127.0.0.1:{port}/defm/v1/next?page=2", id="absolute"),
        pytest.param("/base/v1/next", "/defm/v1/next", id="path"),
    ],
)
def test_a_redirect_from_a_prefix_target_comes_back_under_the_prefix(
    routed: Routed, location: str, expected: str
) -> None:
    """A ``Location`` pointing into the ``defm`` target (its URL, or its base path) comes back
    pointing at the same place behind ``/defm`` on the proxy, so a tool that follows it stays
    on the route instead of landing on the chosen target."""
    with client() as http:
        response = http.get(f"{routed.serve.url}/defm/redirect", params={"to": location})
    assert response.status_code == 302
    assert response.headers.get_list("Location") == [expected.format(port=routed.serve.port)]


async def test_websockets_are_relayed_by_prefix_and_by_their_model_query(routed: Routed) -> None:
    """``ws://…/defm/v1/realtime`` is relayed to the ``defm`` target (prefix stripped), and an
    OpenAI Realtime upgrade ``/v1/realtime?model=gpt-realtime`` to the OpenAI target with its
    key; messages then go both ways."""
    ws_base = f"ws://127.0.0.1:{routed.serve.port}"
    async with ws_client(f"{ws_base}/defm/v1/realtime?session=1") as ws:
        hello = json.loads(await ws.recv())
        await ws.send("ping prefix")
        echoed = await ws.recv()
    assert hello == {"target": "defm", "path": "/base/v1/realtime?session=1", "authorization": []}
    assert echoed == "ping prefix"

    async with ws_client(
        f"{ws_base}/v1/realtime?model=gpt-realtime", additional_headers={"Authorization": f"Bearer {PLACEHOLDER}"}
    ) as ws:
        hello = json.loads(await ws.recv())
        await ws.send("ping model")
        echoed = await ws.recv()
    assert hello == {
        "target": "openai",
        "path": "/v1/realtime?model=gpt-realtime",
        "authorization": [f"Bearer {OPENAI_KEY}"],
    }
    assert echoed == "ping model"
    assert "via model:gpt-* -> openai 101" in routed.serve.access_line('"GET /v1/realtime?model=gpt-realtime"')


def test_a_model_map_renames_the_model_the_target_gets_and_passes_the_answer_back_as_sent(
    routed: Routed,
) -> None:
    """``llama-3.3-70b`` is claimed by the gateway, which knows it as
    ``meta-llama/llama-3.3-70b-instruct``: the gateway gets that name, every other byte of the
    body as sent and a Content-Length that fits; the answer (naming the gateway's model) reaches
    the tool byte for byte."""
    body = (
        '{"model": "llama-3.3-70b", "messages": [{"role": "user", "content": "h\\u00e9, h\u00e9"}],'
        ' "temperature": 0.5}'
    ).encode()
    with client() as http:
        response = http.post(
            f"{routed.serve.url}/v1/chat/completions",
            content=body,
            headers={"Content-Type": "application/json", "X-Test-Case": "map"},
        )
    assert response.status_code == 200
    assert routed.tagged("map") == {"chosen": 0, "openai": 0, "anthropic": 0, "openrouter": 1, "defm": 0, "gemini": 0}
    [received] = routed.logs["openrouter"].tagged("map")
    assert received.raw_path == "/api/v1/chat/completions"
    assert received.body == body.replace(b'"llama-3.3-70b"', b'"meta-llama/llama-3.3-70b-instruct"')
    assert received.header("Content-Length") == [str(len(received.body))]
    assert received.header("Authorization") == [f"Bearer {OPENROUTER_KEY}"]
    assert response.content == received.answer
    assert response.json()["model"] == "meta-llama/llama-3.3-70b-instruct"
    line = routed.serve.access_line('"POST /v1/chat/completions" via model:llama-* ')
    assert " -> openrouter 200 " in line


@pytest.mark.parametrize(
    ("path", "target", "key_header", "key"),
    [
        pytest.param(
            "/v1beta/models/gemini-2.0-flash:generateContent", "gemini", "x-goog-api-key", GEMINI_KEY, id="gemini"
        ),
        pytest.param(
            "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21",
            "openai",
            "Authorization",
            f"Bearer {OPENAI_KEY}",
            id="azure",
        ),
    ],
)
def test_a_model_named_in_the_path_picks_its_target(
    routed: Routed, path: str, target: str, key_header: str, key: str
) -> None:
    """Gemini names the model in the path (``/models/{model}:generateContent``) and Azure the
    deployment (``/deployments/{name}/``); the body's own ``model`` (here a Claude name) does not
    override it. The request reaches that target with its key, path and query as sent."""
    case = f"path-{target}"
    with client() as http:
        response = http.post(
            f"{routed.serve.url}{path}",
            json={"model": "claude-sonnet-4-5", "contents": []},
            headers={"X-Test-Case": case},
        )
    assert response.status_code == 200
    counts = routed.tagged(case)
    assert counts == {name: int(name == target) for name in TARGETS}
    [received] = routed.logs[target].tagged(case)
    assert received.raw_path == path
    assert received.header(key_header) == [key]


@pytest.mark.parametrize("how", ["chunked", "over-1-MiB"])
def test_a_body_that_is_not_held_is_not_read_for_its_model(routed: Routed, how: str) -> None:
    """Only a body the proxy holds anyway (<= 1 MiB with a Content-Length) is looked into: a
    streamed one naming ``claude-*`` goes, unread and whole, to the chosen target."""
    body = b'{"model": "claude-sonnet-4-5", "max_tokens": 16, "messages": []'
    if how == "over-1-MiB":
        body += b', "pad": "' + b"x" * (1024 * 1024) + b'"'
    body += b"}"
    content: bytes | Iterator[bytes] = iter([body[:20], body[20:]]) if how == "chunked" else body
    with client() as http:
        response = http.post(
            f"{routed.serve.url}/v1/messages",
            content=content,
            headers={"Content-Type": "application/json", "X-Test-Case": how},
        )
    assert response.status_code == 200
    assert routed.tagged(how) == {name: int(name == "chosen") for name in TARGETS}
    [received] = routed.logs["chosen"].tagged(how)
    assert received.body == body


async def test_a_model_named_in_the_path_or_the_upgrade_query_is_renamed_there(routed: Routed) -> None:
    """A model_map renames the model where the API names it: in Gemini's path segment and in a
    Realtime upgrade's ``?model=``, every other byte of path and query kept."""
    with client() as http:
        response = http.post(
            f"{routed.serve.url}/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse",
            json={"contents": []},
            headers={"X-Test-Case": "rename-path"},
        )
    assert response.status_code == 200
    [received] = routed.logs["gemini"].tagged("rename-path")
    assert received.raw_path == "/v1beta/models/gemini-2.5-pro-preview-06-05:streamGenerateContent?alt=sse"

    async with ws_client(f"ws://127.0.0.1:{routed.serve.port}/v1/realtime?model=gpt-realtime-mini&x=1") as ws:
        hello = json.loads(await ws.recv())
    assert hello["target"] == "openai"
    assert hello["path"] == "/v1/realtime?model=gpt-4o-mini-realtime-preview&x=1"
