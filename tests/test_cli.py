"""``trayproxy serve`` as a person runs it: a real process, real signals, real sockets.

Each test starts ``python -m desktop serve`` on a free loopback port, waits until the proxy
answers its health document, and talks to it over HTTP. Targets are aiohttp servers in a
thread of this process (``background.py``). Only the header parser is tested in-process.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import socket
import string
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from background import SLOW_STARTED, BackgroundServer, free_port, slow_app, wait_until
from cli_process import ServeProcess
from hypothesis import given
from hypothesis import strategies as st
from listen_helpers import PortHolder
from upstreams import Seen, dead_port, echo_app

from desktop import __version__
from desktop.commands.serve import parse_header, resolve_env_placeholders
from desktop.engine.addresses import HEALTH_PATH

REPO = Path(__file__).resolve().parent.parent
# Bound on the proxy process starting to answer; it takes well under a second when healthy.
STARTUP_TIMEOUT_S = 15.0
# Bound on a process that should exit by itself (usage errors, a finished stop).
EXIT_TIMEOUT_S = 15.0
# RFC 9110 §5.6.2: the characters of a header name (a "token").
TOKEN_CHARS = "!#$%&'*+-.^_`|~" + string.ascii_letters + string.digits


def cli_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "desktop", *args]


def child_environ(**extra: str) -> dict[str, str]:
    """This test's (scrubbed) environment for the child, minus the test key unless given."""
    env = {name: value for name, value in os.environ.items() if name != "TP_TEST_KEY"}
    env.update(extra)
    return env


@dataclass
class Serve:
    """A running ``trayproxy serve`` process."""

    process: subprocess.Popen[bytes]
    port: int
    stderr_path: Path
    args: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def wait_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        with httpx.Client(timeout=1.0, trust_env=False) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    pytest.fail(f"serve exited with {self.process.returncode}:\n{self.stderr()}")
                try:
                    response = client.get(self.url + HEALTH_PATH)
                except httpx.TransportError:
                    time.sleep(0.05)
                    continue
                if response.status_code == 200 and response.json().get("app") == "trayproxy":
                    return
                pytest.fail(f"something else answers on {self.url}: {response.status_code}")
        pytest.fail(f"serve did not answer within {STARTUP_TIMEOUT_S}s:\n{self.stderr()}")

    def stop(self, signum: int = signal.SIGTERM, *, timeout_s: float = EXIT_TIMEOUT_S) -> int:
        """Send ``signum`` and return the exit status (fails the test if it does not exit)."""
        self.process.send_signal(signum)
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            pytest.fail(f"serve did not exit within {timeout_s}s of {signum!r}:\n{self.stderr()}")


StartServe = Callable[..., Serve]


@pytest.fixture
def start_serve(tmp_path: Path) -> Iterator[StartServe]:
    """``start_serve(target_url, *more_args, env=...)`` runs serve on a free port and waits."""
    started: list[Serve] = []

    def go(target: str, *args: str, env: dict[str, str] | None = None) -> Serve:
        port = free_port()
        stderr_path = tmp_path / f"serve-{len(started)}.stderr"
        argv = cli_command("serve", "--target", target, "--port", str(port), "--host", "127.0.0.1", *args)
        with stderr_path.open("wb") as stderr:
            process = subprocess.Popen(
                argv,
                cwd=REPO,
                env=env if env is not None else child_environ(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,
            )
        serve = Serve(process, port, stderr_path, argv)
        started.append(serve)
        serve.wait_ready()
        return serve

    yield go
    for serve in started:
        if serve.process.poll() is None:
            serve.process.kill()
            serve.process.wait()


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the CLI to completion and capture its output."""
    return subprocess.run(
        cli_command(*args),
        cwd=REPO,
        env=env if env is not None else child_environ(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=EXIT_TIMEOUT_S,
        check=False,
    )


def lines_mentioning(text: str, needle: str) -> list[str]:
    return [line for line in text.splitlines() if needle in line]


def test_serve_forwards_requests_and_logs_one_line_each(start_serve: StartServe) -> None:
    """Requests reach the target, and the terminal shows one line per request with its
    method, path and status, so a person can see what their tools are doing."""
    seen = Seen()
    with BackgroundServer(echo_app(seen)) as upstream:
        serve = start_serve(upstream.url)
        with httpx.Client(base_url=serve.url, timeout=10, trust_env=False) as client:
            listed = client.get("/v1/models?limit=2")
            created = client.post("/v1/chat/completions", json={"model": "m", "messages": []})
            missing = client.get("/__trayproxy/no-such-page")
        assert serve.stop() == 0

    assert listed.status_code == 200
    assert listed.json()["raw_path"] == "/v1/models?limit=2"
    assert created.status_code == 200
    assert created.json()["method"] == "POST"
    assert missing.status_code == 404
    assert [r["raw_path"] for r in seen.requests] == ["/v1/models?limit=2", "/v1/chat/completions"]

    stderr = serve.stderr()
    for method, path, status in (
        ("GET", "/v1/models", 200),
        ("POST", "/v1/chat/completions", 200),
        ("GET", "/__trayproxy/no-such-page", 404),
    ):
        lines = lines_mentioning(stderr, path)
        assert len(lines) == 1, stderr
        assert re.search(rf"\b{method}\b.*{re.escape(path)}.*\b{status}\b", lines[0]), lines[0]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_stop_signal_lets_the_request_in_flight_finish_and_exits_0(
    start_serve: StartServe, signum: int
) -> None:
    """Ctrl+C or a service manager's SIGTERM while a slow answer is on its way: the tool
    still gets its answer, then the proxy exits cleanly."""
    app = slow_app()
    outcome: list[httpx.Response | Exception] = []
    with BackgroundServer(app) as upstream:
        serve = start_serve(upstream.url)

        def fetch() -> None:
            try:
                outcome.append(httpx.get(serve.url + "/slow?s=1.5", timeout=20, trust_env=False))
            except httpx.HTTPError as exc:
                outcome.append(exc)

        client = threading.Thread(target=fetch)
        client.start()
        assert app[SLOW_STARTED].wait(10)
        code = serve.stop(signum)
        client.join(20)

    assert code == 0, serve.stderr()
    assert len(outcome) == 1
    response = outcome[0]
    assert isinstance(response, httpx.Response), repr(response)
    assert response.status_code == 200
    assert response.text == "slept 1.5"


def test_stop_grace_cuts_a_request_that_outlasts_it(start_serve: StartServe) -> None:
    """With --stop-grace 1, a request that would take 30 s does not keep the proxy alive:
    it exits 0 shortly after the grace period and the request is cut, not answered."""
    grace_s = 1.0
    app = slow_app()
    outcome: list[httpx.Response | Exception] = []
    with BackgroundServer(app) as upstream:
        serve = start_serve(upstream.url, "--stop-grace", str(grace_s))

        def fetch() -> None:
            try:
                outcome.append(httpx.get(serve.url + "/slow?s=30", timeout=20, trust_env=False))
            except httpx.HTTPError as exc:
                outcome.append(exc)

        client = threading.Thread(target=fetch)
        client.start()
        assert app[SLOW_STARTED].wait(10)
        # The issue allows grace + 2 s; one more second absorbs a slow interpreter exit.
        code = serve.stop(signal.SIGTERM, timeout_s=grace_s + 3.0)
        client.join(20)

    assert code == 0, serve.stderr()
    assert not client.is_alive()
    assert len(outcome) == 1
    cut = outcome[0]
    assert not (isinstance(cut, httpx.Response) and cut.status_code == 200), cut


@pytest.mark.parametrize("verbose", [False, True], ids=["default", "verbose"])
def test_header_from_env_reaches_target_but_never_the_log(start_serve: StartServe, verbose: bool) -> None:
    """``--header 'Authorization: Bearer {env:TP_TEST_KEY}'`` sends the key to the target,
    while the terminal (even with -v) and the process list never show it."""
    key = "tp" + secrets.token_hex(16)  # no well-known key shape: only the verbatim mask can hide it
    seen = Seen()
    with BackgroundServer(echo_app(seen)) as upstream:
        serve = start_serve(
            upstream.url,
            "--header",
            "Authorization: Bearer {env:TP_TEST_KEY}",
            *(["-v"] if verbose else []),
            env=child_environ(TP_TEST_KEY=key),
        )
        cmdline = Path(f"/proc/{serve.process.pid}/cmdline")
        if cmdline.exists():
            assert key not in cmdline.read_text(errors="replace")
        with httpx.Client(base_url=serve.url, timeout=10, trust_env=False) as client:
            answer = client.get("/v1/models", headers={"Authorization": "Bearer client-own-value"})
            client.get(f"/v1/models?key={key}")
        assert serve.stop() == 0

    assert answer.status_code == 200
    received = [(name.lower(), value) for name, value in answer.json()["headers"]]
    assert ("authorization", f"Bearer {key}") in received
    assert ("authorization", "Bearer client-own-value") not in received
    stderr = serve.stderr()
    assert lines_mentioning(stderr, "/v1/models"), stderr
    assert key not in stderr


def _serve_with_header(header: str) -> subprocess.CompletedProcess[str]:
    """``trayproxy serve --header HEADER`` in front of a dead target, run to its end: a header
    the command refuses ends it at start, before any request."""
    return run_cli(
        "serve",
        "--target",
        f"http://127.0.0.1:{dead_port()}",
        "--port",
        str(free_port()),
        "--host",
        "127.0.0.1",
        "--header",
        header,
    )


def test_header_naming_an_unset_env_var_is_a_usage_error_naming_it() -> None:
    """A forgotten ``export`` is caught at start with the variable's name, not at the first
    request with a 401 from the target."""
    result = _serve_with_header("Authorization: Bearer {env:TP_TEST_KEY}")
    assert result.returncode == 2, result.stderr
    assert "TP_TEST_KEY" in result.stderr


@pytest.mark.parametrize("separator", [" ", "=", " = "])
def test_a_header_without_its_colon_is_refused_without_showing_the_key(separator: str) -> None:
    """``--header "Authorization Bearer sk-..."`` (the colon forgotten) is a usage error that
    names the header and says how to write it, without printing the key to the terminal (and
    into a shared screen or a pasted bug report): before, the message quoted the text whole."""
    key = "sk-proj-" + secrets.token_hex(16)
    result = _serve_with_header(f"Authorization{separator}Bearer {key}")
    assert result.returncode == 2, result.stderr
    assert key not in result.stderr + result.stdout
    assert key[len("sk-proj-") :] not in result.stderr
    assert "Authorization: ..." in result.stderr, result.stderr


def test_a_key_in_the_target_urls_path_shows_in_no_answer_or_line(start_serve: StartServe) -> None:
    """A gateway that takes its key in the path (``--target http://host/gw/sk-proj-...``): the
    key reaches the target but not the 502 answer a tool shows its user, the health document,
    or stderr. Before, the answer and the health document quoted the URL whole (the log alone
    masked it). What is shown still says which target: scheme, host, port, the path up to the key."""
    port = dead_port()
    key = "sk-proj-" + secrets.token_hex(20)
    serve = start_serve(f"http://127.0.0.1:{port}/gw/{key}")
    with httpx.Client(timeout=10, trust_env=False) as client:
        answer = client.get(serve.url + "/v1/models")
        health = client.get(serve.url + HEALTH_PATH)
    assert answer.status_code == 502
    message = answer.json()["error"]["message"]
    assert f"could not reach the target http://127.0.0.1:{port}/gw/sk-***" in message, message
    assert health.json()["target"]["url"] == f"http://127.0.0.1:{port}/gw/sk-***"
    assert serve.stop() == 0
    body = key.removeprefix("sk-proj-")
    for shown in (answer.text, health.text, serve.stderr()):
        assert body not in shown


def test_a_key_written_as_the_name_in_an_env_placeholder_is_not_echoed() -> None:
    """``--header 'Authorization: Bearer {env:<the key>}'`` (the key pasted where its
    variable's name belongs): the usage error said "the environment variable <key> is not
    set"; it now says what is wrong without printing it."""
    key = "k" + secrets.token_hex(16)
    result = _serve_with_header(f"Authorization: Bearer {{env:{key}}}")
    assert result.returncode == 2, result.stderr
    assert "looks like a key, not a variable name" in result.stderr
    assert key not in result.stdout + result.stderr


def test_port_taken_by_another_program_exits_1_and_says_so() -> None:
    """Another program on the port: serve says so in plain words and exits 1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = run_cli(
            "serve",
            "--target",
            f"http://127.0.0.1:{dead_port()}",
            "--port",
            str(port),
            "--host",
            "127.0.0.1",
        )
    assert result.returncode == 1, result.stderr
    assert "already in use by another program; choose another port (start with another --port)" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_taken_port_says_where_to_choose_another(tmp_path: Path) -> None:
    """The message for a port another program holds says where the port is chosen: the main
    port under [listen] in the file (or serve's --port), a target's own under its table."""
    config = tmp_path / "config.toml"
    main, own = free_port(), free_port()
    config.write_text(
        f'active = "a"\n[listen]\nhosts = ["127.0.0.1"]\nport = {main}\n'
        f'[targets.a]\nurl = "http://127.0.0.1:{dead_port()}"\n'
        f'[targets.b]\nurl = "http://127.0.0.1:{dead_port()}"\nport = {own}\n'
    )
    with PortHolder(main) as holder:
        result = run_cli("serve", "--config", str(config))
    assert result.returncode == 1, result.stderr
    assert (
        f"Port {main} on 127.0.0.1 is already in use by another program; choose another port"
        f" (set port under [listen] in {config}, or start with --port) — held by python (pid {holder.pid})"
    ) in result.stderr
    with PortHolder(own):
        serve = ServeProcess(config)
        try:
            assert wait_until(lambda: serve.lines_with("not served on port"), timeout_s=STARTUP_TIMEOUT_S), serve.stderr
        finally:
            log = serve.stop()
    assert f"choose another port (set port under [targets.b] in {config})" in log


def test_version_flag_prints_the_version() -> None:
    """``python -m desktop --version`` prints the package version and exits 0."""
    result = run_cli("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"TrayProxy {__version__}"


def test_installed_console_script_runs() -> None:
    """The ``trayproxy`` command the README tells people to type exists and runs."""
    script = Path(sys.executable).with_name("trayproxy")
    assert script.exists(), f"{script} is missing: pip install -e '.[test]'"
    result = subprocess.run(
        [str(script), "--version"], capture_output=True, text=True, timeout=EXIT_TIMEOUT_S, check=False
    )
    assert result.returncode == 0, result.stderr
    assert __version__ in result.stdout


def test_serve_without_target_or_config_creates_the_default_config(tmp_path: Path) -> None:
    """``trayproxy serve`` alone on a fresh machine writes the commented default config and
    serves its active target (OpenAI) at once."""
    config = tmp_path / "fresh" / "config.toml"
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "desktop",
            "serve",
            "--config",
            str(config),
            "--port",
            str(port),
            "--host",
            "127.0.0.1",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert wait_until(lambda: _health(port) is not None, timeout_s=15)
        health = _health(port)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=15)
    assert proc.returncode == 0, stderr
    assert health is not None
    assert health["target"]["url"] == "https://api.openai.com"
    assert "# TrayProxy configuration" in config.read_text()
    assert "OPENAI_API_KEY is not set" in stderr


def _health(port: int) -> dict | None:
    try:
        response = httpx.get(f"http://127.0.0.1:{port}/__trayproxy/health", trust_env=False, timeout=1)
    except httpx.HTTPError:
        return None
    return response.json() if response.status_code == 200 else None


# -- --header parsing ------------------------------------------------------------------------

header_names = st.text(alphabet=TOKEN_CHARS, min_size=1, max_size=40)
# Field values (RFC 9110 §5.5) never hold CR, LF or NUL; anything else is the user's business.
header_values = st.text(st.characters(exclude_characters="\r\n\x00"), max_size=80)


@given(name=header_names, value=header_values)
def test_parse_header_round_trips(name: str, value: str) -> None:
    """Whatever valid header a person types comes out as the name and trimmed value."""
    assert parse_header(f"{name}: {value}") == (name, value.strip())


@given(name=header_names, value=header_values, break_=st.sampled_from(["\r", "\n", "\r\n"]))
def test_parse_header_refuses_line_breaks_in_values(name: str, value: str, break_: str) -> None:
    """A value with a line break would smuggle a second header upstream: refused."""
    with pytest.raises(ValueError, match="line break"):
        parse_header(f"{name}: x{break_}{value}x")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Authorization",
        "Authorization Bearer x",
        ": no name",
        "   : no name",
        "Bad Name: x",
        "Bad(name): x",
        "Naïve: x",
        "Name\t: \x00",
        "X-A: a\r\nX-B: b",
        "X-A: a\nb",
    ],
)
def test_parse_header_refuses_malformed_text(text: str) -> None:
    """Text that is not ``Name: value`` is refused with ValueError, never half-used."""
    with pytest.raises(ValueError):  # noqa: PT011 - the message is tested per case above
        parse_header(text)


# A value of no known shape: only where it stands says it is one.
shapeless_values = st.text(alphabet=string.ascii_letters + string.digits + "-_.~+/=", min_size=8, max_size=60).filter(
    lambda value: value[0].isalnum()
)


@given(name=header_names, separator=st.sampled_from([" ", "=", "\t", " = ", "  "]), value=shapeless_values)
def test_a_malformed_header_never_quotes_its_value(name: str, separator: str, value: str) -> None:
    """The usage error names at most the header, never what follows it: 'X-Team correct-horse'
    holds a key of no shape, and it must not reach the terminal either."""
    text = f"{name}{separator}{value}"
    with pytest.raises(ValueError, match="expected 'Name: value'") as refused:
        parse_header(text)
    assert str(refused.value) in (
        f"expected 'Name: value', got '{name}{separator}***' (the value is not shown); write it as '{name}: ...'",
        # A name that is itself key-like (a key pasted before the value?) is not shown either.
        f"expected 'Name: value', got {len(text)} characters with no ':' after a header name (not shown)",
    )


@pytest.mark.parametrize(
    ("value", "environ", "expected"),
    [
        ("Bearer {env:K}", {"K": "abc"}, "Bearer abc"),
        ("{env:A}-{env:B}", {"A": "1", "B": "2"}, "1-2"),
        ("no placeholder", {}, "no placeholder"),
        ("{env:not a name}", {}, "{env:not a name}"),
    ],
)
def test_env_placeholders_are_replaced(value: str, environ: dict[str, str], expected: str) -> None:
    """``{env:NAME}`` becomes the variable's value; other braces are left alone."""
    assert resolve_env_placeholders(value, environ) == expected


@pytest.mark.parametrize("environ", [{}, {"K": ""}], ids=["unset", "empty"])
def test_env_placeholder_for_unset_or_empty_variable_names_it(environ: dict[str, str]) -> None:
    """An unset or empty variable is an error naming it, never an empty key sent upstream."""
    with pytest.raises(KeyError) as raised:
        resolve_env_placeholders("Bearer {env:K}", environ)
    assert raised.value.args == ("K",)



def test_config_check_warns_of_an_allowed_host_browsers_do_not_mark(tmp_path: Path) -> None:
    """`config check` says what start logs: a non-loopback allowed host relies on the
    User-Agent rule, and require_token is the sure protection (nothing said once it is on)."""
    path = tmp_path / "config.toml"
    for require_token in ("false", "true"):
        path.write_text(
            '[targets.local]\nurl = "http://127.0.0.1:11434"\n'
            f'[security]\nallowed_hosts = ["devbox.local", "127.0.0.2"]\nrequire_token = {require_token}\n'
        )
        result = run_cli("config", "check", "--config", str(path))
        assert result.returncode == 0, result.stderr
        warned = [line for line in result.stderr.splitlines() if "allowed host" in line]
        if require_token == "false":
            assert len(warned) == 1, result.stderr
            assert warned[0].startswith(f"{path}: warning: allowed host devbox.local: browsers mark no request")
            assert "require_token = true" in warned[0]
        else:
            assert warned == [], result.stderr


def test_help_says_a_command_is_optional_and_that_none_starts_the_tray() -> None:
    """Found by the new-user trial: `trayproxy --help` showed COMMAND as required and never said
    that running `trayproxy` alone is how the tray starts."""
    result = run_cli("--help")
    assert result.returncode == 0
    assert "[COMMAND]" in result.stdout.splitlines()[0]
    assert "Without a command, TrayProxy starts in the system tray." in " ".join(result.stdout.split())


def test_the_tray_runs_the_proxy_with_every_flag_serve_has() -> None:
    """The tray takes no flags but runs serve's code with serve's defaults: a flag added to serve
    and not to the tray's arguments crashed the tray at start (AttributeError)."""
    from desktop.cli import _build_parser
    from desktop.commands.tray import tray_args

    serve_defaults = vars(_build_parser().parse_args(["serve"]))
    # tray_config is the top-level --config the tray reads itself (cli.py).
    missing = sorted(serve_defaults.keys() - vars(tray_args(None)).keys() - {"tray_config"})
    assert missing == []
