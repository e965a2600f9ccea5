"""Where Aviary's documents are: a folder or an S3 bucket, opened from a URL or Aviary's settings.

URLs: a plain path or file:///path (a folder); s3://bucket or s3://bucket/prefix.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from urllib.parse import unquote, urlsplit

from aviarytools.errors import ConfigError, redact, register_secret

from .base import ObjectInfo, Storage
from .filesystem import FilesystemStorage

__all__ = [
    "FilesystemStorage", "ObjectInfo", "S3Storage", "Storage",
    "open_storage", "resolve_storage", "storage_from_env",
]


def __getattr__(name: str):
    # boto3 takes half a second to import: only commands that reach S3 pay for it.
    if name in ("S3Storage", "make_client"):
        from . import s3

        return getattr(s3, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def resolve_storage(url: str | None, environ: Mapping[str, str] = os.environ, *,
                    s3_endpoint: str | None = None, s3_region: str | None = None,
                    s3_path_style: bool | None = None, s3_access_key: str | None = None,
                    s3_secret_key: str | None = None) -> Storage:
    """The storage a command works on: its --storage URL, else AVIARY_STORAGE, else Aviary's settings."""
    options = dict(s3_endpoint=s3_endpoint, s3_region=s3_region, s3_path_style=s3_path_style,
                   s3_access_key=s3_access_key, s3_secret_key=s3_secret_key)
    if url:
        return open_storage(url, environ=environ, **options)
    return storage_from_env(environ, **options)


def storage_from_env(environ: Mapping[str, str] = os.environ, **overrides) -> Storage:
    """AVIARY_STORAGE if set, else the storage Aviary itself would use with these variables."""
    if environ.get("AVIARY_STORAGE"):
        return open_storage(environ["AVIARY_STORAGE"], environ=environ, **overrides)
    backend = (environ.get("STORAGE_BACKEND") or "filesystem").strip().lower()
    if backend == "filesystem":
        return FilesystemStorage(environ.get("DATA_DIR") or "/data")
    if backend == "s3":
        bucket = environ.get("S3_BUCKET")
        if not bucket:
            raise ConfigError("STORAGE_BACKEND=s3 but S3_BUCKET is not set")
        # Aviary keeps its keys at the bucket root.
        return open_storage(f"s3://{bucket}", environ=environ, **overrides)
    raise ConfigError(f"STORAGE_BACKEND={backend!r}: expected filesystem or s3")


def open_storage(url: str, *, s3_endpoint: str | None = None, s3_region: str | None = None,
                 s3_path_style: bool | None = None, s3_access_key: str | None = None,
                 s3_secret_key: str | None = None,
                 environ: Mapping[str, str] | None = None) -> Storage:
    """Open a folder or bucket; S3 settings not given come from Aviary's S3_* variables."""
    environ = os.environ if environ is None else environ
    scheme = _SCHEME.match(url)
    if scheme is None:
        return _folder(url, url)
    if scheme.group(1).lower() == "file":
        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost"):
            raise ConfigError(f"{url}: a file URL names a local folder: file:///path")
        return _folder(unquote(parts.path), url)
    if scheme.group(1).lower() == "s3":
        return _bucket(url, environ, s3_endpoint, s3_region, s3_path_style, s3_access_key, s3_secret_key)
    raise ConfigError(f"{redact(url)}: unsupported storage URL (use a folder, file:///folder or s3://bucket/prefix)")


def _folder(path: str, url: str) -> FilesystemStorage:
    if not path:
        raise ConfigError(f"{url!r}: no folder given")
    return FilesystemStorage(path)


def _bucket(url, environ, endpoint, region, path_style, access_key, secret_key) -> S3Storage:
    from .s3 import S3Storage, make_client

    rest = url[len("s3://"):]
    if "@" in rest:  # s3://KEY:SECRET@bucket: the secret may hold "/", so before any split
        for secret in rest.rpartition("@")[0].split(":", 1):
            register_secret(secret)
            register_secret(unquote(secret))
        raise ConfigError(f"s3://***@{rest.rpartition('@')[2]}: credentials do not go in the URL"
                          " (use S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY)")
    bucket, _, prefix = rest.partition("/")
    if not bucket or ":" in bucket:
        raise ConfigError(f"{redact(url)}: expected s3://bucket or s3://bucket/prefix "
                          "(credentials go in S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY)")
    access_key = access_key or environ.get("S3_ACCESS_KEY_ID") or None
    secret_key = secret_key or environ.get("S3_SECRET_ACCESS_KEY") or None
    register_secret(secret_key)
    if bool(access_key) != bool(secret_key):
        raise ConfigError("S3: give both an access key and a secret key, or neither (AWS credential chain)")
    endpoint = endpoint or environ.get("S3_ENDPOINT") or None
    if endpoint and not endpoint.startswith(("http://", "https://")):
        raise ConfigError(f"S3 endpoint {redact(endpoint)}: expected http://host:port or https://host")
    if path_style is None:
        path_style = environ.get("S3_FORCE_PATH_STYLE", "").strip().lower() in ("1", "true", "yes")
    try:
        client = make_client(endpoint=endpoint, region=region or environ.get("S3_REGION") or "us-east-1",
                             path_style=path_style, access_key=access_key, secret_key=secret_key)
    except ValueError as err:  # botocore's verdict on a malformed endpoint or region
        raise ConfigError(redact(f"{url}: {err}")) from None
    return S3Storage(client, bucket, prefix)
