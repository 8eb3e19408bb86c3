"""Copy environment and `trayproxy env` with routes on the main port (issue 14): a prefix is an
address, and model routes let both SDKs use the main port."""

from __future__ import annotations

import json
import os
import urllib.request
from pathlib import Path

import pytest
from background import BackgroundServer, free_port
from cli_process import run_cli
from upstreams import Seen, echo_app

from desktop.clients import PLACEHOLDER_KEY
from desktop.controller import ConfigBinding, ProxyController
from desktop.tray.app import TrayApp


def routed_config(path: Path, *, anthropic_routes: str, port: int = 8000) -> None:
    """The chosen openai target (adds Authorization) and an anthropic one (adds x-api-key)
    reached on the main port by ``anthropic_routes``; neither has a port of its own."""
    path.write_text(
        f'active = "openai"\n[listen]\nhosts = ["127.0.0.1"]\nport = {port}\n'
        '[targets.openai]\nurl = "http://127.0.0.1:9"\n'
        'key = { env = "OPENAI_API_KEY" }\nheaders = { Authorization = "Bearer {key}" }\n'
        '[targets.anthropic]\nurl = "http://127.0.0.1:9"\n'
        'key = { env = "ANTHROPIC_API_KEY" }\nheaders = { x-api-key = "{key}" }\n'
        f"{anthropic_routes}\n"
    )


def printed_env(config: Path, shell: str = "posix") -> tuple[dict[str, str], list[str]]:
    """`trayproxy env`'s variables and comment lines for ``config``."""
    printed = run_cli("env", "--shell", shell, "--config", str(config))
    assert printed.returncode == 0, printed.stderr
    lines = printed.stdout.splitlines()
    variables = dict(line.removeprefix("export ").split("=", 1) for line in lines if not line.startswith("#"))
    return variables, [line for line in lines if line.startswith("#")]


def test_env_points_the_anthropic_sdk_at_the_prefix_its_target_claims(tmp_path: Path) -> None:
    """`prefix = "/anthropic"` on the anthropic target: ANTHROPIC_BASE_URL is the main port
    with that prefix, where before the Anthropic SDK got no line and a comment asking for a
    port of its own."""
    config = tmp_path / "config.toml"
    routed_config(config, anthropic_routes='prefix = "/anthropic"')
    variables, notes = printed_env(config)
    assert variables == {
        "OPENAI_BASE_URL": "http://127.0.0.1:8000/v1",
        "OPENAI_API_BASE": "http://127.0.0.1:8000/v1",
        "ANTHROPIC_BASE_URL": "http://127.0.0.1:8000/anthropic",
        "OPENAI_API_KEY": PLACEHOLDER_KEY,
        "ANTHROPIC_API_KEY": PLACEHOLDER_KEY,
    }
    assert len(notes) == 1
    assert notes[0].startswith("# OPENAI_API_KEY, ANTHROPIC_API_KEY hold a placeholder")


def test_env_says_both_sdks_may_use_the_main_port_when_models_route_there(tmp_path: Path) -> None:
    """`models = ["claude-*"]` on the anthropic target while openai is chosen: both SDKs get the
    main port, and a comment says claude-* go to anthropic and the rest to openai."""
    config = tmp_path / "config.toml"
    routed_config(config, anthropic_routes='models = ["claude-*"]')
    variables, notes = printed_env(config)
    assert variables["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:8000"
    assert variables["OPENAI_BASE_URL"] == "http://127.0.0.1:8000/v1"
    assert notes[1:] == [
        "# both SDKs may use the main port: requests for models claude-* go to 'anthropic'; all others, and bodies over 1 MiB, to 'openai'"
    ]


@pytest.mark.skipif(os.name != "posix", reason="the stand-in clipboard tool is a sh script")
@pytest.mark.parametrize(
    ("routes", "anthropic_path"), [('prefix = "/anthropic"', "/anthropic"), ('models = ["claude-*"]', "")]
)
def test_copied_lines_match_trayproxy_env_and_reach_each_target_on_the_main_port(
    tmp_path: Path, clipboard: Path, monkeypatch: pytest.MonkeyPatch, routes: str, anthropic_path: str
) -> None:
    """With a routed config running, Copy environment ▸ POSIX copies what `trayproxy env`
    prints, and the lines work: the Anthropic SDK's request reaches the anthropic target with
    its key (by the prefix, or by the claude-* model it names), the OpenAI SDK's the chosen
    openai target with its own, both through the main port alone."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-routes-test-key")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-anthropic-routes-test-key")
    openai_seen, anthropic_seen = Seen(), Seen()
    port = free_port()
    with (
        BackgroundServer(echo_app(openai_seen)) as openai,
        BackgroundServer(echo_app(anthropic_seen)) as anthropic,
    ):
        config = tmp_path / "config.toml"
        routed_config(config, anthropic_routes=routes, port=port)
        config.write_text(
            config.read_text()
            .replace("http://127.0.0.1:9", openai.url, 1)
            .replace("http://127.0.0.1:9", anthropic.url)
        )
        controller = ProxyController.from_config(ConfigBinding(config, watch=False))
        try:
            controller.start()
            TrayApp(controller, log_dir=tmp_path / "log").act("copy-env", "posix")
            lines = copied_variables(clipboard)
            messages = urllib.request.Request(
                lines["ANTHROPIC_BASE_URL"] + "/v1/messages",
                data=json.dumps({"model": "claude-sonnet-4-5", "max_tokens": 8, "messages": []}).encode(),
                headers={"x-api-key": lines["ANTHROPIC_API_KEY"], "content-type": "application/json"},
            )
            models = urllib.request.Request(
                lines["OPENAI_BASE_URL"] + "/models",
                headers={"Authorization": f"Bearer {lines['OPENAI_API_KEY']}"},
            )
            for request in (messages, models):
                with urllib.request.urlopen(request, timeout=5) as answer:
                    assert answer.status == 200
        finally:
            controller.close(grace_s=0.5)
    printed = run_cli("env", "--config", str(config))
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout == clipboard.read_text()
    assert lines["ANTHROPIC_BASE_URL"] == f"http://127.0.0.1:{port}{anthropic_path}"
    assert lines["OPENAI_BASE_URL"] == f"http://127.0.0.1:{port}/v1"
    assert [request["raw_path"] for request in anthropic_seen.requests] == ["/v1/messages"]
    assert ["x-api-key", "sk-anthropic-routes-test-key"] in anthropic_seen.requests[0]["headers"]  # type: ignore[operator]
    assert [request["raw_path"] for request in openai_seen.requests] == ["/v1/models"]
    assert ["Authorization", "Bearer sk-openai-routes-test-key"] in openai_seen.requests[0]["headers"]  # type: ignore[operator]


def copied_variables(clipboard: Path) -> dict[str, str]:
    lines = clipboard.read_text().splitlines()
    return dict(line.removeprefix("export ").split("=", 1) for line in lines if not line.startswith("#"))
