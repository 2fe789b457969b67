"""The one reader of private key files: every check on the opened descriptor and on the folder holding it.

Site keys, signing keys and node/TLS private keys are all read here, with the same rules:

* the file is opened without following a symbolic link, and checked on the opened descriptor (``fstat``),
  so it cannot be swapped between the check and the read: a regular file, owned by the current user,
  with no permission bit for group or others (0600 or stricter);
* the folder holding it is owned by the current user (or root) and grants nothing to group or others
  (0700): a key in a folder others can list or write is refused too, since whoever can write the folder
  can replace the key file by one of their own (and whoever can list it learns what keys exist);
* at most ``max_bytes`` are read: a key file is small, a huge one is not a key file.

Every refusal is a :class:`~common.errors.KeyMaterialError` naming the file, the problem and the fix.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from common.errors import KeyMaterialError

__all__ = ["check_private_folder", "read_private_file"]


def _refuse(label: str, path: Path, problem: str, fix: str) -> KeyMaterialError:
    return KeyMaterialError(f"{label} {path} {problem}; {fix}.")


def check_private_folder(folder: Path, *, label: str = "Key folder") -> None:
    """Refuse a folder holding keys that is not the current user's (or root's) with mode 0700 or stricter."""
    try:
        info = os.stat(folder)
    except OSError as error:
        raise _refuse(label, folder, f"cannot be read ({error.strerror})", "check the path") from None
    if info.st_uid not in (os.geteuid(), 0):
        raise _refuse(
            label, folder, f"is owned by uid {info.st_uid}", f"keep keys in a folder of uid {os.geteuid()}"
        )
    if info.st_mode & 0o077:
        raise _refuse(
            label,
            folder,
            f"has mode {stat.S_IMODE(info.st_mode):04o}, open to group or others",
            f"run `chmod 700 {folder}`",
        )


def read_private_file(
    path: Path,
    *,
    max_bytes: int,
    label: str = "Private key file",
    missing_fix: str = "restore it from backup",
) -> bytes:
    """Read a private key file after the checks in the module docstring; at most ``max_bytes + 1`` bytes.

    Raises
    ------
    KeyMaterialError
        Missing, not a regular file, a symbolic link, owned by someone else, open to group or others,
        or in a folder that is.
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise _refuse(label, path, "does not exist", missing_fix) from None
    except OSError as error:
        raise _refuse(
            label,
            path,
            f"cannot be opened ({error.strerror})",
            "it must be a regular file, not a symbolic link; check the path names the key file itself",
        ) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise _refuse(label, path, "is not a regular file", "point to the key file itself")
        if info.st_uid != os.geteuid():
            raise _refuse(
                label,
                path,
                f"is owned by uid {info.st_uid}, not by the current user (uid {os.geteuid()})",
                f"run as the key's owner or `chown {os.geteuid()} {path}`",
            )
        if info.st_mode & 0o077:
            raise _refuse(
                label,
                path,
                f"has mode {stat.S_IMODE(info.st_mode):04o}, open to group or others",
                f"run `chmod 600 {path}`",
            )
        check_private_folder(path.parent)
        return os.read(fd, max_bytes + 1)
    finally:
        os.close(fd)
