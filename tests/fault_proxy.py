"""An HTTP/1.1 proxy in front of an S3 server that answers some requests itself, with an error.

It reads each request's head and asks `rule`, a callable given the Request (its number, method,
path and headers), what to do: None forwards the request, its body (Content-Length or chunked)
and the server's answer (interim 1xx heads, then the response and its body: by Content-Length,
chunked, or up to the end; none after HEAD, 204 or 304); a Reply is sent instead, as S3 sends
an error (an XML body), and the request's body is read and dropped.  A request that expects
`100 Continue` and is answered here gets its Reply with `Connection: close`: its body was
never sent.  The client's connection is kept alive as it asks; each forwarded request goes up
on a connection of its own, so a connection the server closed while idle is never reused.
`rule` may be replaced at any time (None lifts it); `requests` and `answered` say what came.

The loop, the listener and stop() are LatencyProxy's (a thread, 127.0.0.1, a free port).  No
pytest here: fault drills use it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Callable

from latency_proxy import CHUNK, LatencyProxy, _close

END = b"\r\n\r\n"


@dataclass(frozen=True)
class Request:
    number: int  # 1 for the first request the proxy read, on any connection
    nth: int  # 1 for the first request of this method
    method: str
    path: str  # the request target: path and query
    headers: dict[str, str]  # names in lower case


@dataclass(frozen=True)
class Reply:
    status: int
    reason: str
    code: str
    message: str

    def encode(self, request: Request, close: bool) -> bytes:
        body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{self.code}</Code><Message>{self.message}'
                f'</Message><Resource>{request.path.split("?")[0]}</Resource><RequestId>fault-proxy-'
                f'{request.number}</RequestId></Error>').encode()
        head = (f"HTTP/1.1 {self.status} {self.reason}\r\nContent-Type: application/xml\r\n"
                f"Content-Length: {len(body)}\r\nx-amz-request-id: fault-proxy-{request.number}\r\n"
                + ("Connection: close\r\n" if close else "") + "\r\n").encode()
        return head if request.method == "HEAD" else head + body


INTERNAL_ERROR = Reply(500, "Internal Server Error", "InternalError",
                       "We encountered an internal error. Please try again.")
INVALID_ACCESS_KEY = Reply(403, "Forbidden", "InvalidAccessKeyId",
                           "The AWS Access Key Id you provided does not exist in our records.")

Rule = Callable[[Request], "Reply | None"]


class FaultProxy(LatencyProxy):
    """Listens on 127.0.0.1, on a free port, and forwards HTTP requests to host:upstream_port
    unless `rule(request)` gives a Reply to send instead."""

    def __init__(self, upstream_port: int, rule: Rule | None = None, host: str = "127.0.0.1"):
        super().__init__(upstream_port, delay_ms=0, host=host)
        self.rule = rule
        self.requests: list[Request] = []
        self.answered: list[tuple[Request, Reply]] = []
        self._methods: dict[str, int] = {}

    async def _relay(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        clean = False
        try:
            while await self._exchange(client_reader, client_writer):
                pass
            clean = True
        except (OSError, EOFError, asyncio.LimitOverrunError, ValueError):
            pass  # refused, reset or cut on either side, or not HTTP: reset the client
        finally:
            _close(client_writer, reset=not clean)

    async def _exchange(self, client_reader, client_writer) -> bool:
        """One request and its answer; False once the client's connection is to end."""
        try:
            head = await client_reader.readuntil(END)
        except asyncio.IncompleteReadError as e:
            if e.partial:
                raise
            return False  # the client closed between requests
        request = self._request(head)
        keep = request.headers.get("connection", "").lower() != "close"
        expects = request.headers.get("expect", "").lower() == "100-continue"
        reply = self.rule(request) if self.rule else None
        if reply is not None:
            self.answered.append((request, reply))
            if not expects:
                await copy_body(client_reader, None, request.headers)
            client_writer.write(reply.encode(request, close=expects or not keep))
            await client_writer.drain()
            return keep and not expects
        upstream_reader, upstream_writer = await asyncio.open_connection(*self.upstream, limit=CHUNK)
        try:
            upstream_writer.write(head)
            sending = asyncio.create_task(copy_body(client_reader, upstream_writer, request.headers))
            sending.add_done_callback(lambda task: task.cancelled() or task.exception() is None
                                      or upstream_writer.transport.abort())  # the client left mid-body
            try:
                continued = False
                while True:  # interim heads (100 Continue), then the response's
                    response = await upstream_reader.readuntil(END)
                    status, headers = parse_head(response)
                    client_writer.write(response)
                    await client_writer.drain()
                    if not 100 <= status < 200:
                        break
                    continued = True
                bodiless = request.method == "HEAD" or status in (204, 304)
                to_end = not bodiless and "content-length" not in headers and not chunked(headers)
                if not bodiless:
                    await copy_body(upstream_reader, client_writer, headers, to_end=to_end)
                if expects and not continued and not sending.done():
                    return False  # answered before its body was sent: the body will not come
                await sending
            finally:
                sending.cancel()
        finally:
            upstream_writer.close()
        return keep and not to_end and headers.get("connection", "").lower() != "close"

    def _request(self, head: bytes) -> Request:
        method, path, _ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
        self._methods[method] = self._methods.get(method, 0) + 1
        request = Request(len(self.requests) + 1, self._methods[method], method, path, parse_head(head)[1])
        self.requests.append(request)
        return request


def parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    """A head's status (0 for a request's) and its headers, names in lower case."""
    first, *lines = head.decode("latin-1").rstrip("\r\n").split("\r\n")
    words = first.split(" ")
    status = int(words[1]) if first.startswith("HTTP/") else 0
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers


def chunked(headers: dict[str, str]) -> bool:
    return "chunked" in headers.get("transfer-encoding", "").lower()


async def copy_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter | None, headers: dict[str, str],
                    to_end: bool = False) -> None:
    """The body after a head, from `reader` to `writer` (None: read and dropped): chunked, of
    Content-Length bytes, or (`to_end`) up to the end of the stream."""
    async def carry(data: bytes) -> None:
        if writer is not None and data:
            writer.write(data)
            await writer.drain()

    async def exactly(n: int) -> None:
        while n:
            data = await reader.read(min(n, CHUNK))
            if not data:
                raise asyncio.IncompleteReadError(b"", n)
            n -= len(data)
            await carry(data)

    if chunked(headers):
        while True:
            line = await reader.readuntil(b"\r\n")
            await carry(line)
            size = int(line.split(b";")[0], 16)
            if size == 0:
                while line != b"\r\n":  # the trailers, up to an empty line
                    line = await reader.readuntil(b"\r\n")
                    await carry(line)
                return
            await exactly(size + 2)  # the chunk and its CRLF
    elif "content-length" in headers:
        await exactly(int(headers["content-length"]))
    elif to_end:
        while data := await reader.read(CHUNK):
            await carry(data)
