"""Site keys kept in the operating system's keyring (Secret Service, macOS Keychain, Windows Credential
Locker), through the ``keyring`` package, for sites whose security officer wants no key file on disk.

The entry is the key as 64 hex characters, under service ``keys.keyring_service`` (default
``fedscan``) and the site id as user name. ``keyring`` is an optional dependency
(``pip install "fedscan[keyring]"``); which backend it uses is the host's choice (its own
configuration, or ``PYTHON_KEYRING_BACKEND``).
"""

from __future__ import annotations

from types import ModuleType

from common.crypto import SiteKey, key_from_text
from common.errors import KeyMaterialError

__all__ = ["delete_key_from_keyring", "key_from_keyring", "store_key_in_keyring"]


def _keyring() -> ModuleType:
    try:
        import keyring
    except ImportError:
        raise KeyMaterialError(
            'keys.source is "keyring" but the keyring package is not installed: '
            'pip install "fedscan[keyring]".'
        ) from None
    return keyring


def _entry(service: str, site_id: str) -> str:
    return f"keyring entry {service}/{site_id}"


def key_from_keyring(service: str, site_id: str) -> SiteKey:
    """Read the site key from the OS keyring; a clear error if the entry or the backend is missing."""
    keyring = _keyring()
    try:
        value = keyring.get_password(service, site_id)
    except keyring.errors.KeyringError as error:
        raise KeyMaterialError(
            f"Cannot read {_entry(service, site_id)}: no usable OS keyring ({type(error).__name__})."
        ) from None
    if value is None:
        raise KeyMaterialError(
            f"The {_entry(service, site_id)} does not exist; create the site with "
            "`fedscan site init --key-source keyring`, or restore the entry from your key backup."
        )
    return key_from_text(value, f"The {_entry(service, site_id)}")


def store_key_in_keyring(service: str, site_id: str, key: SiteKey) -> None:
    """Create the keyring entry for a new site; refuses to replace an existing one (it may hold the
    only copy of another site's key)."""
    keyring = _keyring()
    try:
        if keyring.get_password(service, site_id) is not None:
            raise KeyMaterialError(
                f"The {_entry(service, site_id)} exists already; refusing to overwrite a site key."
            )
        keyring.set_password(service, site_id, key.material.hex())
    except keyring.errors.KeyringError as error:
        raise KeyMaterialError(
            f"Cannot write {_entry(service, site_id)}: no usable OS keyring ({type(error).__name__})."
        ) from None


def delete_key_from_keyring(service: str, site_id: str) -> str:
    """Delete the site's keyring entry (crypto-shredding); returns a description of what was deleted."""
    keyring = _keyring()
    try:
        keyring.delete_password(service, site_id)
    except keyring.errors.PasswordDeleteError:
        pass  # already gone: shredding is idempotent
    except keyring.errors.KeyringError as error:
        raise KeyMaterialError(
            f"Cannot delete {_entry(service, site_id)}: no usable OS keyring ({type(error).__name__})."
        ) from None
    return _entry(service, site_id)
