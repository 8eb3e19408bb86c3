"""Copy environment and `trayproxy env` with routes on the main port (issue 14): a prefix is an
address, and model routes let both SDKs use the main port."""

from __future__ import annotations

from pathlib import Path

from cli_process import run_cli

from desktop.clients import PLACEHOLDER_KEY


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
        "# both SDKs may use the main port: requests for models claude-* go to 'anthropic'; all others to 'openai'"
    ]
