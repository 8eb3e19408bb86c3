"""`trayproxy serve` as a real subprocess following its config file's [listen] port, targets on
ports of their own, and [log] settings.

Someone runs ``trayproxy serve`` and edits the file: a new port is taken up without a restart
(and refused, with the port and the program holding it, when another program has it, while the
old port keeps serving); a target with ``port = ...`` answers there beside the active one; the
[log] table decides whether each request gets a line and how chatty the rest is, re-read on
every edit, and ``-q`` / ``-v`` on the command line win over it.
"""

from __future__ import annotations

from pathlib import Path

import httpx
from background import BackgroundServer, free_port, wait_until
from cli_process import ServeProcess
from listen_helpers import PortHolder, is_listening, proxy_answers
from upstreams import Seen, echo_app

SERVE_TIMEOUT_S = 15.0


def config_text(url_a: str, url_b: str, port: int, *, own_port: int, log: str = "", a_extra: str = "") -> str:
    return (
        'active = "a"\n'
        f'[listen]\nhosts = ["127.0.0.1"]\nport = {port}\n'
        f"{log}"
        f'[targets.a]\nurl = "{url_a}"\n{a_extra}'
        f'[targets.b]\nurl = "{url_b}"\nport = {own_port}\n'
    )


def get(port: int, path: str) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{port}{path}", trust_env=False, timeout=SERVE_TIMEOUT_S)


def test_serve_moves_to_a_new_port_refuses_a_taken_one_and_serves_a_target_on_its_own_port(
    tmp_path: Path,
) -> None:
    seen_a, seen_b = Seen(), Seen()
    port, new_port, taken_port, own_port = (free_port() for _ in range(4))
    quiet = '[log]\naccess = false\n'
    with (
        BackgroundServer(echo_app(seen_a)) as a,
        BackgroundServer(echo_app(seen_b)) as b,
        PortHolder(taken_port) as holder,
    ):
        config = tmp_path / "config.toml"
        config.write_text(config_text(a.url, b.url, port, own_port=own_port, log=quiet))
        serve = ServeProcess(config)
        try:
            assert wait_until(lambda: proxy_answers(port, timeout_s=SERVE_TIMEOUT_S) and proxy_answers(own_port, timeout_s=SERVE_TIMEOUT_S), timeout_s=SERVE_TIMEOUT_S), serve.stderr
            assert get(port, "/to-a").status_code == 200
            assert get(own_port, "/to-b").status_code == 200
            assert f"target b is also served on 127.0.0.1:{own_port}" in serve.stderr

            config.write_text(config_text(a.url, b.url, new_port, own_port=own_port, log=quiet))
            assert wait_until(lambda: proxy_answers(new_port, timeout_s=SERVE_TIMEOUT_S), timeout_s=SERVE_TIMEOUT_S), serve.stderr
            assert wait_until(lambda: not is_listening(port), timeout_s=SERVE_TIMEOUT_S), serve.stderr
            assert get(new_port, "/moved").status_code == 200
            assert f"now listens on 127.0.0.1:{new_port}; requests open on 127.0.0.1:{port} finish there" in (
                serve.stderr
            )

            config.write_text(config_text(a.url, b.url, taken_port, own_port=own_port, log=quiet))
            refused = f"could not move to 127.0.0.1:{taken_port}: Port {taken_port} on 127.0.0.1"
            assert wait_until(lambda: bool(serve.lines_with(refused)), timeout_s=SERVE_TIMEOUT_S), serve.stderr
            [line] = serve.lines_with(refused)
            assert f"(pid {holder.pid})" in line
            assert line.rstrip().endswith(f"still listening on 127.0.0.1:{new_port}")
            assert get(new_port, "/still-here").status_code == 200
            assert get(own_port, "/still-b").status_code == 200
        finally:
            stderr = serve.stop()
    assert [r["raw_path"] for r in seen_a.requests] == ["/to-a", "/moved", "/still-here"]
    assert [r["raw_path"] for r in seen_b.requests] == ["/to-b", "/still-b"]
    assert "trayproxy.access" not in stderr  # access = false


def test_log_settings_follow_the_file_and_the_flags_win(tmp_path: Path) -> None:
    """``access = false`` drops the request lines and turning it on brings them back without a
    restart; ``level = "warning"`` silences the info lines; ``-q`` keeps request lines off
    whatever the file says."""
    seen_a, seen_b = Seen(), Seen()
    port, own_port = free_port(), free_port()
    with BackgroundServer(echo_app(seen_a)) as a, BackgroundServer(echo_app(seen_b)) as b:
        config = tmp_path / "config.toml"
        config.write_text(config_text(a.url, b.url, port, own_port=own_port, log="[log]\naccess = false\n"))
        serve = ServeProcess(config)
        try:
            assert wait_until(lambda: proxy_answers(port, timeout_s=SERVE_TIMEOUT_S), timeout_s=SERVE_TIMEOUT_S), serve.stderr
            assert get(port, "/unlogged").status_code == 200

            config.write_text(config_text(a.url, b.url, port, own_port=own_port, log="[log]\naccess = true\n"))
            assert wait_until(lambda: bool(serve.lines_with("config reloaded")), timeout_s=SERVE_TIMEOUT_S)
            assert get(port, "/logged").status_code == 200
            assert wait_until(lambda: bool(serve.lines_with('"GET /logged"')), timeout_s=SERVE_TIMEOUT_S)

            # At level "warning" the reload says nothing but the warning about a key it cannot read.
            log = '[log]\nlevel = "warning"\naccess = false\n'
            unset_key = 'key = { env = "TP_UNSET_KEY" }\nheaders = { Authorization = "Bearer {key}" }\n'
            config.write_text(config_text(a.url, b.url, port, own_port=own_port, log=log, a_extra=unset_key))
            assert wait_until(lambda: bool(serve.lines_with("TP_UNSET_KEY")), timeout_s=SERVE_TIMEOUT_S)
            assert get(port, "/quiet").status_code == 200

            config.write_text('bad = "key"\n' + config_text(a.url, b.url, port, own_port=own_port, log=log))
            assert wait_until(lambda: bool(serve.lines_with("unknown setting 'bad'")), timeout_s=SERVE_TIMEOUT_S)
        finally:
            stderr = serve.stop()
    assert "unlogged" not in stderr
    assert stderr.count('"GET /logged"') == 1
    assert "/quiet" not in stderr
    assert stderr.count("config reloaded") == 1  # the reload to level "warning" said nothing
    assert "ERROR" in serve.lines_with("the config file has problems")[0]  # errors still show

    with BackgroundServer(echo_app(seen_a)) as a, BackgroundServer(echo_app(seen_b)) as b:
        config.write_text(config_text(a.url, b.url, port, own_port=own_port, log="[log]\naccess = true\n"))
        serve = ServeProcess(config, "-q")
        try:
            assert wait_until(lambda: proxy_answers(port, timeout_s=SERVE_TIMEOUT_S), timeout_s=SERVE_TIMEOUT_S), serve.stderr
            assert get(port, "/flag-wins").status_code == 200
        finally:
            stderr = serve.stop()
    assert "flag-wins" not in stderr
    assert f"http://127.0.0.1:{port}" in stderr  # info lines: the file's level is "info" here
