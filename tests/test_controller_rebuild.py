"""What the controller did before its rebuild (issue 13) and must still do: found reading the
rebuilt controller against the old one. Each test drives a real controller on 127.0.0.1 from the
test's thread, as the tray does, and checks what a person would see: how often a key command
runs, what the status shows, what the log says.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from aiohttp import web
from background import BackgroundServer, free_port, wait_until
from listen_helpers import PortHolder
from upstreams import Seen, echo_app

from desktop.controller import ConfigBinding, ProxyController
from desktop.platforms.ports import port_holder

# The watcher looks once a second; a reload, a key command (a Python start) and a loaded CI
# machine fit well inside this.
FOLLOW_TIMEOUT_S = 10.0
CLIENT_TIMEOUT_S = 10.0
# Watcher turns to wait for a key command that should not run: three looks at the file.
QUIET_S = 3.0


def counting_command(tmp_path: Path, *, works_for: int) -> tuple[str, Path]:
    """A key command printing ``token-1``, ``token-2``, ... for its first ``works_for`` runs and
    failing after that (a password manager locked meanwhile); and the file counting its runs."""
    counter = tmp_path / f"runs-{works_for}.txt"
    counter.write_text("0")
    script = tmp_path / f"key_{works_for}.py"
    script.write_text(
        "import pathlib, sys\n"
        f"counter = pathlib.Path({str(counter)!r})\n"
        "runs = int(counter.read_text()) + 1\n"
        "fresh = counter.with_name(counter.name + '.new'); fresh.write_text(str(runs)); fresh.replace(counter)\n"
        f"if runs > {works_for}:\n"
        "    sys.exit('the vault is locked')\n"
        "print(f'token-{runs}')\n"
    )
    return f'"{sys.executable}" "{script}"', counter


def runs(counter: Path) -> int:
    return int(counter.read_text())


def bearer_app(accepted: set[str]) -> web.Application:
    """A target answering 200 to ``Bearer TOKEN`` for the ``accepted`` tokens, 401 otherwise."""

    async def answer(request: web.Request) -> web.Response:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        status = 200 if token in accepted else 401
        return web.Response(
            status=status, text=json.dumps({"status": status}), content_type="application/json"
        )

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    return app


def command_target(name: str, url: str, command: str, *, port: int | None = None) -> str:
    own = f"port = {port}\n" if port is not None else ""
    return (
        f"\n[targets.{name}]\nurl = \"{url}\"\n{own}key = {{ command = '{command}' }}\n"
        'headers = { Authorization = "Bearer {key}" }\n'
    )


def config_text(active: str, port: int, tables: str) -> str:
    return f'active = "{active}"\n\n[listen]\nhosts = ["127.0.0.1"]\nport = {port}\n{tables}'


def get(controller: ProxyController, path: str) -> httpx.Response:
    url = controller.status.local_url
    assert url is not None
    with httpx.Client(timeout=CLIENT_TIMEOUT_S, trust_env=False) as client:
        return client.get(f"{url}{path}")


def following(made: list[ProxyController], binding: ConfigBinding) -> ProxyController:
    controller = ProxyController.from_config(binding, port_holder=port_holder)
    made.append(controller)
    return controller


def test_a_key_command_that_fails_when_run_again_after_a_401_runs_once_for_it(
    tmp_path: Path, follow: list[ProxyController]
) -> None:
    """The target rejects the key; the command is run again and fails (the vault got locked).
    That is one run for the 401, not two: a second run at once would prompt the person again
    and sidestep the refresh interval."""
    command, counter = counting_command(tmp_path, works_for=1)
    with BackgroundServer(bearer_app(accepted=set())) as upstream:
        path = tmp_path / "config.toml"
        path.write_text(config_text("corp", 0, command_target("corp", upstream.url, command)))
        controller = following(follow, ConfigBinding(path))
        controller.start()
        assert runs(counter) == 1
        assert get(controller, "/v1/models").status_code == 401  # token-1 rejected: run again
        assert wait_until(lambda: runs(counter) >= 2, timeout_s=FOLLOW_TIMEOUT_S)
        assert wait_until(lambda: controller.status.key_problem is not None, timeout_s=FOLLOW_TIMEOUT_S)
        time.sleep(QUIET_S)
        assert runs(counter) == 2


def test_choosing_a_target_does_not_run_the_key_command_of_another_targets_own_port(
    tmp_path: Path, follow: list[ProxyController]
) -> None:
    """'anthropic' on a port of its own has a key command that fails (its vault is locked);
    choosing another target for the main port in the menu reads that target's key only, and
    does not run anthropic's command (a prompt the person did not ask for)."""
    command, counter = counting_command(tmp_path, works_for=0)
    with BackgroundServer(echo_app(Seen())) as upstream:
        path = tmp_path / "config.toml"
        tables = (
            f'\n[targets.a]\nurl = "{upstream.url}"\n\n[targets.c]\nurl = "{upstream.url}"\n'
            + command_target("anthropic", upstream.url, command, port=free_port())
        )
        path.write_text(config_text("a", 0, tables))
        # Not saved in the file: a save is an edit, and a reload reads a failed key again.
        controller = following(follow, ConfigBinding(path, save_choice=False, watch=False))
        controller.start()
        assert runs(counter) == 1
        controller.choose_target("c")
        assert controller.status.target_name == "c"
        assert runs(counter) == 1


def test_a_key_fetched_again_after_a_401_clears_the_rejected_condition(
    tmp_path: Path, follow: list[ProxyController]
) -> None:
    """Once the command has given a new key and the proxy sends it, the status no longer says
    the target rejected the key (the tray's icon turns back from red) without waiting for the
    next request, as it did when the refresh switched the target through set_target."""
    command, counter = counting_command(tmp_path, works_for=5)
    with BackgroundServer(bearer_app(accepted={"token-2"})) as upstream:
        path = tmp_path / "config.toml"
        path.write_text(config_text("corp", 0, command_target("corp", upstream.url, command)))
        controller = following(follow, ConfigBinding(path))
        controller.start()
        assert get(controller, "/v1/models").status_code == 401
        assert wait_until(lambda: runs(counter) == 2, timeout_s=FOLLOW_TIMEOUT_S)
        assert wait_until(lambda: controller.status.condition is None, timeout_s=FOLLOW_TIMEOUT_S)
        assert get(controller, "/v1/models").status_code == 200


def test_a_proxy_that_could_not_start_still_lists_its_own_port_targets_and_their_key_problems(
    tmp_path: Path, follow: list[ProxyController], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The main port is held by another program, so the proxy cannot start; the status still
    lists 'anthropic' (port 8001 in its table) with its missing key, which the tray notifies
    (tray.app's notices read status.target_ports), as it does once stopped."""
    monkeypatch.delenv("TP_REVIEW_ANTHROPIC_KEY", raising=False)
    main, own = free_port(), free_port()
    path = tmp_path / "config.toml"
    tables = (
        '\n[targets.a]\nurl = "http://127.0.0.1:9"\n'
        f'\n[targets.anthropic]\nurl = "http://127.0.0.1:9"\nport = {own}\n'
        'key = { env = "TP_REVIEW_ANTHROPIC_KEY" }\nheaders = { x-api-key = "{key}" }\n'
    )
    path.write_text(config_text("a", main, tables))
    controller = following(follow, ConfigBinding(path, watch=False))
    with PortHolder(main), pytest.raises(Exception, match="already in use"):
        controller.start()
    assert controller.status.state == "error"
    [entry] = controller.status.target_ports
    assert entry.name == "anthropic"
    assert entry.key_problem is not None
    assert "TP_REVIEW_ANTHROPIC_KEY" in entry.key_problem


def test_a_main_move_that_failed_is_logged_once_not_again_at_a_target_choice(
    tmp_path: Path, follow: list[ProxyController], caplog: pytest.LogCaptureFixture
) -> None:
    """The file moves the main listener to a port another program holds: the log says so once.
    Choosing another target in the menu meanwhile changes the target only; it does not say
    the same failure again."""
    caplog.set_level(logging.INFO)
    old_port, new_port = free_port(), free_port()
    with BackgroundServer(echo_app(Seen())) as upstream, PortHolder(new_port):
        path = tmp_path / "config.toml"
        tables = f'\n[targets.a]\nurl = "{upstream.url}"\n\n[targets.c]\nurl = "{upstream.url}"\n'
        path.write_text(config_text("a", old_port, tables))
        binding = ConfigBinding(path, save_choice=False, watch=False, port_retry_s=3600.0)
        controller = following(follow, binding)
        controller.start()
        path.write_text(config_text("a", new_port, tables))
        assert controller.reload_config()
        assert controller.status.error is not None
        assert "could not move" in controller.status.error
        controller.choose_target("c")
        assert controller.status.target_name == "c"
    said = [r.getMessage() for r in caplog.records if "could not move" in r.getMessage()]
    assert len(said) == 1, said


def test_serve_starts_with_the_files_log_level_for_its_own_start_up_lines(tmp_path: Path) -> None:
    """``[log] level = "error"``: serve's start-up says errors only, as the file asks; the
    chosen target's missing key (a warning) is not printed, though the taken port (an error) is.
    The level was applied before the key's warning, and is now applied after it."""
    from cli_process import run_cli

    port = free_port()
    path = tmp_path / "config.toml"
    path.write_text(
        config_text(
            "corp",
            port,
            '\n[log]\nlevel = "error"\n'
            '\n[targets.corp]\nurl = "http://127.0.0.1:9"\n'
            'key = { env = "TP_REVIEW_CORP_KEY" }\nheaders = { Authorization = "Bearer {key}" }\n',
        )
    )
    env = {k: v for k, v in os.environ.items() if k != "TP_REVIEW_CORP_KEY"}
    with PortHolder(port):
        result = run_cli("serve", "--config", str(path), env=env)
    assert result.returncode == 1, result.stderr
    assert "already in use" in result.stderr
    assert "TP_REVIEW_CORP_KEY" not in result.stderr, result.stderr


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a folder no one can make: one under /proc")
def test_a_local_token_that_cannot_be_made_is_logged_with_the_systems_reason(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """require_token is on and the token file cannot be written (here: it links into a folder
    that cannot be made; for a person, a folder they may not write): the log gives the system's
    reason, as before, rather than only 'run: trayproxy config token --rotate', which fails the
    same way."""
    path = tmp_path / "config.toml"
    path.write_text(
        config_text("a", 0, '\n[security]\nrequire_token = true\n\n[targets.a]\nurl = "http://127.0.0.1:9"\n')
    )
    (tmp_path / "local-token").symlink_to("/proc/tp-review-no-such-folder/local-token")
    caplog.set_level(logging.INFO)
    controller = ProxyController.from_config(ConfigBinding(path, watch=False))
    assert controller.settings.local_token is None
    said = [r.getMessage() for r in caplog.records if "local access token" in r.getMessage()]
    assert any("No such file or directory" in line for line in said), said


def test_stop_does_not_wait_for_a_key_command_a_reload_is_running(
    tmp_path: Path, follow: list[ProxyController]
) -> None:
    """A saved edit makes the watcher read a changed key entry again, and the key command takes
    its time (a password manager waiting to be unlocked). Stop, chosen meanwhile, stops at once:
    the key is read before the verbs' lock is taken, not while holding it."""
    counter = tmp_path / "runs.txt"
    counter.write_text("0")
    script = tmp_path / "slow_key.py"
    script.write_text(
        "import pathlib, sys, time\n"
        f"counter = pathlib.Path({str(counter)!r})\n"
        "runs = int(counter.read_text()) + 1\n"
        "fresh = counter.with_name(counter.name + '.new'); fresh.write_text(str(runs)); fresh.replace(counter)\n"
        "time.sleep(0 if runs == 1 else 6)\n"
        "print(f'token-{runs}')\n"
    )
    command = f'"{sys.executable}" "{script}"'
    with BackgroundServer(echo_app(Seen())) as upstream:
        path = tmp_path / "config.toml"
        path.write_text(config_text("corp", 0, command_target("corp", upstream.url, command)))
        controller = following(follow, ConfigBinding(path))
        controller.start()
        # The same command written with one more space: a changed entry, read again.
        path.write_text(config_text("corp", 0, command_target("corp", upstream.url, command + " ")))
        assert wait_until(lambda: runs(counter) == 2, timeout_s=FOLLOW_TIMEOUT_S)
        began = time.monotonic()
        controller.stop()
        took = time.monotonic() - began
        assert controller.status.state == "stopped"
        # The command sleeps 6 s after it was seen starting; a loaded CI machine may take a
        # few seconds to stop, never the command's 6.
        assert took < 4.5, f"stop waited {took:.1f} s for the key command"


def test_switching_away_from_a_target_that_rejected_its_key_publishes_no_status_blaming_the_new_one(
    tmp_path: Path, follow: list[ProxyController]
) -> None:
    """'corp' rejected the key; the person chooses 'other' in the menu. No status handed to the
    tray names 'other' with corp's trouble: the tray notifies each new (target, trouble) pair, so
    such a status would pop up 'corp rejected the key' as the switch happens."""
    with BackgroundServer(bearer_app(accepted=set())) as corp, BackgroundServer(echo_app(Seen())) as other:
        path = tmp_path / "config.toml"
        tables = (
            f'\n[targets.corp]\nurl = "{corp.url}"\nkey = "tp-review-rejected-key"\n'
            'headers = { Authorization = "Bearer {key}" }\n'
            f'\n[targets.other]\nurl = "{other.url}"\n'
        )
        path.write_text(config_text("corp", 0, tables))
        controller = following(follow, ConfigBinding(path, save_choice=False, watch=False))
        controller.start()
        assert get(controller, "/v1/models").status_code == 401
        assert wait_until(lambda: controller.status.condition is not None, timeout_s=FOLLOW_TIMEOUT_S)
        published: list[tuple[str, object]] = []
        controller.add_listener(lambda status: published.append((status.target_name, status.condition)))
        controller.choose_target("other")
        assert controller.status.target_name == "other"
        assert controller.status.condition is None
        assert [(name, condition) for name, condition in published if condition is not None] == []


def test_an_edit_saved_while_a_choice_reads_its_key_is_not_undone_by_the_choice(
    tmp_path: Path, follow: list[ProxyController]
) -> None:
    """Found by the attacker trial: the person clicks the target whose key command failed at
    start (to retry it); while the command runs (a password manager prompting), they save
    ``require_token = true``. The reload applies it; the choice, made from the file as it was
    before, must not then put the old plan back and let requests without the token through."""
    seen = Seen()
    counter = tmp_path / "slow-runs.txt"
    counter.write_text("0")
    script = tmp_path / "slow_key.py"
    script.write_text(
        "import pathlib, sys, time\n"
        f"counter = pathlib.Path({str(counter)!r})\n"
        "runs = int(counter.read_text()) + 1\n"
        "fresh = counter.with_name(counter.name + '.new'); fresh.write_text(str(runs)); fresh.replace(counter)\n"
        "if runs == 1:\n"
        "    sys.exit('the vault is locked')\n"
        "if runs == 2:\n"
        "    time.sleep(3)  # the prompt the person answers slowly; later runs are quick\n"
        "print('sk-proj-slowly-unlocked-0123456789')\n"
    )
    command = f'"{sys.executable}" "{script}"'
    with BackgroundServer(echo_app(seen)) as upstream:
        path = tmp_path / "config.toml"
        path.write_text(config_text("corp", 0, command_target("corp", upstream.url, command)))
        controller = following(follow, ConfigBinding(path))
        controller.start()
        assert controller.status.key_problem is not None  # run 1 failed

        choosing = threading.Thread(target=controller.choose_target, args=("corp",))
        choosing.start()
        assert wait_until(lambda: runs(counter) == 2, timeout_s=FOLLOW_TIMEOUT_S)  # run 2: slow
        text = path.read_text().replace("[listen]", "[security]\nrequire_token = true\n\n[listen]")
        path.write_text(text)
        assert wait_until(lambda: controller.status.local_token is not None, timeout_s=FOLLOW_TIMEOUT_S)
        choosing.join(FOLLOW_TIMEOUT_S)
        assert not choosing.is_alive()

        assert controller.status.local_token is not None
        before = len(seen.requests)
        for _ in range(3):
            assert get(controller, "/v1/models").status_code == 401  # no token: refused here
        assert len(seen.requests) == before
