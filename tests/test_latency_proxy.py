"""The latency proxy that the S3 benchmarks put in front of SeaweedFS.

Speed is measured in benchmarks, never asserted here; the one timing below is a
lower bound (a round trip through a 50 ms proxy takes at least 100 ms), which
cannot flake.
"""

import hashlib
import os
import queue
import random
import socket
import socketserver
import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import boto3
import pytest
from botocore.config import Config

from latency_proxy import LatencyProxy
from servers import free_ports


@contextmanager
def upstream(handle):
    """A TCP server on 127.0.0.1 calling handle(sock) in a thread per connection; yields its port."""
    class Handler(socketserver.BaseRequestHandler):
        def handle(self):
            self.request.settimeout(30)
            handle(self.request)

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def connect(proxy: LatencyProxy) -> socket.socket:
    sock = socket.create_connection((proxy.host, proxy.port))
    sock.settimeout(30)
    return sock


def read_to_end(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


def send_in_background(sock: socket.socket, data: bytes, then_shutdown: bool) -> threading.Thread:
    def send():
        sock.sendall(data)
        if then_shutdown:
            sock.shutdown(socket.SHUT_WR)
    thread = threading.Thread(target=send)
    thread.start()
    return thread


def echo(sock: socket.socket) -> None:
    while data := sock.recv(1 << 16):
        sock.sendall(data)


@pytest.mark.parametrize("delay_ms", [0, 5])
def test_20_mb_each_way_arrive_unchanged_and_the_ends_pass_through(delay_ms):
    to_upstream, to_client = os.urandom(20 << 20), os.urandom(20 << 20)

    def upstream_side(sock):
        # Sends its 20 MB while reading the client's up to its half-close, then
        # answers with the hash of what it read and closes.
        sending = send_in_background(sock, to_client, then_shutdown=False)
        received = hashlib.sha256(read_to_end(sock)).digest()
        sending.join()
        sock.sendall(received)

    with upstream(upstream_side) as port, LatencyProxy(port, delay_ms) as proxy:
        with connect(proxy) as sock:
            sending = send_in_background(sock, to_upstream, then_shutdown=True)
            got = read_to_end(sock)
            sending.join()
    assert hashlib.sha256(got[:-32]).digest() == hashlib.sha256(to_client).digest()
    assert got[-32:] == hashlib.sha256(to_upstream).digest()


def test_32_connections_at_once_each_keep_their_own_bytes():
    def client(n):
        rng = random.Random(n)
        with connect(proxy) as sock:
            for _ in range(10):  # request, response, request, ... as HTTP keep-alive does
                message = rng.randbytes(rng.randint(1, 50_000))
                sock.sendall(message)
                got = b""
                while len(got) < len(message):
                    got += sock.recv(len(message) - len(got))
                assert got == message
        return n

    with upstream(echo) as port, LatencyProxy(port, delay_ms=2) as proxy:
        with ThreadPoolExecutor(32) as pool:
            assert sorted(pool.map(client, range(32))) == list(range(32))


def test_a_close_upstream_ends_the_clients_stream():
    def say_bye(sock):
        sock.sendall(b"bye")

    with upstream(say_bye) as port, LatencyProxy(port, delay_ms=5) as proxy, connect(proxy) as sock:
        assert read_to_end(sock) == b"bye"


def test_a_reset_by_the_client_resets_the_upstream():
    outcome = queue.Queue()

    def echo_then_tell(sock):
        try:
            echo(sock)
            outcome.put("end of stream")
        except ConnectionResetError:
            outcome.put("reset")

    with upstream(echo_then_tell) as port, LatencyProxy(port, delay_ms=5) as proxy:
        sock = connect(proxy)
        sock.sendall(b"hello")
        assert sock.recv(5) == b"hello"
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
        assert outcome.get(timeout=30) == "reset"


def test_an_upstream_that_refuses_resets_the_client():
    with LatencyProxy(free_ports(1)[0], delay_ms=0) as proxy, connect(proxy) as sock:
        with pytest.raises(ConnectionResetError):
            sock.recv(1)


def test_an_s3_client_puts_lists_and_gets_through_it(s3_server, s3_bucket):
    with LatencyProxy(s3_server.ports["s3"], delay_ms=50) as proxy:
        client = boto3.client(
            "s3", endpoint_url=proxy.endpoint, region_name=s3_server.region,
            aws_access_key_id=s3_server.access_key, aws_secret_access_key=s3_server.secret_key,
            config=Config(s3={"addressing_style": "path"}, max_pool_connections=16))
        bodies = {f"users/u{i % 3}/pdfs/doc-{i}.pdf": os.urandom(1000 * i) for i in range(48)}
        bodies["users/u0/pdfs/large.pdf"] = os.urandom(6 << 20)
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda key: client.put_object(Bucket=s3_bucket, Key=key, Body=bodies[key]), bodies))
            listed = [obj["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=s3_bucket)
                      for obj in page.get("Contents", [])]
            assert sorted(listed) == sorted(bodies)
            got = dict(pool.map(
                lambda key: (key, client.get_object(Bucket=s3_bucket, Key=key)["Body"].read()), bodies))
        assert got == bodies

        start = time.monotonic()
        client.head_object(Bucket=s3_bucket, Key="users/u0/pdfs/large.pdf")
        assert time.monotonic() - start >= 0.100  # one round trip, 50 ms each way
