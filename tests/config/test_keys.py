"""Key sources become the target's headers; an unreadable key says why and never shows the key."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from desktop.clients import PLACEHOLDER_KEY
from desktop.config.keys import protect_in_file_keys, resolve_target
from desktop.config.model import LOCAL_TOKEN_PREFIX
from desktop.config.parse import parse_config

TEXT = """\
[targets.openai]
url = "https://api.openai.com"
key = { env = "TP_KEYS_TEST" }
headers = { Authorization = "Bearer {key}", "OpenAI-Organization" = "org-1" }
"""


def _spec(key: str, extra: str = "") -> object:
    text = f'[targets.t]\nurl = "https://api.example.test"\nkey = {key}\nheaders = {{ Authorization = "Bearer {{key}}" }}\n{extra}'
    return parse_config(text).targets["t"]


def _auth(resolved: object) -> list[str]:
    return [v.reveal() for n, v in resolved.target.add_headers if n == "Authorization"]  # type: ignore[attr-defined]


def test_env_key_fills_the_key_placeholder() -> None:
    """The key from the environment goes into the header that asks for it, as a Secret."""
    spec = parse_config(TEXT).targets["openai"]
    resolved = resolve_target(spec, {"TP_KEYS_TEST": "sk-from-env-123"})
    assert resolved.problem is None
    assert [(n, v.reveal()) for n, v in resolved.target.add_headers] == [
        ("Authorization", "Bearer sk-from-env-123"),
        ("OpenAI-Organization", "org-1"),
    ]
    assert "sk-from-env-123" not in repr(resolved)


def test_missing_env_key_leaves_the_clients_credentials_and_says_why(file_keyring: Path) -> None:
    """A tray app started at login does not see shell variables: the header needing the key is
    left out (the client's own Authorization passes), the warning names the variable and the
    way out (here a keychain works: set-key), and it is a warning, not an error."""
    spec = parse_config(TEXT).targets["openai"]
    resolved = resolve_target(spec, {})
    assert [n for n, _ in resolved.target.add_headers] == ["OpenAI-Organization"]
    assert resolved.problem is not None
    assert "TP_KEYS_TEST" in resolved.problem
    assert "set-key openai" in resolved.problem
    assert not resolved.fatal


def test_missing_env_key_without_a_keychain_offers_what_works_instead_of_set_key(tmp_path: Path) -> None:
    """With no OS keychain (keyring's fail backend: a server, a desktop with no Secret Service),
    `set-key` refuses; the advice for an empty variable (in the status, the tray's notification
    and `config check`) offers what works there: the variable where TrayProxy starts, a key
    command. So does the notice for a key written in the file."""
    resolved = resolve_target(parse_config(TEXT).targets["openai"], {})
    assert resolved.problem is not None
    assert "TP_KEYS_TEST" in resolved.problem
    assert "set-key" not in resolved.problem
    assert 'key = { command = "..." }' in resolved.problem
    config = tmp_path / "config.toml"
    config.write_text(TEXT)
    result = _cli("check", config=config)
    assert "TP_KEYS_TEST" in result.stderr
    assert "set-key" not in result.stderr
    if sys.platform != "win32":  # the notice comes with narrowing POSIX permission bits
        config.write_text('[targets.t]\nurl = "https://api.example.test"\nkey = "sk-in-file-123456789"\n')
        config.chmod(0o644)
        notice = protect_in_file_keys(config, parse_config(config.read_text()))
        assert notice is not None
        assert "set-key" not in notice


def test_what_trayproxy_hands_tools_is_never_taken_for_a_key() -> None:
    """The placeholder and the local access token (what `trayproxy env` puts in the key
    variables) count as no key, from any source, and the problem says which it is; a key that
    merely contains the placeholder's words is a key."""
    spec = parse_config(TEXT).targets["openai"]
    for stand_in, what in ((PLACEHOLDER_KEY, "placeholder"), (LOCAL_TOKEN_PREFIX + "0" * 64, "local access token")):
        resolved = resolve_target(spec, {"TP_KEYS_TEST": stand_in})
        assert resolved.problem is not None
        assert f"TP_KEYS_TEST holds TrayProxy's {what} (set by `trayproxy env` / Copy environment)" in resolved.problem
        assert [n for n, _ in resolved.target.add_headers] == ["OpenAI-Organization"]
        in_file = resolve_target(_spec(f'"{stand_in}"'), {})
        assert f"the key is TrayProxy's {what}, not your key" in str(in_file.problem)
        assert _auth(in_file) == []
    assert _auth(resolve_target(_spec(f'"sk-{PLACEHOLDER_KEY}-1234"'), {})) == [f"Bearer sk-{PLACEHOLDER_KEY}-1234"]


def test_missing_key_is_an_error_when_the_target_strips_the_clients_credentials() -> None:
    """A target that removes the client's Authorization cannot work without its own key."""
    resolved = resolve_target(_spec('{ env = "TP_NOPE" }', 'strip_headers = ["authorization"]\n'), {})
    assert resolved.fatal
    assert "cannot authenticate" in str(resolved.problem)


def test_command_key_is_the_first_line_the_command_prints() -> None:
    """A password manager or SSO helper prints the token; pipes work as in a shell."""
    resolved = resolve_target(_spec("""{ command = "printf '\\\\ntok-cmd-42\\\\nexpires: soon\\\\n' | cat" }"""), dict(os.environ))
    assert resolved.problem is None, resolved.problem
    assert _auth(resolved) == ["Bearer tok-cmd-42"]


def test_failing_command_says_its_status_and_last_error_line_without_the_key() -> None:
    """The person sees why the helper failed; anything key-shaped in its stderr is masked."""
    command = "{ command = \"echo 'token sk-proj-abcdefghijklmnop1234 rejected' >&2; exit 3\" }"
    resolved = resolve_target(_spec(command), dict(os.environ))
    assert resolved.problem is not None
    assert "status 3" in resolved.problem
    assert "rejected" in resolved.problem
    assert "sk-proj-abcdefghijklmnop1234" not in resolved.problem
    assert _auth(resolved) == []


def test_failing_command_masks_any_token_like_word_in_its_error() -> None:
    """A helper may print a secret of any kind in its error (a GitLab token, a JWT): anything
    token-shaped is masked, the plain words saying why stay."""
    token = "glpat-AbCdEf1234567890XyZq"
    command = f"{{ command = \"echo 'error: token {token} has expired' >&2; exit 1\" }}"
    resolved = resolve_target(_spec(command), dict(os.environ))
    assert resolved.problem is not None
    assert token not in resolved.problem
    assert "has expired" in resolved.problem
    assert "***" in resolved.problem


def test_command_printing_nothing_is_reported() -> None:
    resolved = resolve_target(_spec('{ command = "true" }'), dict(os.environ))
    assert "printed nothing" in str(resolved.problem)


def test_keyring_key_is_read_from_the_os_keychain(file_keyring: Path) -> None:
    """`key = { keyring = true }` reads the entry TrayProxy / the target's name."""
    import keyring

    keyring.set_password("TrayProxy", "t", "sk-kc-0123456789abcdef")
    resolved = resolve_target(_spec("{ keyring = true }"))
    assert resolved.problem is None
    assert _auth(resolved) == ["Bearer sk-kc-0123456789abcdef"]
    keyring.set_password("TrayProxy", "shared-account", "sk-kc-shared-99999999")
    assert _auth(resolve_target(_spec('{ keyring = "shared-account" }'))) == ["Bearer sk-kc-shared-99999999"]


def test_keyring_entry_missing_says_how_to_store_it(file_keyring: Path) -> None:
    resolved = resolve_target(_spec("{ keyring = true }"))
    assert "trayproxy config set-key t" in str(resolved.problem)


def test_no_keychain_on_a_headless_machine_is_explained() -> None:
    """Without a Secret Service (headless Linux), the message says so and offers other sources."""
    resolved = resolve_target(_spec("{ keyring = true }"))
    assert "no OS keychain" in str(resolved.problem)
    assert "env" in str(resolved.problem)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permission bits")
def test_a_file_holding_a_key_is_made_owner_only(tmp_path: Path) -> None:
    """A key written in the file itself is discouraged: the file loses group/other access and
    the person is told once; a file without keys is left as it is."""
    path = tmp_path / "config.toml"
    path.write_text('[targets.t]\nurl = "https://api.example.test"\nkey = "sk-in-file-123456789"\n')
    path.chmod(0o644)
    config = parse_config(path.read_text(), path=str(path))
    notice = protect_in_file_keys(path, config)
    assert notice is not None
    assert "readable by you only" in notice
    assert "sk-in-file" not in notice
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert protect_in_file_keys(path, config) is None
    plain = tmp_path / "plain.toml"
    plain.write_text('[targets.t]\nurl = "https://api.example.test"\n')
    plain.chmod(0o644)
    assert protect_in_file_keys(plain, parse_config(plain.read_text())) is None
    assert stat.S_IMODE(plain.stat().st_mode) == 0o644


def _cli(*args: str, stdin: str = "", config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "desktop", "config", *args, "--config", str(config)],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_config_check_reports_unreadable_keys_with_their_line(tmp_path: Path) -> None:
    """`config check` lists a key source that cannot be read at the line of its `key =`:
    a warning when the client's key may pass (exit 0), an error when it cannot (exit 1)."""
    config = tmp_path / "config.toml"
    config.write_text(
        '[targets.a]\nurl = "https://a.example.test"\nkey = { env = "TP_UNSET_A" }\n'
        'headers = { Authorization = "Bearer {key}" }\n'
    )
    result = _cli("check", config=config)
    assert result.returncode == 0, result.stderr
    assert f"{config}:3:1: warning: target 'a': the environment variable TP_UNSET_A" in result.stderr
    config.write_text(config.read_text() + 'strip_headers = ["Authorization"]\n')
    result = _cli("check", config=config)
    assert result.returncode == 1
    assert f"{config}:3:1: error:" in result.stderr


def test_set_key_stores_the_key_in_the_keychain_and_points_the_target_at_it(
    tmp_path: Path, file_keyring: Path
) -> None:
    """`trayproxy config set-key NAME` (key piped in) stores it in the keychain, switches the
    target's key source to the keychain keeping the file's comments, and never prints the key;
    the stored key is then used."""
    config = tmp_path / "config.toml"
    config.write_text(
        "# my targets\n"
        '[targets.a]\nurl = "https://a.example.test"  # the gateway\n'
        'key = { env = "TP_UNSET_A" }\nheaders = { Authorization = "Bearer {key}" }\n'
    )
    result = _cli("set-key", "a", stdin="sk-set-key-0123456789abcdef\n", config=config)
    assert result.returncode == 0, result.stderr
    assert "sk-set-key" not in result.stdout + result.stderr
    assert "sk-set-key" not in config.read_text()
    assert "# my targets" in config.read_text()
    assert "# the gateway" in config.read_text()
    assert "sk-set-key-0123456789abcdef" in file_keyring.read_text()
    resolved = resolve_target(parse_config(config.read_text()).targets["a"])
    assert _auth(resolved) == ["Bearer sk-set-key-0123456789abcdef"]


def test_set_key_without_a_keychain_says_so_and_changes_nothing(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    original = '[targets.a]\nurl = "https://a.example.test"\n'
    config.write_text(original)
    result = _cli("set-key", "a", stdin="sk-nowhere-0123456789\n", config=config)
    assert result.returncode == 1
    assert "no OS keychain" in result.stderr
    assert "sk-nowhere" not in result.stderr
    assert config.read_text() == original


def test_failing_command_never_shows_what_it_printed_as_the_key() -> None:
    """A helper that printed its key and then failed (expired, a second step refused) may quote
    the key in its complaint. A key of no known shape ("correct-horse-battery-staple...") is
    not token-like, so only this rule hides it: nothing the command printed on stdout, the
    key it was meant to give, shows in the error; the words around it do."""
    key = "correct-horse-battery-staple-zebra-quilt"
    command = f"{{ command = \"echo {key}; echo 'session token {key} expired' >&2; exit 1\" }}"
    resolved = resolve_target(_spec(command), dict(os.environ))
    assert resolved.problem is not None
    assert "correct-horse" not in resolved.problem
    assert "session token *** expired" in resolved.problem


def test_every_setting_a_target_shares_with_the_engine_reaches_it() -> None:
    """Each setting of a [targets.NAME] table that the engine's Target also has (timeouts,
    TLS, Host, proxy, header lists) arrives there as written: resolve_target copies them one by
    one, so mypy checks each, and this test catches one left out, including a setting added to
    both later (every shared field must be set here away from its default)."""
    from dataclasses import MISSING, fields

    from desktop.config.model import Target
    from desktop.config.parse import TargetSpec

    text = (
        '[targets.t]\nurl = "https://api.example.test/base"\nkey = { env = "TP_KEYS_TEST" }\n'
        'headers = { Authorization = "Bearer {key}" }\nstrip_headers = ["x-drop"]\n'
        'keep_headers = ["x-api-key"]\nconnect_timeout = 3.5\nread_timeout = 77\nverify_tls = false\n'
        'ca_bundle = "/etc/ssl/corp.pem"\nkeep_host = true\nproxy = "http://127.0.0.1:3128"\n'
        'cache = "replay"\n'
    )
    spec = parse_config(text).targets["t"]
    target = resolve_target(spec, {"TP_KEYS_TEST": "sk-shared-fields-0123"}).target
    spec_fields = {field.name for field in fields(TargetSpec)}
    shared = [field for field in fields(Target) if field.name in spec_fields]
    assert len(shared) == 11  # url, name, the two header lists, timeouts, TLS, Host, proxy, cache
    for field in shared:
        default = field.default_factory() if field.default_factory is not MISSING else field.default
        assert getattr(spec, field.name) != default, f"set {field.name} in this test's target"
        assert getattr(target, field.name) == getattr(spec, field.name), field.name
