"""Documents as objects in an S3 bucket (Aviary's STORAGE_BACKEND=s3).

URLs are s3://bucket or s3://bucket/prefix; the settings not on the command
line come from Aviary's own variables: S3_ENDPOINT, S3_REGION (us-east-1),
S3_BUCKET, S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY (else the standard AWS
credential chain), S3_FORCE_PATH_STYLE.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import CancelledError, Future
from contextlib import contextmanager
from dataclasses import replace
from urllib.parse import unquote

import botocore.session
import urllib3.exceptions
import xxhash
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from ..errors import ConfigError, redact, register_secret
from ..spill import sorted_records
from .base import CHUNK_SIZE, SWEPT, Capabilities, Irregular, ObjectInfo, Staged, Storage, ignore_count, hashing
from .transfers import Transfers

PART_SIZE = 8 << 20  # bodies below this go in one put_object; larger ones go, and are read, in parts
MAX_PARTS = 10_000  # S3's limit
COPY_PART_SIZE = 512 << 20  # parts of a server-side copy too large for one request (over 5 GiB)
SWEEP_BATCH = 100  # keys a DeleteObjects request of a sweep in a hurry (after a signal) removes
DELETE_BATCH = 1000  # keys one DeleteObjects request takes
NOT_FOUND = {"404", "NoSuchKey", "NotFound"}
NO_BUCKET = {"404", "NoSuchBucket", "NotFound"}
CHANGED = {"412", "PreconditionFailed"}
# Requests in flight.  Measured behind a 20 ms round trip (bench/s3.py): see the README.
DEFAULT_CONCURRENCY = 16
# Staged documents of this size or more go up to their own key, left incomplete until the commit:
# a server-side copy costs the server a read and a write of every byte (1.1 s for 96 MiB on the
# bench's SeaweedFS), completing an upload one request.
DEFERRED_MIN = 1 << 20


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
        path_style = environ.get("S3_FORCE_PATH_STYLE", "").strip().lower() in ("1", "t", "true", "y", "yes")  # Aviary's
    region = options.get("s3_region") or environ.get("S3_REGION") or "us-east-1"
    concurrency = _concurrency(options.get("s3_concurrency") or environ.get("AVIARY_S3_CONCURRENCY"))
    try:
        client = make_client(endpoint=endpoint, region=region, path_style=path_style,
                             access_key=access_key, secret_key=secret_key, connections=concurrency)
    except ValueError as err:  # botocore's verdict on a malformed endpoint or region
        raise ConfigError(redact(f"{url}: {err}")) from None
    return S3Storage(client, bucket, prefix, concurrency)


def _concurrency(value) -> int:
    if value is None or value == "":
        return DEFAULT_CONCURRENCY
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = 0
    if not 1 <= number <= 256:
        raise ConfigError(f"S3 concurrency {value!r}: expected a number of requests from 1 to 256")
    return number


def from_environment(environ, options) -> "S3Storage":
    """Aviary's STORAGE_BACKEND=s3: its keys at the root of S3_BUCKET."""
    bucket = environ.get("S3_BUCKET")
    if not bucket:
        raise ConfigError("STORAGE_BACKEND=s3 but S3_BUCKET is not set")
    return from_url(f"s3://{bucket}", environ, options)


def make_client(*, endpoint: str | None, region: str, path_style: bool,
                access_key: str | None, secret_key: str | None, connections: int = DEFAULT_CONCURRENCY):
    """A client that fails within about a minute when the server is gone."""
    config = Config(
        region_name=region,
        s3={"addressing_style": "path" if path_style else "auto"},
        retries={"mode": "standard", "max_attempts": 3},
        connect_timeout=10,
        read_timeout=60,
        # One connection per request in flight, and a few for the caller's own (a listing):
        # a smaller pool would discard connections and pay for new ones.
        max_pool_connections=connections + 4,
        # Self-hosted S3 servers often reject the newer default checksum trailers.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    # botocore's own session, not boto3's: the same client in half the start-up time (boto3's
    # session imports s3transfer and builds its resource factories, 0.2 s on a small VM).
    return botocore.session.get_session().create_client(
        "s3", endpoint_url=endpoint, aws_access_key_id=access_key,
        aws_secret_access_key=secret_key, config=config,
    )


class S3Storage(Storage):
    capabilities = Capabilities(server_side_copy=True, md5_etags=True, immutable_objects=True,
                                batch_delete=DELETE_BATCH, connections=DEFAULT_CONCURRENCY,
                                sweeps=True)  # a listing and a DeleteObjects per 1,000 keys

    def __init__(self, client, bucket: str, prefix: str = "", concurrency: int = DEFAULT_CONCURRENCY):
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.url = f"s3://{bucket}/{self.prefix}".rstrip("/")
        self.capabilities = replace(type(self).capabilities, connections=concurrency)
        # Bytes held for requests: up to 4 MiB per request in flight, 64 MiB in all.
        self._transfers = Transfers(concurrency, min(concurrency * (4 << 20), 64 << 20), name="s3")
        self._puts: list[Future] = []
        # Staged as uploads to their own key, by the handle stage() gave (and, once settled, by
        # their upload id as well).
        self._uploads: dict[str, _MultipartUpload] = {}
        self._landed = 0  # staged objects stored (their puts end in the background)
        self._deferred = False  # stage() has left uploads incomplete, to be completed or aborted
        self._puts_lock = threading.Lock()

    # -- one object ------------------------------------------------------------------

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        # One flat listing, 1,000 keys a request, sorted here: some servers (SeaweedFS)
        # list in tree order, where "a/b" comes before "a-b".
        records = ((obj["Key"], obj["Size"], obj["LastModified"].timestamp(), _etag(obj))
                   for obj in self._listed(self.prefix + prefix) if not obj["Key"].endswith("/"))
        for key, size, mtime, etag in sorted_records(records):
            yield ObjectInfo(key[len(self.prefix):], size, mtime, etag)

    def _listed(self, prefix: str) -> Iterator[dict]:
        """Every entry under `prefix`, folder markers too (keys ending in "/")."""
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix, PaginationConfig={"PageSize": 1000})
        with self._translated(prefix[len(self.prefix):] or None):
            for page in pages:
                yield from page.get("Contents", [])

    def irregular_entries(self, skip) -> Iterator[Irregular]:
        """Multipart uploads left incomplete (a restore or an upload that was killed): they
        hold storage, invisibly, until aborted."""
        pages = self.client.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket, Prefix=self.prefix)
        with self._translated(None):
            for page in pages:
                for upload in page.get("Uploads", []):
                    key = upload["Key"][len(self.prefix):]
                    if not skip(key):
                        begun = upload["Initiated"].strftime("%Y-%m-%d %H:%M")
                        yield Irregular(key, f"an incomplete multipart upload (begun {begun}): an upload"
                                             " or a restore that did not finish")

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

    def check(self) -> None:
        """HeadBucket, one request: a missing bucket is refused, never made by a write."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in NO_BUCKET:
                raise self.error(None, f"no such bucket {self.bucket!r}: check the name, or create the bucket"
                                       " first (aviary creates none)") from err
            raise self._translate(None, err) from err
        except (BotoCoreError, urllib3.exceptions.HTTPError) as err:
            raise self._translate(None, err) from err

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
        self._upload(key, chunks, size).result()

    def promote(self, staged: Staged, key: str) -> None:
        if staged.upload is not None:
            self._complete(staged)
        else:
            self._copy((staged.key, key))
            self.delete(staged.key)

    def delete(self, key: str) -> None:
        with self._translated(key):
            self.client.delete_object(Bucket=self.bucket, Key=self._full(key))

    def close(self) -> None:
        super().close()
        self.client.close()

    # -- many objects, side by side ---------------------------------------------------

    def read_ahead(self, objects):
        """Objects (and parts of large ones, by ranged GETs) are fetched ahead, up to
        the concurrency and the byte budget, and handed over in the order given."""
        fetched = self.transfers.prefetch(_parts(objects), self._fetch, lambda part: part[2] - part[1])
        for part, future in fetched:
            if part[1]:
                continue  # the rest of an object whose first part failed (the caller moved on)
            info = part[0]
            hasher = xxhash.xxh3_128()
            pieces = self._pieces(part, future, fetched)
            yield info, hashing(pieces, hasher), hasher
            for _ in pieces:  # what the caller left of the object
                pass

    @staticmethod
    def _pieces(part, future, fetched) -> Iterator[bytes]:
        while True:
            yield future.result()  # the part's bytes, or its error, in order
            if part[3]:
                return
            part, future = next(fetched)

    def _fetch(self, part) -> bytes:
        info, start, end, last = part
        arguments = {"Bucket": self.bucket, "Key": self._full(info.key)}
        if start or not last:  # one part of several, of the very object listed
            arguments["Range"] = f"bytes={start}-{end - 1}"
            if info.etag:
                arguments["IfMatch"] = f'"{info.etag}"'
        with self._translated(info.key):
            body = self.client.get_object(**arguments)["Body"]
            try:
                return body.read()
            finally:
                body.close()

    def put(self, key: str, chunks: Iterable[bytes], size: int, sync_follows: bool = False) -> None:
        self._put(key, chunks, size)

    def _put(self, key: str, chunks: Iterable[bytes], size: int, landed=None) -> None:
        self._raise_failed_put()
        future = self._upload(key, chunks, size)
        if landed is not None:
            future.add_done_callback(landed)  # (at once if it is done: outside the lock)
        with self._puts_lock:
            self._puts.append(future)

    def stage(self, staged_key: str, key: str, chunks: Iterable[bytes], size: int,
              sync_follows: bool = False) -> Staged:
        """A document of DEFERRED_MIN or more goes up as a multipart upload to `key` itself,
        left incomplete: invisible, and replacing nothing, until promote completes it (a
        request, no copy of its bytes); aborted by unstage_many.  Smaller ones are put
        under `staged_key` and copied into place (two requests are fewer than three)."""
        if size is None or size < DEFERRED_MIN:
            self._put(staged_key, chunks, size, landed=self._count_landed)
            return Staged(staged_key)
        self._raise_failed_put()
        upload = self._upload(key, chunks, size, defer=True)
        with self._puts_lock:
            handle = f"#{len(self._uploads)}"  # this process's own: settled() gives the upload id
            self._uploads[handle] = upload
        if upload.upload_id is not None:
            self._count_landed(_done(None))
        else:  # begun by the worker that sends its one part
            upload.sent[0].add_done_callback(self._count_landed)
        return Staged(key, handle)

    def _count_landed(self, future: Future) -> None:
        if not future.cancelled() and future.exception() is None:
            with self._puts_lock:
                self._landed += 1

    def landed(self) -> int:
        with self._puts_lock:
            return self._landed

    def settled(self, staged: Staged) -> Staged:
        upload = self._uploads.get(staged.upload) if staged.upload is not None else None
        if upload is None or upload.upload_id is None:  # (one never begun stays an upload: never a key)
            return staged
        self._uploads[upload.upload_id] = upload
        return Staged(staged.key, upload.upload_id)

    def settle(self) -> None:
        with self._puts_lock:
            puts, self._puts = self._puts, []
            uploads = list(self._uploads.values())
        futures = [*puts, *(f for upload in uploads for f in upload.sent)]
        for error in [f.exception() for f in futures if not f.cancelled()]:
            if error is not None:
                raise error

    def discard(self) -> None:
        with self._puts_lock:
            puts, self._puts = self._puts, []
            uploads = list(self._uploads.values())
        for future in [*puts, *(f for upload in uploads for f in upload.sent)]:
            future.cancel()
        super().discard()

    def unstage_many(self, staged: Iterable[Staged]) -> None:
        keys, uploads = [], []
        for item in staged:
            if item.upload is not None:
                uploads.append(item)
            else:
                keys.append(item.key)
        self.transfers.each(self._abort, uploads)
        self.delete_many(keys)

    def _abort(self, staged: Staged) -> None:
        upload = self._uploads.pop(staged.upload, None)
        if upload is None:  # from a journal: known by its id only
            upload = _MultipartUpload(self, staged.key)
            upload.upload_id = staged.upload
        upload.abort()

    def _complete(self, staged: Staged) -> None:
        """Complete the upload to staged.key: with the parts this process sent, or (a finish
        from the journal) those the server lists.  One completed already is done."""
        upload = self._uploads.pop(staged.upload, None)
        if upload is not None:
            upload.complete()
            return
        upload = _MultipartUpload(self, staged.key)
        upload.upload_id = staged.upload
        try:
            upload.complete_listed()
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") not in ("NoSuchUpload", "404"):
                raise self._translate(staged.key, err) from err
            if self.stat(staged.key) is None:
                raise self.error(staged.key, f"upload {staged.upload}: no such upload", missing=True) from None
        except (BotoCoreError, urllib3.exceptions.HTTPError) as err:
            raise self._translate(staged.key, err) from err

    def leftovers(self, prefix: str) -> str:
        advice = super().leftovers(prefix)
        if self._deferred:
            advice += f" and abort the multipart uploads left incomplete in {self.url} (aws s3api list-multipart-uploads)"
        return advice

    def _raise_failed_put(self) -> None:
        """Stop at the first put that failed, rather than after the whole archive."""
        with self._puts_lock:
            done = [f for f in self._puts if f.done()]
            self._puts = [f for f in self._puts if not f.done()]
        for future in done:
            if not future.cancelled() and future.exception() is not None:
                raise future.exception()

    def promote_many(self, pairs: Iterable[tuple[Staged, str]], done=ignore_count) -> None:
        """Copies (and completions) side by side, then the copied staged objects deleted in
        batches.  A copy counts as done once made: copying again is harmless."""
        copied = []

        def promote(pair):
            staged, key = pair
            if staged.upload is not None:
                self._complete(staged)  # the upload to the key itself, finished
            else:
                self._copy((staged.key, key))
            done(1)

        def noted(pair):
            if pair[0].upload is None:
                copied.append(pair[0].key)
            return pair

        self.transfers.each(promote, (noted(pair) for pair in pairs))
        self.delete_many(copied)

    def delete_many(self, keys: Iterable[str], done=ignore_count) -> None:
        def delete(batch):
            self._delete_batch(batch)
            done(len(batch))

        self.transfers.each(delete, _batches(keys, DELETE_BATCH))

    def delete_prefix(self, prefix: str) -> None:
        """Delete everything under `prefix`, folder markers too: SeaweedFS keeps a folder
        entry for each folder a key named, listed as a key ending in "/", and deletes one
        only once nothing is under it: the objects go first, then the markers, deepest
        first."""
        listed = [obj["Key"][len(self.prefix):] for obj in self._listed(self.prefix + prefix)]
        self.delete_many(key for key in listed if not key.endswith("/"))
        self._delete_folder_markers(k for k in listed if k.endswith("/"))

    def _delete_folder_markers(self, markers: Iterable[str]) -> None:
        for marker in sorted(markers, key=lambda k: (-k.count("/"), k)):  # deepest first
            self.delete(marker)

    def sweep(self, prefix: str, seconds: float | None = None) -> str | None:
        """The prefix listed and deleted (SWEEP_BATCH keys a request, side by side); once
        `seconds` are over, no more requests: an object SWEPT + 12 hex digits naming the
        prefix says what is left."""
        if seconds is None:
            self.delete_prefix(prefix)
            return None
        deadline, markers, cut = time.monotonic() + seconds, [], []

        def in_time() -> Iterator[str]:
            for obj in self._listed(self.prefix + prefix):
                key = obj["Key"][len(self.prefix):]
                if key.endswith("/"):
                    markers.append(key)
                elif time.monotonic() > deadline:
                    cut.append(key)
                    return
                else:
                    yield key

        # Batches of SWEEP_BATCH: those under way when the time is over end soon after it.
        self.transfers.each(self._delete_batch, _batches(in_time(), SWEEP_BATCH))
        if cut:
            self.write(SWEPT + os.urandom(6).hex(), [prefix.encode()])  # as secrets.token_hex
            return prefix
        self._delete_folder_markers(markers)
        return None

    def sweep_leftovers(self) -> list[str]:
        """The prefixes the SWEPT objects name, deleted, then the objects (a name other than a
        hidden top-level .aviary- prefix is not ours: left alone)."""
        swept = []
        for info in list(self.list(SWEPT)):
            prefix = b"".join(self.read(info.key)).decode("utf-8", "replace")
            if re.fullmatch(r"\.aviary-[\w-]+/", prefix):
                self.delete_prefix(prefix)
                swept.append(prefix)
            self.delete(info.key)
        return swept

    def write_durably(self, key: str, chunks: Iterable[bytes]) -> None:
        """One PUT (a multipart upload past PART_SIZE): S3 stores an object whole and durably
        once it answers."""
        self.write(key, chunks)

    def command_options(self) -> list[str]:
        endpoint = self.client.meta.endpoint_url
        options = [] if endpoint.endswith(".amazonaws.com") else ["--s3-endpoint", endpoint]
        if self.client.meta.config.s3 and self.client.meta.config.s3.get("addressing_style") == "path":
            options.append("--s3-path-style")
        region = self.client.meta.region_name
        return options + (["--s3-region", region] if region and region != "us-east-1" else [])

    # -- requests ------------------------------------------------------------------------

    def _upload(self, key: str, chunks: Iterable[bytes], size: int | None, defer: bool = False):
        """Send the object: in one PUT, or in parts sent side by side.  The chunks are
        used up before this returns (a producer may reuse its buffer); the result comes
        from the future.  Each part is copied once, into a buffer of its own, whose bytes
        are taken from the transfers' budget until it has been sent.  `defer`: always a
        multipart upload, returned incomplete (its parts may still be going up)."""
        budget = self.transfers.budget
        parts = _exact_parts(chunks, size, budget, self, key) if size is not None else _cut(chunks, PART_SIZE, budget)
        first, more = next(parts)
        if not more and not defer:
            return self._send(first, self._put_object, key, first)
        upload = _MultipartUpload(self, key)
        if not more:  # one part, to complete later: begun in the worker that sends it
            self._deferred = True
            upload.sent.append(self._send(first, upload.begin_and_send, first))
            return upload
        upload.begin()
        try:
            for number, (part, more) in enumerate(_chained(first, more, parts), 1):
                if number > MAX_PARTS:
                    budget.give(len(part))
                    raise self.error(key, f"too large: more than {MAX_PARTS} parts")
                upload.sent.append(self._send(part, upload.send, number, part))
                del part  # hold one part at a time
            if defer:
                self._deferred = True
                return upload
            upload.complete()
        except BaseException:
            upload.abort()
            raise
        return _done(None)

    def _send(self, data: bytearray, fn, *args) -> Future:
        """fn(*args) in the background; `data`'s bytes go back to the budget once it has run."""
        budget, held = self.transfers.budget, len(data)
        try:
            future = self.transfers.submit(fn, *args)
        except BaseException:
            budget.give(held)
            raise
        future.add_done_callback(lambda _: budget.give(held))
        return future

    def _put_object(self, key: str, data: bytearray) -> None:
        with self._translated(key):
            self.client.put_object(Bucket=self.bucket, Key=self._full(key), Body=data)

    def _copy(self, pair: tuple[str, str]) -> None:
        # A server-side copy: the bytes never travel through us again.
        staged_key, key = pair
        source = {"Bucket": self.bucket, "Key": self._full(staged_key)}
        with self._translated(key):
            try:
                self.client.copy_object(CopySource=source, Bucket=self.bucket, Key=self._full(key))
            except ClientError as err:
                if err.response.get("Error", {}).get("Code") not in ("InvalidRequest", "EntityTooLarge"):
                    raise
                self._copy_in_parts(staged_key, key)  # over 5 GiB, S3's limit for one copy

    def _copy_in_parts(self, staged_key: str, key: str) -> None:
        """A server-side copy as a multipart upload of ranged part copies, one after another
        (it already runs in a worker of the transfers)."""
        info = self.stat(staged_key)
        if info is None:
            raise self.error(staged_key, "NoSuchKey", missing=True)
        size = info.size
        part_size = max(COPY_PART_SIZE, -(-size // MAX_PARTS))
        source = {"Bucket": self.bucket, "Key": self._full(staged_key)}
        upload = _MultipartUpload(self, key).begin()
        try:
            for number, start in enumerate(range(0, size, part_size), 1):
                end = min(size, start + part_size) - 1
                etag = self.client.upload_part_copy(
                    Bucket=self.bucket, Key=self._full(key), UploadId=upload.upload_id, PartNumber=number,
                    CopySource=source, CopySourceRange=f"bytes={start}-{end}")["CopyPartResult"]["ETag"]
                upload.sent.append(_done({"ETag": etag, "PartNumber": number}))
            upload.complete()
        except BaseException:
            upload.abort()
            raise

    def _delete_batch(self, keys: list[str]) -> None:
        with self._translated(keys[0]):
            answer = self.client.delete_objects(Bucket=self.bucket, Delete={
                "Objects": [{"Key": self._full(k)} for k in keys], "Quiet": True})
        failed = answer.get("Errors") or []
        if failed:
            first = failed[0]
            raise self.error(first.get("Key", "")[len(self.prefix):] or None,
                             f"{first.get('Code')}: {first.get('Message')} ({len(failed)} of {len(keys)} not deleted)")

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
            if code in CHANGED:
                return self.error(key, "changed while being read (its ETag is no longer the one listed)")
            message = error.get("Message")
            return self.error(key, f"{code}: {message}" if message and message != code else code,
                              code in NOT_FOUND)
        return self.error(key, str(err) or type(err).__name__)


class _MultipartUpload:
    """One multipart upload: begun (a request) when its first part is, parts side by side."""

    def __init__(self, storage: S3Storage, key: str):
        self.storage = storage
        self.key = key
        self.sent: list[Future] = []  # each part's request, whose result is its {ETag, PartNumber}
        self.upload_id: str | None = None

    def begin(self) -> "_MultipartUpload":
        with self.storage._translated(self.key):
            self.upload_id = self.storage.client.create_multipart_upload(
                Bucket=self.storage.bucket, Key=self.storage._full(self.key))["UploadId"]
        return self

    def begin_and_send(self, data: bytearray) -> dict:
        """An upload of one part, begun and sent in one go (in a worker: the caller moves on)."""
        self.begin()
        return self.send(1, data)

    def send(self, number: int, data: bytearray) -> dict:
        with self.storage._translated(self.key):
            etag = self.storage.client.upload_part(
                Bucket=self.storage.bucket, Key=self.storage._full(self.key),
                UploadId=self.upload_id, PartNumber=number, Body=data)["ETag"]
        return {"ETag": etag, "PartNumber": number}

    def complete_listed(self) -> None:
        """Complete the upload with the parts the server holds (ClientError as botocore raised it)."""
        parts = []
        pages = self.storage.client.get_paginator("list_parts").paginate(
            Bucket=self.storage.bucket, Key=self.storage._full(self.key), UploadId=self.upload_id)
        for page in pages:
            parts += [{"ETag": p["ETag"], "PartNumber": p["PartNumber"]} for p in page.get("Parts", [])]
        self.storage.client.complete_multipart_upload(
            Bucket=self.storage.bucket, Key=self.storage._full(self.key),
            UploadId=self.upload_id, MultipartUpload={"Parts": parts})

    def complete(self) -> None:
        parts = [future.result() for future in self.sent]
        with self.storage._translated(self.key):
            self.storage.client.complete_multipart_upload(
                Bucket=self.storage.bucket, Key=self.storage._full(self.key),
                UploadId=self.upload_id, MultipartUpload={"Parts": parts})

    def abort(self) -> None:
        """Give the upload up: its parts not sent are dropped, those under way end first."""
        for future in self.sent:
            future.cancel()
        for future in self.sent:
            try:
                future.exception()
            except CancelledError:
                pass
        if self.upload_id is None:
            return  # never begun
        try:
            self.storage.client.abort_multipart_upload(
                Bucket=self.storage.bucket, Key=self.storage._full(self.key), UploadId=self.upload_id)
        except Exception:
            pass  # the error that made us abort is the one to report


def _parts(objects: Iterable[ObjectInfo]) -> Iterator[tuple[ObjectInfo, int, int, bool]]:
    """(object, start, end, last) of each part to fetch: a small object whole, a large one
    in PART_SIZE ranges."""
    for info in objects:
        start = 0
        while True:
            end = min(info.size, start + PART_SIZE)
            yield info, start, end, end >= info.size
            if end >= info.size:
                break
            start = end


def _done(value) -> Future:
    future: Future = Future()
    future.set_result(value)
    return future


def _batches(keys: Iterable[str], size: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for key in keys:
        batch.append(key)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _chained(first, more, parts):
    yield first, more
    yield from parts


def _exact_parts(chunks: Iterable[bytes], size: int, budget, storage: S3Storage, key: str
                 ) -> Iterator[tuple[bytearray, bool]]:
    """The `size` bytes of `chunks` as parts of _part_size(size) bytes (one, for a small
    object), each with: do more follow?  A part's bytes are taken from `budget` before
    its buffer is made; a size that does not match is an error naming the key."""
    part_size = _part_size(size)
    chunks = iter(chunks)
    rest = memoryview(b"")
    offset = 0
    while True:
        length = min(part_size, size - offset)
        budget.take(length)
        part = bytearray(length)
        filled = 0
        try:
            while filled < length:
                if not rest:
                    chunk = next(chunks, None)
                    if chunk is None:
                        storage.check_size(key, size, offset + filled)
                    rest = memoryview(chunk).cast("B")
                n = min(len(rest), length - filled)
                part[filled:filled + n] = rest[:n]
                rest, filled = rest[n:], filled + n
            offset += length
            if offset == size:
                extra = len(rest) + sum(len(chunk) for chunk in chunks)
                storage.check_size(key, size, size + extra)
        except BaseException:
            budget.give(length)
            raise
        yield part, offset < size
        if offset == size:
            return


def _cut(chunks: Iterable[bytes], part_size: int, budget) -> Iterator[tuple[bytearray, bool]]:
    """Parts of `part_size` bytes of an object of unknown size (the last may be shorter, even
    empty), each with: do more follow?  Each part's bytes are taken from `budget`."""
    buffer = bytearray()
    for chunk in chunks:
        buffer += chunk
        while len(buffer) > part_size:
            part = buffer[:part_size]
            del buffer[:part_size]
            budget.take(len(part))
            yield part, True
            del part  # hold one part at a time
    budget.take(len(buffer))
    yield buffer, False


def _part_size(size: int | None) -> int:
    if size is None or size <= PART_SIZE * MAX_PARTS:
        return PART_SIZE
    return -(-size // MAX_PARTS)


def _etag(response: dict) -> str | None:
    return response.get("ETag", "").strip('"') or None
