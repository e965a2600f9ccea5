"""A TCP proxy that adds latency, as a long link does, without limiting bandwidth.

Each chunk read from one side is written to the other `delay_ms` after it
arrived, in order; chunks behind it are not held up any further (a pipeline,
not a stop-and-wait), so a round trip through the proxy costs 2 x delay_ms
more and a fast stream keeps its speed.  A new connection also waits one round
trip before its first byte goes through, as TCP's handshake does on a real
link.  An end of stream (half-close) and a reset reach the other side after
the bytes sent before them; a reset resets both sides.  Each direction of a
connection holds at most `buffer_bytes` and stops reading until some are
delivered, like a TCP window: 4 MiB / 10 ms caps one connection at 400 MB/s.

The proxy runs an asyncio loop in a background thread.  No pytest here:
benchmarks and fault drills use it too.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading

from servers import free_ports

CHUNK = 256 << 10  # the most one read takes


class LatencyProxy:
    """Listens on 127.0.0.1, on a free port, and forwards each connection to
    host:upstream_port, `delay_ms` later each way, holding at most `buffer_bytes`
    in each direction of a connection."""

    def __init__(self, upstream_port: int, delay_ms: float, host: str = "127.0.0.1",
                 buffer_bytes: int = 4 << 20):
        self.upstream = (host, upstream_port)
        self.delay = delay_ms / 1000
        self.buffer_bytes = buffer_bytes
        self.host = "127.0.0.1"
        self.port = free_ports(1)[0]
        self.endpoint = f"http://{self.host}:{self.port}"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task] = set()

    def start(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"latency-proxy-{self.port}",
                                        daemon=True)
        self._thread.start()
        listen = asyncio.start_server(self._serve, self.host, self.port, limit=CHUNK)
        try:
            self._server = asyncio.run_coroutine_threadsafe(listen, self._loop).result()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop listening and reset the connections still open."""
        if self._loop is None:
            return
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()
        self._loop = self._server = None

    def __enter__(self) -> LatencyProxy:
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in self._connections:
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._connections.add(task)
        try:
            await self._relay(client_reader, client_writer)
        except asyncio.CancelledError:
            pass  # stop(): end quietly, Python 3.11's start_server would log a cancelled handler
        finally:
            self._connections.discard(task)

    async def _relay(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        upstream_writer = None
        clean = False
        try:
            opened = loop.time()
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.upstream, limit=CHUNK)
            await asyncio.sleep(opened + 2 * self.delay - loop.time())
            async with asyncio.TaskGroup() as group:
                group.create_task(self._carry(client_reader, upstream_writer))
                group.create_task(self._carry(upstream_reader, client_writer))
            clean = True
        except* OSError:  # refused, reset or broken on either side: reset both
            pass
        finally:
            for writer in (client_writer, upstream_writer):
                if writer is not None:
                    _close(writer, reset=not clean)

    async def _carry(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One direction: every chunk (then the end or the reset) written `delay` after it was read."""
        loop = asyncio.get_running_loop()
        chunks: asyncio.Queue[tuple[float, bytes | OSError]] = asyncio.Queue()
        room = asyncio.Event()
        held = 0

        async def receive():
            nonlocal held
            while True:
                try:
                    data = await reader.read(CHUNK)
                except OSError as err:
                    data = err
                chunks.put_nowait((loop.time() + self.delay, data))
                if not isinstance(data, bytes) or not data:
                    return
                held += len(data)
                while held >= self.buffer_bytes:
                    room.clear()
                    await room.wait()

        async def deliver():
            nonlocal held
            while True:
                due, data = await chunks.get()
                if (wait := due - loop.time()) > 0:
                    await asyncio.sleep(wait)
                if isinstance(data, OSError):
                    raise data
                if not data:
                    writer.write_eof()
                    await writer.drain()
                    return
                writer.write(data)
                await writer.drain()
                held -= len(data)
                room.set()

        async with asyncio.TaskGroup() as group:
            group.create_task(receive())
            group.create_task(deliver())


def _close(writer: asyncio.StreamWriter, reset: bool) -> None:
    if not reset:
        writer.close()
        return
    try:  # linger 0: closing sends a RST, not a FIN
        writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    writer.transport.abort()
