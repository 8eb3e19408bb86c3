"""A ``ca_bundle`` that cannot be loaded: named with its file and reason, never a traceback.

The engine loads a target's CA bundle when the target is put to use; a missing file used to
crash ``serve`` with a bare ``FileNotFoundError`` from the ssl module while ``config check``
passed it, a hot reload logged "config watcher job failed" with a traceback, and choosing such a
target in the tray raised in the background. Each front end now says which file and why.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from background import BackgroundServer, free_port, wait_until
from cli_process import run_cli
from upstreams import Seen, echo_app

from desktop.controller import ConfigBinding, ProxyController

MISSING = "/nonexistent.pem"
MISSING_REASON = f"ca_bundle {MISSING} cannot be read: No such file or directory"
# The watcher looks at the file once a second.
FOLLOW_TIMEOUT_S = 10.0




def _config(path: Path, *, good_url: str, active: str, ca_bundle: str, port: int = 0) -> Path:
    path.write_text(
        f'active = "{active}"\n'
        f'[listen]\nhosts = ["127.0.0.1"]\nport = {port}\n'
        f'[targets.good]\nurl = "{good_url}"\n'
        '[targets.gateway]\nurl = "https://127.0.0.1:1"\n'
        f'ca_bundle = "{ca_bundle}"\n'
    )
    return path


# The line of gateway's ca_bundle in _config's text.
CA_LINE = 9


@pytest.fixture
def not_pem(tmp_path: Path) -> Path:
    path = tmp_path / "corp-ca.txt"
    path.write_text("this is not a certificate\n")
    return path


def test_config_check_reports_a_missing_ca_bundle_at_its_line(tmp_path: Path) -> None:
    """`config check` no longer passes a file the proxy cannot load."""
    path = _config(tmp_path / "config.toml", good_url="http://127.0.0.1:1", active="good", ca_bundle=MISSING)
    result = run_cli("config", "check", "--config", str(path))
    assert result.returncode == 1, result.stdout
    assert f"{path}:{CA_LINE}:1: {MISSING_REASON}" in result.stderr.splitlines()


def test_config_check_says_a_ca_bundle_that_is_not_pem_holds_no_certificate(tmp_path: Path, not_pem: Path) -> None:
    path = _config(tmp_path / "config.toml", good_url="http://127.0.0.1:1", active="good", ca_bundle=str(not_pem))
    result = run_cli("config", "check", "--config", str(path))
    assert result.returncode == 1
    assert f"{path}:{CA_LINE}:1: ca_bundle {not_pem} holds no certificate TLS can use" in result.stderr
    assert "PEM" in result.stderr


@pytest.mark.parametrize("which", ["missing", "not-pem"])
def test_serve_ca_bundle_flag_that_cannot_be_loaded_exits_2_with_one_line(which: str, not_pem: Path) -> None:
    """`serve --ca-bundle FILE` says what is wrong with FILE, in one line, and exits 2."""
    bundle = MISSING if which == "missing" else str(not_pem)
    result = run_cli(
        "serve", "--target", "https://127.0.0.1:1", "--ca-bundle", bundle, "--port", str(free_port())
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith(f"trayproxy serve: --ca-bundle {bundle} ")
    assert ("cannot be read: No such file or directory" if which == "missing" else "PEM") in line


def test_serve_of_a_config_target_with_a_missing_ca_bundle_exits_2_naming_the_line(tmp_path: Path) -> None:
    path = _config(tmp_path / "config.toml", good_url="http://127.0.0.1:1", active="good", ca_bundle=MISSING)
    result = run_cli("serve", "--config", str(path), "--target", "gateway", "--port", str(free_port()))
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert f"{path}:{CA_LINE}:1: {MISSING_REASON}" in result.stderr


def test_a_reload_to_a_target_whose_ca_bundle_is_missing_keeps_the_last_good_config(
    tmp_path: Path, follow: list[ProxyController], caplog: pytest.LogCaptureFixture
) -> None:
    """Saving `active = "gateway"` (its CA file missing) is reported like a broken edit, with
    no traceback from the watcher, and requests keep going to the good target."""
    seen = Seen()
    with BackgroundServer(echo_app(seen)) as good:
        path = _config(tmp_path / "config.toml", good_url=good.url, active="good", ca_bundle=MISSING)
        controller = ProxyController.from_config(ConfigBinding(path))
        follow.append(controller)
        controller.start()
        with caplog.at_level(logging.INFO):
            _config(path, good_url=good.url, active="gateway", ca_bundle=MISSING)
            assert wait_until(lambda: controller.status.config_error is not None, timeout_s=FOLLOW_TIMEOUT_S)
        assert f"{path}:{CA_LINE}:1: {MISSING_REASON}" in (controller.status.problem or "")
        assert controller.status.target_name == "good"
        assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
        assert "watcher job failed" not in caplog.text


def test_choosing_a_target_whose_ca_bundle_is_missing_says_why_in_the_status(
    tmp_path: Path, follow: list[ProxyController], not_pem: Path
) -> None:
    """The tray's Target menu: the choice does not raise; the status line names the file and
    the proxy keeps serving the target it had."""
    with BackgroundServer(echo_app()) as good:
        path = _config(tmp_path / "config.toml", good_url=good.url, active="good", ca_bundle=str(not_pem))
        controller = ProxyController.from_config(ConfigBinding(path, watch=False))
        follow.append(controller)
        controller.start()
        controller.choose_target("gateway")
        assert controller.status.target_name == "good"
        assert f"{path}:{CA_LINE}:1: ca_bundle {not_pem} holds no certificate" in (controller.status.problem or "")
        assert 'active = "good"' in path.read_text()


def test_choosing_a_target_whose_fallback_has_an_unusable_ca_bundle_says_why_in_the_status(
    tmp_path: Path, follow: list[ProxyController], not_pem: Path
) -> None:
    """The choice's fallbacks become reachable with it: their TLS settings are checked as the
    chosen target's are, and the proxy keeps serving the target it had."""
    with BackgroundServer(echo_app()) as good:
        path = _config(tmp_path / "config.toml", good_url=good.url, active="good", ca_bundle=str(not_pem))
        with path.open("a") as config:
            config.write(f'[targets.other]\nurl = "{good.url}"\nfallbacks = ["gateway"]\n')
        controller = ProxyController.from_config(ConfigBinding(path, watch=False))
        follow.append(controller)
        controller.start()
        controller.choose_target("other")
        assert controller.status.state == "running"
        assert controller.status.target_name == "good"
        assert f"{path}:{CA_LINE}:1: ca_bundle {not_pem} holds no certificate" in (controller.status.problem or "")
