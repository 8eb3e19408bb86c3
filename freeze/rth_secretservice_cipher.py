"""PyInstaller runtime hook of the Linux bundle (build.spec): runs before TrayProxy's own code.

The bundle leaves out ``cryptography`` (11.4 MiB), from which secretstorage, keyring's Secret
Service backend, imports the AES-CBC that encrypts a key on the session bus. Offer it the same
cipher run by the bundle's libcrypto (desktop/platforms/secretservice_cipher.py says why).
"""

from desktop.platforms.secretservice_cipher import install_as_cryptography

install_as_cryptography()
