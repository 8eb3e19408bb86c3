"""The Linux bundle's stand-in for cryptography's AES-CBC gives secretstorage the same bytes.

secretstorage encrypts a key on its way to the Secret Service and decrypts it on the way back;
a wrong byte here means a wrong key stored in the person's keychain, or sent to the target.
The real ``cryptography`` (in the test venv, as secretstorage's dependency) is the reference.
The bundle end to end, against gnome-keyring: tests/tray/test_frozen.py.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the stand-in is for the Linux bundle")

from desktop.platforms import secretservice_cipher as stand_in  # noqa: E402

reference = pytest.importorskip("cryptography.hazmat.primitives.ciphers")

keys = st.sampled_from([16, 24, 32]).flatmap(lambda size: st.binary(min_size=size, max_size=size))
ivs = st.binary(min_size=16, max_size=16)
whole_blocks = st.integers(min_value=0, max_value=20).flatmap(lambda n: st.binary(min_size=16 * n, max_size=16 * n))


def run_in_pieces(context: stand_in.CipherContext, data: bytes, cut: int) -> bytes:
    """``update`` twice, split at ``cut`` (mid-block when it is not a multiple of 16), then ``finalize``."""
    return context.update(data[:cut]) + context.update(data[cut:]) + context.finalize()


@given(key=keys, iv=ivs, data=whole_blocks, cut=st.integers(min_value=0, max_value=400))
def test_encrypts_and_decrypts_as_cryptography_does(key: bytes, iv: bytes, data: bytes, cut: int) -> None:
    """Any AES key size, any IV, any whole number of blocks fed in any two pieces."""
    real = reference.Cipher(reference.algorithms.AES(key), reference.modes.CBC(iv))
    real_encryptor = real.encryptor()
    expected = real_encryptor.update(data) + real_encryptor.finalize()

    ours = stand_in.Cipher(stand_in.AES(key), stand_in.CBC(iv), stand_in.default_backend())
    assert run_in_pieces(ours.encryptor(), data, cut) == expected
    assert run_in_pieces(ours.decryptor(), expected, cut) == data


def test_refuses_what_cryptography_refuses() -> None:
    """A partial last block, a key or IV of the wrong size, and a finished context: ValueError."""
    encryptor = stand_in.Cipher(stand_in.AES(bytes(16)), stand_in.CBC(bytes(16))).encryptor()
    encryptor.update(b"not sixteen")
    with pytest.raises(ValueError, match="not a multiple of the block length"):
        encryptor.finalize()
    with pytest.raises(ValueError, match="already finalized"):
        encryptor.update(bytes(16))
    with pytest.raises(ValueError, match="key size"):
        stand_in.AES(bytes(15))
    with pytest.raises(ValueError, match="IV size"):
        stand_in.Cipher(stand_in.AES(bytes(16)), stand_in.CBC(bytes(8))).encryptor()


# In a fresh interpreter: with site-packages off the path while it installs, the real
# cryptography is out of reach, as in the bundle that leaves it out; then secretstorage imports.
INSTALL_WITHOUT_CRYPTOGRAPHY = """
import json, sys
kept = sys.path[:]
sys.path[:] = [p for p in sys.path if "site-packages" not in p]
from desktop.platforms import secretservice_cipher as stand_in
installed = stand_in.install_as_cryptography()
sys.path[:] = kept
import secretstorage.item, secretstorage.util
print(json.dumps({
    "installed": installed,
    "util": secretstorage.util.Cipher is stand_in.Cipher and secretstorage.util.modes.CBC is stand_in.CBC,
    "item": secretstorage.item.algorithms.AES is stand_in.AES,
    "backend": secretstorage.util.default_backend is stand_in.default_backend,
}))
"""


def test_secretstorage_imports_the_stand_in_when_cryptography_is_missing() -> None:
    result = subprocess.run(
        [sys.executable, "-c", INSTALL_WITHOUT_CRYPTOGRAPHY], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"installed": True, "util": True, "item": True, "backend": True}


def test_the_real_cryptography_is_left_alone_where_it_is_installed() -> None:
    """From source (or a bundle built with cryptography) nothing is replaced."""
    code = (
        "from desktop.platforms import secretservice_cipher as stand_in\n"
        "installed = stand_in.install_as_cryptography()\n"
        "from cryptography.hazmat.primitives.ciphers import Cipher\n"
        "print(installed, Cipher is stand_in.Cipher)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False"]
