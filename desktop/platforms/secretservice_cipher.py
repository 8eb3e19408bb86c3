"""AES-CBC for the Linux keychain's session, from the OpenSSL library Python's ``ssl`` loads.

Only the standard library; imported by the Linux bundle's runtime hook
(``freeze/rth_secretservice_cipher.py``), nowhere else.

Why: keyring reaches the Secret Service (gnome-keyring, KeePassXC) through secretstorage, which
encrypts each secret on its way over the session bus (the spec's
``dh-ietf1024-sha256-aes128-cbc-pkcs7`` session: Diffie-Hellman and HKDF in pure Python, then
AES-128-CBC) and takes that one cipher from ``cryptography``, whose compiled core is 11.4 MiB, the
largest file of the bundle. The bundle leaves ``cryptography`` out, and ``install_as_cryptography``
offers secretstorage the four names it imports (``default_backend``, ``Cipher``,
``algorithms.AES``, ``modes.CBC``) with the same behaviour, run by libcrypto, which the bundle
ships anyway for Python's ``ssl`` and ``hashlib``. The session stays encrypted: falling back to
the spec's ``plain`` session would hand the secret to anything watching the bus in the clear.
No padding here, as in ``cryptography``: secretstorage pads (PKCS#7) and unpads itself.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

__all__ = ["AES", "CBC", "Cipher", "CipherContext", "default_backend", "install_as_cryptography"]

BLOCK_BYTES = 16  # AES's block, whatever the key length (FIPS 197, section 3.1)
# libcrypto has one EVP cipher per AES key length (FIPS 197: 128, 192 or 256 bits).
CBC_CIPHERS = {16: "EVP_aes_128_cbc", 24: "EVP_aes_192_cbc", 32: "EVP_aes_256_cbc"}
# The docstring of each stand-in module, for whoever finds one in a traceback.
STAND_IN_DOC = "TrayProxy's stand-in for secretstorage's part of cryptography (desktop/platforms/secretservice_cipher.py)"


class AES:
    """An AES key (``cryptography``'s ``algorithms.AES``)."""

    name = "AES"
    block_size = BLOCK_BYTES * 8

    def __init__(self, key: bytes) -> None:
        if len(key) not in CBC_CIPHERS:
            raise ValueError(f"Invalid key size ({len(key) * 8}) for AES.")
        self.key = bytes(key)

    @property
    def key_size(self) -> int:
        return len(self.key) * 8


class CBC:
    """Cipher block chaining with its initialisation vector (``cryptography``'s ``modes.CBC``)."""

    name = "CBC"

    def __init__(self, initialization_vector: bytes) -> None:
        self.initialization_vector = bytes(initialization_vector)


class CipherContext:
    """One encryption or decryption: ``update`` as often as needed, then ``finalize`` once."""

    def __init__(self, algorithm: AES, mode: CBC, *, encrypt: bool) -> None:
        self._context: int | None = None  # set first: __del__ runs even when __init__ raised
        if len(mode.initialization_vector) != BLOCK_BYTES:
            raise ValueError(f"Invalid IV size ({len(mode.initialization_vector)}) for CBC.")
        lib = _libcrypto()
        cipher = getattr(lib, CBC_CIPHERS[len(algorithm.key)])()
        self._context = lib.EVP_CIPHER_CTX_new()
        if not self._context:
            raise MemoryError("libcrypto could not make a cipher context")
        if not lib.EVP_CipherInit_ex(
            self._context, cipher, None, algorithm.key, mode.initialization_vector, int(encrypt)
        ):
            self._free()
            raise ValueError("libcrypto refused the key or IV")
        lib.EVP_CIPHER_CTX_set_padding(self._context, 0)

    def update(self, data: bytes) -> bytes:
        """Whole blocks of ``data`` (with what an earlier call left), run through the cipher."""
        context = self._live_context()
        out = ctypes.create_string_buffer(len(data) + BLOCK_BYTES)
        written = ctypes.c_int(0)
        if not _libcrypto().EVP_CipherUpdate(context, out, ctypes.byref(written), bytes(data), len(data)):
            self._free()
            raise ValueError("libcrypto failed to run the cipher")
        return out.raw[: written.value]

    def finalize(self) -> bytes:
        """End the run; refuse input that was not a whole number of blocks."""
        context = self._live_context()
        out = ctypes.create_string_buffer(BLOCK_BYTES)
        written = ctypes.c_int(0)
        complete = _libcrypto().EVP_CipherFinal_ex(context, out, ctypes.byref(written))
        self._free()
        if not complete:
            raise ValueError("The length of the provided data is not a multiple of the block length.")
        return out.raw[: written.value]

    def _live_context(self) -> int:
        if self._context is None:
            raise ValueError("Context was already finalized.")
        return self._context

    def _free(self) -> None:
        if self._context is not None:
            _libcrypto().EVP_CIPHER_CTX_free(self._context)
            self._context = None

    def __del__(self) -> None:
        self._free()


class Cipher:
    """An algorithm and a mode (``cryptography``'s ``Cipher``); ``backend`` is ignored there too."""

    def __init__(self, algorithm: AES, mode: CBC, backend: object = None) -> None:
        self.algorithm = algorithm
        self.mode = mode

    def encryptor(self) -> CipherContext:
        return CipherContext(self.algorithm, self.mode, encrypt=True)

    def decryptor(self) -> CipherContext:
        return CipherContext(self.algorithm, self.mode, encrypt=False)


def default_backend() -> object:
    """``cryptography`` keeps this name for old callers and ignores the result; so do we."""
    return None


@functools.cache
def _libcrypto() -> ctypes.CDLL:
    """The libcrypto this Python already runs (the bundle's own copy when frozen)."""
    importlib.import_module("_hashlib")  # loads libcrypto, so /proc/self/maps names its file
    path = _loaded_library("libcrypto.so") or ctypes.util.find_library("crypto")
    if path is None:
        raise OSError("libcrypto (OpenSSL) is not loaded and cannot be found")
    lib = ctypes.CDLL(path)
    for name in CBC_CIPHERS.values():
        getattr(lib, name).restype = ctypes.c_void_p
        getattr(lib, name).argtypes = []
    lib.EVP_CIPHER_CTX_new.restype = ctypes.c_void_p
    lib.EVP_CIPHER_CTX_new.argtypes = []
    lib.EVP_CIPHER_CTX_free.restype = None
    lib.EVP_CIPHER_CTX_free.argtypes = [ctypes.c_void_p]
    lib.EVP_CIPHER_CTX_set_padding.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.EVP_CipherInit_ex.argtypes = [
        ctypes.c_void_p,  # context
        ctypes.c_void_p,  # cipher
        ctypes.c_void_p,  # engine: none
        ctypes.c_char_p,  # key
        ctypes.c_char_p,  # iv
        ctypes.c_int,  # 1 encrypt, 0 decrypt
    ]
    lib.EVP_CipherUpdate.argtypes = [
        ctypes.c_void_p,
        ctypes.c_char_p,
        ctypes.POINTER(ctypes.c_int),
        ctypes.c_char_p,
        ctypes.c_int,
    ]
    lib.EVP_CipherFinal_ex.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int)]
    return lib


def _loaded_library(prefix: str, maps: Path = Path("/proc/self/maps")) -> str | None:
    """The file of a shared library this process has mapped whose name starts with ``prefix``."""
    try:
        lines = maps.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and Path(fields[5]).name.startswith(prefix):
            return fields[5]
    return None


# What secretstorage imports (secretstorage/util.py, item.py), module by module, parents first.
STAND_IN_MODULES: dict[str, dict[str, object]] = {
    "cryptography": {},
    "cryptography.hazmat": {},
    "cryptography.hazmat.backends": {"default_backend": default_backend},
    "cryptography.hazmat.primitives": {},
    "cryptography.hazmat.primitives.ciphers": {"Cipher": Cipher},
    "cryptography.hazmat.primitives.ciphers.algorithms": {"AES": AES},
    "cryptography.hazmat.primitives.ciphers.modes": {"CBC": CBC},
}


def install_as_cryptography() -> bool:
    """Make secretstorage's ``from cryptography.hazmat... import ...`` lines give the classes
    above, unless the real ``cryptography`` is importable; True when installed."""
    if "cryptography" in sys.modules or importlib.util.find_spec("cryptography") is not None:
        return False
    modules: dict[str, ModuleType] = {}
    for name, contents in STAND_IN_MODULES.items():
        module = ModuleType(name, STAND_IN_DOC)
        module.__dict__.update(contents)
        parent, _, child = name.rpartition(".")
        if parent:
            modules[parent].__dict__.update({child: module, "__path__": []})  # the parent is a package
        modules[name] = module
    sys.modules.update(modules)
    return True
