"""Where Aviary's documents are, opened from a URL or from Aviary's own settings.

Backends are registered here by URL scheme (and by Aviary's STORAGE_BACKEND
name); each backend's module parses its own URL and its own environment
(`s3.py` owns S3_*), declares what it can do (`Storage.capabilities`), and
passes the shared storage tests (tests/test_storage.py).  A module is imported
only when its scheme is used: botocore takes a tenth of a second to import.

URLs: a plain path or file:///path (a folder); s3://bucket or s3://bucket/prefix.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Mapping

from aviarytools import startup
from aviarytools.config import aviary_environment
from aviarytools.errors import ConfigError, redact

from .base import SWEPT, Capabilities, Listing, ObjectInfo, Staged, Storage
from .filesystem import FilesystemStorage

__all__ = [
    "BACKENDS", "SWEPT", "Capabilities", "FilesystemStorage", "Listing", "ObjectInfo", "S3Storage", "Staged", "Storage",
    "open_storage", "resolve_storage", "storage_from_env",
]

# URL scheme -> the module (in this package) whose `from_url(url, environ, options)` opens it.
SCHEMES = {"file": "filesystem", "s3": "s3"}
# Aviary's STORAGE_BACKEND -> the module whose `from_environment(environ, options)` opens
# the storage Aviary itself would use with those variables.
BACKENDS = {"filesystem": "filesystem", "s3": "s3"}

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def __getattr__(name: str):
    if name == "S3Storage":  # imported when asked for, as the backend is
        from .s3 import S3Storage

        return S3Storage
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _backend(module: str):
    return importlib.import_module(f".{module}", __name__)


def resolve_storage(url: str | None, environ: Mapping[str, str] | None = None, **options) -> Storage:
    """The storage a command works on: its --storage URL, else AVIARY_STORAGE, else Aviary's settings.

    `options` are the command line's settings for a backend (s3_endpoint=..., ...);
    each backend takes the ones it knows, the environment filling in the rest."""
    environ = aviary_environment(environ)
    if url:
        return open_storage(url, environ=environ, **options)
    return storage_from_env(environ, **options)


def storage_from_env(environ: Mapping[str, str] | None = None, **options) -> Storage:
    """AVIARY_STORAGE if set, else the storage Aviary itself would use with these variables."""
    environ = aviary_environment(environ)
    if environ.get("AVIARY_STORAGE"):
        return open_storage(environ["AVIARY_STORAGE"], environ=environ, **options)
    backend = (environ.get("STORAGE_BACKEND") or "filesystem").strip().lower()
    if backend not in BACKENDS:
        raise ConfigError(f"STORAGE_BACKEND={backend!r}: expected {' or '.join(BACKENDS)}")
    with startup.paused():  # a client library imported and made: see startup.py
        return _backend(BACKENDS[backend]).from_environment(environ, options)


def open_storage(url: str, *, environ: Mapping[str, str] | None = None, **options) -> Storage:
    """Open the folder or bucket `url` names; settings not in `options` come from the environment."""
    environ = aviary_environment(environ)
    scheme = _SCHEME.match(url)
    module = SCHEMES.get(scheme.group(1).lower()) if scheme else "filesystem"
    if module is None:
        known = ", ".join(f"{s}://" for s in SCHEMES)
        raise ConfigError(f"{redact(url)}: unsupported storage URL (use a folder or one of {known})")
    with startup.paused():  # a client library imported and made: see startup.py
        return _backend(module).from_url(url, environ, options)
