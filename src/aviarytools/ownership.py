"""Owners of what a restore creates, so that the running Aviary can use it.

Aviary often runs as a user other than root (compose `user: 1000:1000`),
while restores are run as root.  A file or folder made by root in a live
data folder would then be unreadable to Aviary.  So, run as root, whatever
we create in a live installation takes the owner and group of the folder it
belongs to (the storage root, or the folder of a new SQLite database); run as
anyone else, the kernel's rule (our own user) is the only one possible.
Modes follow Aviary's: folders 0755 and documents 0644, less the umask.
"""

from __future__ import annotations

import os

FOLDER_MODE = 0o755
FILE_MODE = 0o644

Owner = tuple[int, int]


def inherited_owner(path: str) -> Owner | None:
    """As root: (uid, gid) of `path`, or of its nearest existing parent; None when not root
    (a process that is not root cannot give files away)."""
    if os.geteuid() != 0:
        return None
    while True:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            parent = os.path.dirname(path)
            if parent == path:
                return None
            path = parent
            continue
        return st.st_uid, st.st_gid


def give(path_or_fd: str | int, owner: Owner | None) -> None:
    """chown `path_or_fd` to `owner`, if there is one."""
    if owner is None:
        return
    if isinstance(path_or_fd, int):
        os.fchown(path_or_fd, *owner)
    else:
        os.chown(path_or_fd, *owner, follow_symlinks=False)


def make_folders(folder: str, owner: Owner | None, made: list[str] | None = None) -> None:
    """Make `folder` and its missing parents (FOLDER_MODE less the umask), each given
    to `owner`; the ones made here are appended to `made`."""
    if os.path.isdir(folder):
        return
    make_folders(os.path.dirname(folder), owner, made)
    try:
        os.mkdir(folder, FOLDER_MODE)
    except FileExistsError:  # made by a concurrent writer
        return
    give(folder, owner)
    if made is not None:
        made.append(folder)
