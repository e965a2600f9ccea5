"""The fault proxy that the fault drills put in front of SeaweedFS: it forwards HTTP/1.1 as it
comes (keep-alive, Content-Length and chunked bodies, HEAD, 100-continue) and answers what its
rule picks with an S3 error."""

import http.client
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from fault_proxy import INTERNAL_ERROR, INVALID_ACCESS_KEY, FaultProxy


class Echo(BaseHTTPRequestHandler):
    """Answers each PUT with its body reversed, in chunks; HEAD with a length and no body."""
    protocol_version = "HTTP/1.1"

    def do_PUT(self):
        if self.headers.get("Transfer-Encoding") == "chunked":
            body = b""
            while size := int(self.rfile.readline(), 16):
                body += self.rfile.read(size + 2)[:-2]
            self.rfile.readline()
        else:
            body = self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for start in range(0, len(body), 1000):
            piece = body[::-1][start:start + 1000]
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
        self.wfile.write(b"0\r\n\r\n")

    def do_HEAD(self):
        self.send_response(200)
        self.send_header("Content-Length", "12345")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def echo_port():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_bodies_both_ways_on_one_kept_alive_connection(echo_port):
    body = os.urandom(300_000)
    with FaultProxy(echo_port, rule=lambda r: INTERNAL_ERROR if r.path == "/fail" else None) as proxy:
        conn = http.client.HTTPConnection(proxy.host, proxy.port, timeout=30)
        conn.request("PUT", "/a", body=body)
        assert conn.getresponse().read() == body[::-1]
        first = conn.sock
        conn.request("PUT", "/b", body=iter([body[:1000], body[1000:]]), encode_chunked=True)
        assert conn.getresponse().read() == body[::-1]
        conn.request("HEAD", "/c")
        head = conn.getresponse()
        assert (head.status, head.read()) == (200, b"")
        conn.request("PUT", "/fail", body=iter([body]), encode_chunked=True)  # its body dropped
        failed = conn.getresponse()
        assert failed.status == 500 and b"<Code>InternalError</Code>" in failed.read()
        conn.request("PUT", "/d", body=b"xyz")
        assert conn.getresponse().read() == b"zyx"
        assert conn.sock is first  # one connection throughout: http.client reopens a closed one
        conn.close()
    assert [(r.number, r.nth, r.method, r.path) for r in proxy.requests][-2:] == [(4, 3, "PUT", "/fail"),
                                                                                 (5, 4, "PUT", "/d")]
    assert [r.path for r, _ in proxy.answered] == ["/fail"]


def s3_client(proxy):
    return boto3.client(
        "s3", endpoint_url=proxy.endpoint, region_name="us-east-1",
        aws_access_key_id="AKIAAVIARYTEST", aws_secret_access_key="s3-S3cret/Key+xyz",
        config=Config(s3={"addressing_style": "path"}, retries={"mode": "standard", "max_attempts": 3}))


def test_s3_retries_a_500_once_and_stops_at_a_403(s3_server, s3_bucket):
    failed = set()

    def every_other_put_once(request):
        if request.method == "PUT" and request.nth % 2 and request.path not in failed:
            failed.add(request.path)
            return INTERNAL_ERROR
        return None

    with FaultProxy(s3_server.ports["s3"], every_other_put_once) as proxy:
        client = s3_client(proxy)
        bodies = {f"doc-{n}": os.urandom(1000 * n) for n in range(1, 9)}
        for key, body in bodies.items():  # bytes (100-continue, answered early) and bytearrays
            client.put_object(Bucket=s3_bucket, Key=key, Body=body if len(body) % 2000 else bytearray(body))
        assert {k: client.get_object(Bucket=s3_bucket, Key=k)["Body"].read() for k in bodies} == bodies
        assert client.head_object(Bucket=s3_bucket, Key="doc-1")["ContentLength"] == 1000
        assert len(proxy.answered) >= 4
        assert {r.headers.get("expect") for r, _ in proxy.answered} == {"100-continue", None}

        proxy.rule = lambda request: INVALID_ACCESS_KEY
        with pytest.raises(ClientError, match="InvalidAccessKeyId"):
            client.put_object(Bucket=s3_bucket, Key="doc-9", Body=b"x")
        with pytest.raises(ClientError, match="403"):
            client.head_object(Bucket=s3_bucket, Key="doc-1")
        proxy.rule = None
        client.delete_object(Bucket=s3_bucket, Key="doc-1")  # 204: no body
        assert client.head_object(Bucket=s3_bucket, Key="doc-2")["ContentLength"] == 2000
