"""Values the parser once took but the proxy could not use (issue 13's attacker trial).

Each passed `trayproxy config check`, then broke what a person relies on: arrays nested a
thousand deep raised RecursionError out of the parser (a reload failed with no config error in
the status; `config check` and `serve` ended in a traceback); `connect_timeout = nan`, a target
port 99999 or a line break in a header value made every request fail with 500; `hosts = [""]`
or `["0"]` listened on every interface. Each is now a config error at its line and column
saying what to write, `serve`'s flags are refused the same way, and a running proxy keeps its
last good config when such an edit is saved.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import httpx
import pytest
from background import BackgroundServer, wait_until
from cli_process import run_cli
from hypothesis import given
from hypothesis import strategies as st
from upstreams import Seen, echo_app

from desktop.config.keys import resolve_target
from desktop.config.model import ProxySettings, Secret, Target
from desktop.config.parse import ConfigError, parse_config
from desktop.controller import ConfigBinding, ProxyController

PATH = "/home/me/.config/TrayProxy/config.toml"
# Written into header values that must be refused: no message may quote it.
HEADER_SECRET = "tp-header-secret-4b1d9e"
# The watcher's poll in the reload test: fast, so five edits take seconds.
POLL_S = 0.2
# A reload (a poll, a parse, a plan) on a loaded machine fits well inside this.
FOLLOW_TIMEOUT_S = 10.0
CLIENT_TIMEOUT_S = 10.0


def errors_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, path=PATH)
    return str(info.value).splitlines()


def nested(opener: str, depth: int) -> str:
    """A value ``depth`` arrays or inline tables deep."""
    if opener == "[":
        return "[" * depth + "]" * depth
    return "{a=" * depth + "1" + "}" * depth


def target_text(url: str = "http://127.0.0.1:9", extra: str = "") -> str:
    """One target; ``extra`` goes on line 5."""
    return f'active = "a"\n[targets.a]\nurl = "{url}"\nkey = {{ env = "K" }}\n{extra}\n'


@pytest.mark.parametrize(
    ("value", "col"),
    [
        pytest.param(nested("[", 1000), 105, id="arrays"),
        pytest.param(nested("{", 600), 305, id="inline-tables"),
        pytest.param("[{a=" + nested("[", 120) + "}]", 107, id="mixed"),
    ],
)
def test_a_file_nested_too_deeply_is_a_config_error_at_its_position(value: str, col: int) -> None:
    """`x = [[[...]]]` a thousand deep is refused where it passes 100 levels, saying so,
    instead of crashing the parser with RecursionError."""
    errors = errors_of(f'[targets.a]\nurl = "http://127.0.0.1:9"\nx = {value}\n')
    assert errors == [
        f"{PATH}:3:{col}: arrays or inline tables nest more than 100 levels deep here;"
        " TrayProxy's settings need 2 at most: remove the extra '[' or '{'"
    ]


def test_only_real_nesting_counts_not_brackets_in_strings_or_comments() -> None:
    """Brackets in strings (of every TOML kind) and in comments are text: a file full of them
    parses; one array nested past 100 levels below them is still found, on its own line."""
    many = "[" * 150
    text = (
        f'# {many}\n[targets.a]\nurl = "http://127.0.0.1:9"\n'
        f'headers = {{ X-A = "{many}\\"{many}", X-B = \'{many}\' }}  # {many}\n'
        f'strip_headers = ["""\n{many}\n""", \'\'\'{many}\'\'\']\n'
    )
    assert parse_config(text).targets["a"].headers == (("X-A", f'{many}"{many}'), ("X-B", many))
    assert errors_of(f"{text}x = {nested('[', 101)}\n") == [
        f"{PATH}:8:105: arrays or inline tables nest more than 100 levels deep here;"
        " TrayProxy's settings need 2 at most: remove the extra '[' or '{'"
    ]


@given(depth=st.integers(min_value=0, max_value=3000), opener=st.sampled_from("[{"))
def test_any_nesting_gives_a_config_or_a_config_error(depth: int, opener: str) -> None:
    """However deep the file nests, the app gets an error it can show, never a crash."""
    with pytest.raises(ConfigError):
        parse_config(f"x = {nested(opener, depth)}\n")


@pytest.mark.parametrize(
    ("url", "extra", "expected"),
    [
        pytest.param(
            "http://127.0.0.1:9",
            "connect_timeout = nan",
            ":5:1: 'targets.a.connect_timeout' must be a number of seconds more than 0, such as 10 or 0.5, not nan",
            id="connect-timeout-nan",
        ),
        pytest.param(
            "http://127.0.0.1:9",
            "connect_timeout = inf",
            ":5:1: 'targets.a.connect_timeout' must be a number of seconds more than 0, such as 10 or 0.5, not inf",
            id="connect-timeout-inf",
        ),
        pytest.param(
            "http://127.0.0.1:9",
            "read_timeout = nan",
            ":5:1: 'targets.a.read_timeout' must be a number of seconds more than 0",
            id="read-timeout-nan",
        ),
        pytest.param(
            "http://127.0.0.1:9",
            "read_timeout = +inf",
            ":5:1: 'targets.a.read_timeout' must be a number of seconds more than 0",
            id="read-timeout-inf",
        ),
        pytest.param(
            "http://127.0.0.1:99999",
            "",
            ":3:1: 'http://127.0.0.1:99999' has a port that is not a number from 1 to 65535",
            id="url-port-too-big",
        ),
        pytest.param(
            "http://127.0.0.1:8o80/v1",
            "",
            ":3:1: 'http://127.0.0.1:8o80/v1' has a port that is not a number from 1 to 65535",
            id="url-port-not-a-number",
        ),
        pytest.param(
            "http://127.0.0.1:0",
            "",
            ":3:1: 'http://127.0.0.1:0' has port 0, which no server listens on; write its port (1 to 65535)",
            id="url-port-0",
        ),
        pytest.param(
            "http://127.0.0.1:9",
            'proxy = "http://127.0.0.1:70000"',
            ":5:1: proxy 'http://127.0.0.1:70000' has a port that is not a number from 1 to 65535",
            id="proxy-port",
        ),
        pytest.param(
            "http://127.0.0.1:9",
            f'headers = {{ Authorization = "Bearer {{key}}\\r\\nX-Injected: {HEADER_SECRET}" }}',
            ":5:1: 'targets.a.headers' cannot be sent: the value of 'Authorization' holds a carriage return"
            " (\\r), which a header cannot carry; remove it",
            id="header-crlf",
        ),
        pytest.param(
            "http://127.0.0.1:9",
            f'headers = {{ X-Team = "{HEADER_SECRET}\\n" }}',
            ":5:1: 'targets.a.headers' cannot be sent: the value of 'X-Team' holds a line feed (\\n)",
            id="header-lf",
        ),
        pytest.param(
            "http://127.0.0.1:9",
            f'headers = {{ X-Team = "{HEADER_SECRET}\\u0000" }}',
            ":5:1: 'targets.a.headers' cannot be sent: the value of 'X-Team' holds a NUL byte",
            id="header-nul",
        ),
        pytest.param(
            "http://127.0.0.1:9",
            f'headers = {{ X-Team = "{HEADER_SECRET}\\u001b" }}',
            ":5:1: 'targets.a.headers' cannot be sent: the value of 'X-Team' holds the control character U+001B",
            id="header-escape",
        ),
        pytest.param(
            "http://127.0.0.1:9",
            'headers = { "X Team" = "ml" }',
            ":5:1: 'targets.a.headers' cannot be sent: 'X Team' is not a header name",
            id="header-name",
        ),
    ],
)
def test_values_the_proxy_cannot_use_are_refused_at_their_line(url: str, extra: str, expected: str) -> None:
    """Each of these passed the parser, and then every request failed with 500."""
    errors = errors_of(target_text(url, extra))
    assert any(line.startswith(f"{PATH}{expected}") for line in errors), errors
    assert not any(HEADER_SECRET in line for line in errors)


def test_listen_hosts_must_be_host_names_or_ip_addresses() -> None:
    """An IP address or a host name listens where it says; "" and "0" (which asyncio took as
    every interface), a bracketed or shortened address, or a word with a space are refused."""
    good = ("127.0.0.1", "::1", "0.0.0.0", "::", "localhost", "devbox.local", "my_box.lan.", "fe80::1%eth0")
    hosts = ", ".join(f'"{host}"' for host in good)
    assert parse_config(f"{target_text()}[listen]\nhosts = [{hosts}]\n").settings.hosts == good
    for host, words in (
        ("", "holds '', which is not a host name or an IP address; write one such as \"127.0.0.1\""),
        ("0", "holds '0', which is read by the system as 0.0.0.0, every interface; write \"0.0.0.0\" if"),
        ("0x0", "holds '0x0', which is read by the system as 0.0.0.0"),
        ("127.1", "holds '127.1', which is read by the system as 127.0.0.1"),
        ("[::1]", "holds '[::1]', which is an IPv6 address in brackets; write it without them, as \"::1\""),
        ("my box", "holds 'my box', which is not a host name or an IP address"),
        ("*", "holds '*', which is not a host name or an IP address"),
        ("1.2.3.4.5", "holds '1.2.3.4.5', which is not a host name or an IP address"),
    ):
        errors = errors_of(f'{target_text()}[listen]\nhosts = ["127.0.0.1", "{host}"]\n')
        assert any(line.startswith(f"{PATH}:7:1: 'listen.hosts' {words}") for line in errors), errors


def test_the_models_own_checks_stand_behind_the_parser() -> None:
    """A Target or ProxySettings made without the parser (a flag, a test, a future front end)
    refuses the same values, before the engine is handed them."""
    for bad, words in (
        (lambda: Target(url="http://127.0.0.1:99999"), "target URL has a port that is not a number"),
        (lambda: Target(url="http://127.0.0.1:9", connect_timeout_s=math.nan), "timeouts must be positive"),
        (lambda: Target(url="http://127.0.0.1:9", read_timeout_s=math.inf), "timeouts must be positive"),
        (
            lambda: Target(url="http://127.0.0.1:9", add_headers=(("Authorization", Secret(f"{HEADER_SECRET}\r\n")),)),
            "the value of 'Authorization' holds a carriage return",
        ),
        (lambda: Target(url="http://127.0.0.1:9", proxy="http://127.0.0.1:99999"), "the proxy URL has a port"),
        (lambda: ProxySettings(hosts=("127.0.0.1", "")), "listen address '' is not a host name"),
        (lambda: ProxySettings(stop_grace_s=math.nan), "stop grace must be a number of seconds from 0"),
        (lambda: ProxySettings(stop_grace_s=1e10), "stop grace must be a number of seconds from 0"),
    ):
        with pytest.raises(ValueError, match="^" + re.escape(words)) as info:
            bad()
        assert HEADER_SECRET not in str(info.value)


def test_a_key_with_a_line_break_is_a_key_problem_not_a_500() -> None:
    """A key read with its line break (an environment variable set from a file) cannot go in a
    header: the target says why, without the key, instead of failing every request."""
    spec = parse_config(target_text(extra='headers = { Authorization = "Bearer {key}" }')).targets["a"]
    resolved = resolve_target(spec, {"K": f"{HEADER_SECRET}\r\n"})
    assert resolved.problem is not None
    assert "holds a carriage return" in resolved.problem
    assert HEADER_SECRET not in resolved.problem
    assert resolved.target.add_headers == ()


def test_config_check_reports_each_unusable_value_at_its_line(tmp_path: Path) -> None:
    """`trayproxy config check` no longer says OK to a file the proxy cannot use, and a file
    nested too deeply gets one line, not a traceback."""
    path = tmp_path / "config.toml"
    path.write_text(
        '[listen]\nhosts = [""]\n'
        '[targets.a]\nurl = "http://127.0.0.1:99999"\nconnect_timeout = nan\n'
        'headers = { X-Team = "ml\\r\\nX-Injected: 1" }\n',
        encoding="utf-8",
    )
    result = run_cli("config", "check", "--config", str(path))
    assert result.returncode == 1, result.stdout
    lines = result.stderr.splitlines()
    for where, words in (
        (":2:1: ", "'listen.hosts' holds ''"),
        (":4:1: ", "'http://127.0.0.1:99999' has a port that is not a number"),
        (":5:1: ", "'targets.a.connect_timeout' must be"),
        (":6:1: ", "'targets.a.headers' cannot be sent"),
    ):
        assert any(line.startswith(f"{path}{where}{words}") for line in lines), result.stderr

    path.write_text(f'[targets.a]\nurl = "http://127.0.0.1:9"\nx = {nested("[", 5000)}\n', encoding="utf-8")
    result = run_cli("config", "check", "--config", str(path))
    assert result.returncode == 1, result.stdout
    assert "Traceback" not in result.stderr
    assert f"{path}:3:105: arrays or inline tables nest more than 100 levels deep here" in result.stderr


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        pytest.param(("--host", ""), "--host '' is not a host name or an IP address", id="host-empty"),
        pytest.param(("--host", "0"), "--host '0' is read by the system as 0.0.0.0, every interface", id="host-0"),
        pytest.param(
            ("--connect-timeout", "nan"), "--connect-timeout must be a number of seconds more than 0", id="nan"
        ),
        pytest.param(
            ("--upstream-timeout", "inf"), "--upstream-timeout must be a number of seconds more than 0", id="inf"
        ),
        pytest.param(("--stop-grace", "1e10"), "--stop-grace must be a number of seconds from 0 to 86400", id="grace"),
        pytest.param(
            ("--header", "X-Team: {env:TP_TEAM}"),
            "--header X-Team: the value of 'X-Team' holds a carriage return",
            id="header-from-env",
        ),
    ],
)
def test_serve_refuses_flags_the_proxy_cannot_use(flags: tuple[str, ...], expected: str) -> None:
    """The flags go through the settings' own checks: one line on stderr and exit 2, where
    serve started and listened everywhere, or answered every request with 500."""
    import os

    env = {**os.environ, "TP_TEAM": "ml\r\nX-Injected: 1"}
    result = run_cli("serve", "--target", "http://127.0.0.1:9", "--port", "0", *flags, env=env)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"trayproxy serve: {expected}"), result.stderr


def following_text(url: str, *, hosts: str = '"127.0.0.1"', extra: str = "") -> str:
    """A config on 127.0.0.1 at a free port; ``hosts`` is line 3, ``url`` line 6, ``extra`` line 7."""
    return f'active = "a"\n[listen]\nhosts = [{hosts}]\nport = 0\n[targets.a]\nurl = "{url}"\n{extra}\n'


def test_a_running_proxy_keeps_its_last_good_config_through_unusable_edits(
    tmp_path: Path, follow: list[ProxyController]
) -> None:
    """Saving any of these while the proxy runs: the status says file:line:col, and requests
    keep reaching the last good target (they got 500, or the reload failed unseen)."""
    seen = Seen()
    with BackgroundServer(echo_app(seen)) as upstream:
        path = tmp_path / "config.toml"
        path.write_text(following_text(upstream.url), encoding="utf-8")
        controller = ProxyController.from_config(ConfigBinding(path, poll_s=POLL_S))
        follow.append(controller)
        controller.start()
        local_url = controller.status.local_url
        for number, (edit, where) in enumerate(
            (
                (following_text(upstream.url, extra="connect_timeout = nan"), ":7:1: "),
                (following_text(upstream.url, extra='headers = { X-Team = "ml\\r\\nX-Injected: 1" }'), ":7:1: "),
                (following_text(upstream.url.replace(str(upstream.port), "99999")), ":6:1: "),
                (following_text(upstream.url, hosts='""'), ":3:1: "),
                (following_text(upstream.url, extra=f"x = {nested('[', 1000)}"), ":7:105: "),
            )
        ):
            path.write_text(edit, encoding="utf-8")
            reported = f"{path}{where}"
            assert wait_until(
                lambda reported=reported: reported in (controller.status.config_error or ""),
                timeout_s=FOLLOW_TIMEOUT_S,
            ), (edit[:200], controller.status)
            assert controller.status.local_url == local_url
            response = httpx.get(f"{local_url}/still-{number}", timeout=CLIENT_TIMEOUT_S, trust_env=False)
            assert response.status_code == 200, response.text
            assert seen.requests[-1]["raw_path"] == f"/still-{number}"
