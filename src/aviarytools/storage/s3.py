"""Documents as objects in an S3 bucket (Aviary's STORAGE_BACKEND=s3).

URLs are s3://bucket or s3://bucket/prefix; the settings not on the command
line come from Aviary's own variables: S3_ENDPOINT, S3_REGION (us-east-1),
S3_BUCKET, S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY (else the standard AWS
credential chain), S3_FORCE_PATH_STYLE.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from urllib.parse import unquote

import boto3
import urllib3.exceptions
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from ..errors import ConfigError, redact, register_secret
from .base import CHUNK_SIZE, Capabilities, ObjectInfo, Storage

PART_SIZE = 8 << 20  # bodies below this go in one put_object
MAX_PARTS = 10_000  # S3's limit
NOT_FOUND = {"404", "NoSuchKey", "NotFound"}


def from_url(url: str, environ, options) -> "S3Storage":
    """s3://bucket[/prefix]; `options` (the command line's s3_endpoint, s3_region,
    s3_path_style, s3_access_key, s3_secret_key) before Aviary's S3_* variables."""
    rest = url[url.index("://") + 3:]
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
    access_key = options.get("s3_access_key") or environ.get("S3_ACCESS_KEY_ID") or None
    secret_key = options.get("s3_secret_key") or environ.get("S3_SECRET_ACCESS_KEY") or None
    register_secret(secret_key)
    if bool(access_key) != bool(secret_key):
        raise ConfigError("S3: give both an access key and a secret key, or neither (AWS credential chain)")
    endpoint = options.get("s3_endpoint") or environ.get("S3_ENDPOINT") or None
    if endpoint and not endpoint.startswith(("http://", "https://")):
        raise ConfigError(f"S3 endpoint {redact(endpoint)}: expected http://host:port or https://host")
    path_style = options.get("s3_path_style")
    if path_style is None:
        path_style = environ.get("S3_FORCE_PATH_STYLE", "").strip().lower() in ("1", "true", "yes")
    region = options.get("s3_region") or environ.get("S3_REGION") or "us-east-1"
    try:
        client = make_client(endpoint=endpoint, region=region, path_style=path_style,
                             access_key=access_key, secret_key=secret_key)
    except ValueError as err:  # botocore's verdict on a malformed endpoint or region
        raise ConfigError(redact(f"{url}: {err}")) from None
    return S3Storage(client, bucket, prefix)


def from_environment(environ, options) -> "S3Storage":
    """Aviary's STORAGE_BACKEND=s3: its keys at the root of S3_BUCKET."""
    bucket = environ.get("S3_BUCKET")
    if not bucket:
        raise ConfigError("STORAGE_BACKEND=s3 but S3_BUCKET is not set")
    return from_url(f"s3://{bucket}", environ, options)


def make_client(*, endpoint: str | None, region: str, path_style: bool,
                access_key: str | None, secret_key: str | None):
    """A client that fails within about a minute when the server is gone."""
    config = Config(
        region_name=region,
        s3={"addressing_style": "path" if path_style else "auto"},
        retries={"mode": "standard", "max_attempts": 3},
        connect_timeout=10,
        read_timeout=60,
        max_pool_connections=16,
        # Self-hosted S3 servers often reject the newer default checksum trailers.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    return boto3.session.Session().client(
        "s3", endpoint_url=endpoint, aws_access_key_id=access_key,
        aws_secret_access_key=secret_key, config=config,
    )


class S3Storage(Storage):
    capabilities = Capabilities(server_side_copy=True, md5_etags=True, immutable_objects=True,
                                connections=8)

    def __init__(self, client, bucket: str, prefix: str = ""):
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.url = f"s3://{bucket}/{self.prefix}".rstrip("/")

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        yield from self._walk(self.prefix + prefix)

    def stat(self, key: str) -> ObjectInfo | None:
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self._full(key))
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in NOT_FOUND:
                return None
            raise self._translate(key, err) from err
        except (BotoCoreError, urllib3.exceptions.HTTPError) as err:
            raise self._translate(key, err) from err
        return ObjectInfo(key, head["ContentLength"], head["LastModified"].timestamp(), _etag(head))

    def read(self, key: str, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        with self._translated(key):
            body = self.client.get_object(Bucket=self.bucket, Key=self._full(key))["Body"]
        try:
            with self._translated(key):
                yield from body.iter_chunks(chunk_size)
        finally:
            body.close()

    def write(self, key: str, chunks: Iterable[bytes], size: int | None = None,
              sync_follows: bool = False) -> None:  # a completed upload is durable already
        upload = None
        written = 0
        try:
            for part, more in _cut(chunks, _part_size(size)):
                written += len(part)
                if not more:
                    self.check_size(key, size, written)
                if upload is None and not more:
                    with self._translated(key):
                        self.client.put_object(Bucket=self.bucket, Key=self._full(key), Body=part)
                    return
                upload = upload or _MultipartUpload(self, key)
                upload.send(part)
                part = None  # let it go before the next one is read
            upload.complete()
        except BaseException:
            if upload is not None:
                upload.abort()
            raise

    def promote(self, staged_key: str, key: str) -> None:
        # A server-side copy: the bytes never travel through us again.
        with self._translated(key):
            self.client.copy({"Bucket": self.bucket, "Key": self._full(staged_key)},
                             self.bucket, self._full(key))
        self.delete(staged_key)

    def delete(self, key: str) -> None:
        with self._translated(key):
            self.client.delete_object(Bucket=self.bucket, Key=self._full(key))

    def close(self) -> None:
        self.client.close()

    def _walk(self, prefix: str) -> Iterator[ObjectInfo]:
        # One "folder" at a time, sorted here: some servers (SeaweedFS) list a flat
        # prefix in tree order, where "a/b" comes before "a-b".
        for name, info in self._folder(prefix):
            if info is None:
                yield from self._walk(name)
            else:
                yield info

    def _folder(self, prefix: str) -> list[tuple[str, ObjectInfo | None]]:
        """Objects (name, info) and sub-folders (name, None) directly under `prefix`."""
        entries = []
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix, Delimiter="/")
        with self._translated(prefix[len(self.prefix):] or None):
            for page in pages:
                for obj in page.get("Contents", []):
                    if not obj["Key"].endswith("/"):  # folder markers are not documents
                        entries.append((obj["Key"], self._info(obj)))
                for common in page.get("CommonPrefixes", []):
                    if common["Prefix"].startswith(prefix) and len(common["Prefix"]) > len(prefix):
                        entries.append((common["Prefix"], None))
        return sorted(entries, key=lambda entry: entry[0].encode("utf-8", "surrogateescape"))

    def _info(self, obj: dict) -> ObjectInfo:
        key = obj["Key"][len(self.prefix):]
        return ObjectInfo(key, obj["Size"], obj["LastModified"].timestamp(), _etag(obj))

    def _full(self, key: str) -> str:
        if not key:
            raise self.error(repr(key), "invalid key")
        return self.prefix + key

    @contextmanager
    def _translated(self, key: str | None):
        try:
            yield
        except (ClientError, BotoCoreError, urllib3.exceptions.HTTPError) as err:
            raise self._translate(key, err) from err

    def _translate(self, key: str | None, err: Exception):
        if isinstance(err, ClientError):
            error = err.response.get("Error", {})
            code = error.get("Code") or "error"
            message = error.get("Message")
            return self.error(key, f"{code}: {message}" if message and message != code else code,
                              code in NOT_FOUND)
        return self.error(key, str(err) or type(err).__name__)


class _MultipartUpload:
    def __init__(self, storage: S3Storage, key: str):
        self.storage = storage
        self.key = key
        self.parts: list[dict] = []
        with storage._translated(key):
            self.upload_id = storage.client.create_multipart_upload(
                Bucket=storage.bucket, Key=storage._full(key))["UploadId"]

    def send(self, data: bytes) -> None:
        number = len(self.parts) + 1
        if number > MAX_PARTS:
            raise self.storage.error(self.key, f"too large: more than {MAX_PARTS} parts")
        with self.storage._translated(self.key):
            etag = self.storage.client.upload_part(
                Bucket=self.storage.bucket, Key=self.storage._full(self.key),
                UploadId=self.upload_id, PartNumber=number, Body=data)["ETag"]
        self.parts.append({"ETag": etag, "PartNumber": number})

    def complete(self) -> None:
        with self.storage._translated(self.key):
            self.storage.client.complete_multipart_upload(
                Bucket=self.storage.bucket, Key=self.storage._full(self.key),
                UploadId=self.upload_id, MultipartUpload={"Parts": self.parts})

    def abort(self) -> None:
        try:
            self.storage.client.abort_multipart_upload(
                Bucket=self.storage.bucket, Key=self.storage._full(self.key), UploadId=self.upload_id)
        except Exception:
            pass  # the error that made us abort is the one to report


def _cut(chunks: Iterable[bytes], part_size: int) -> Iterator[tuple[bytearray, bool]]:
    """Parts of `part_size` bytes (the last may be shorter, even empty), each with: do more follow?"""
    buffer = bytearray()
    for chunk in chunks:
        buffer += chunk
        while len(buffer) > part_size:
            part = buffer[:part_size]
            del buffer[:part_size]
            yield part, True
            del part  # hold one part at a time
    yield buffer, False


def _part_size(size: int | None) -> int:
    if size is None or size <= PART_SIZE * MAX_PARTS:
        return PART_SIZE
    return -(-size // MAX_PARTS)


def _etag(response: dict) -> str | None:
    return response.get("ETag", "").strip('"') or None
