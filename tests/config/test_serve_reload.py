"""`trayproxy serve` following its config file, as a real subprocess.

Someone runs ``trayproxy serve`` in a terminal and edits ``config.toml`` in their editor: the
running proxy sends new requests where the file now says without being restarted, a mistake in
the file is shown on stderr with file:line:col while the proxy keeps serving, and neither key
(from the environment or in the file itself) is ever printed.
"""

from __future__ import annotations

from pathlib import Path

import httpx
from background import BackgroundServer, free_port, wait_until
from cli_process import ServeProcess
from listen_helpers import proxy_answers
from upstreams import Seen, echo_app

# Starting a Python process with aiohttp imported, plus the watcher's 1 s poll, on a busy
# machine: generous, since a pass takes about two seconds.
SERVE_TIMEOUT_S = 15.0
# Bound on a clean stop after SIGTERM (open requests get the default grace, and there are none).
ENV_KEY = "tp-env-secret-7f3a9c21d04e"
FILE_KEY = "tp-file-secret-51be08c6aa92"


def config_text(url_a: str, url_b: str, port: int, *, active: str, file_key_line: str) -> str:
    return (
        f'active = "{active}"\n'
        f'[listen]\nhosts = ["127.0.0.1"]\nport = {port}\n'
        f'[targets.a]\nurl = "{url_a}"\nkey = {{ env = "TP_RELOAD_KEY" }}\n'
        'headers = { Authorization = "Bearer {key}" }\n'
        f'[targets.b]\nurl = "{url_b}"\n{file_key_line}\n'
        'headers = { X-Api-Key = "{key}" }\n'
    )


# The line of ``key`` in target b, counted in config_text above.
FILE_KEY_LINE = 11


def get(port: int, path: str) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{port}{path}", trust_env=False, timeout=SERVE_TIMEOUT_S)


def test_serve_follows_edits_keeps_serving_through_a_bad_one_and_never_prints_a_key(tmp_path: Path) -> None:
    """Editing ``active`` switches where requests go; a broken edit on the very line holding
    the key is reported as file:line:col on stderr while requests still go through; the keys
    appear nowhere on stderr."""
    seen_a, seen_b = Seen(), Seen()
    port = free_port()
    with BackgroundServer(echo_app(seen_a)) as a, BackgroundServer(echo_app(seen_b)) as b:
        config = tmp_path / "config.toml"
        good_key = f'key = "{FILE_KEY}"'
        config.write_text(config_text(a.url, b.url, port, active="a", file_key_line=good_key))
        serve = ServeProcess(config, env={"TP_RELOAD_KEY": ENV_KEY})
        try:
            assert wait_until(lambda: proxy_answers(port, timeout_s=SERVE_TIMEOUT_S), timeout_s=SERVE_TIMEOUT_S), serve.stderr
            assert get(port, "/to-a").status_code == 200
            assert ["Authorization", f"Bearer {ENV_KEY}"] in seen_a.requests[-1]["headers"]

            config.write_text(config_text(a.url, b.url, port, active="b", file_key_line=good_key))
            # Until the watcher applies the edit, these still reach a.
            assert wait_until(
                lambda: get(port, "/probe").status_code == 200 and bool(seen_b.requests),
                timeout_s=SERVE_TIMEOUT_S,
            ), serve.stderr
            assert get(port, "/to-b").status_code == 200
            assert seen_b.requests[-1]["raw_path"] == "/to-b"
            assert ["X-Api-Key", FILE_KEY] in seen_b.requests[-1]["headers"]

            broken = f'key = "{FILE_KEY}'  # the closing quote forgotten
            config.write_text(config_text(a.url, b.url, port, active="b", file_key_line=broken))
            where = f"{config}:{FILE_KEY_LINE}:"
            assert wait_until(lambda: where in serve.stderr, timeout_s=SERVE_TIMEOUT_S), serve.stderr
            assert get(port, "/still-b").status_code == 200
            assert seen_b.requests[-1]["raw_path"] == "/still-b"
            assert ["X-Api-Key", FILE_KEY] in seen_b.requests[-1]["headers"]
        finally:
            stderr = serve.stop()
    assert "not valid TOML" in stderr
    assert {str(r["raw_path"]) for r in seen_a.requests} <= {"/to-a", "/probe"}
    assert ENV_KEY not in stderr
    assert FILE_KEY not in stderr
    assert FILE_KEY[-8:] not in stderr  # not even its tail
