"""A loopback fault proxy: relays TCP to a real server, and can be switched to fail on demand.

It runs an asyncio server in a background thread. Modes:

- ``pass``: bytes are relayed both ways;
- ``reset``: every open connection is reset (RST) and every new one is reset as soon as it is accepted;
- ``refuse``: every open connection is reset and the port stops listening (connection refused);
- ``http503``: every HTTP request is answered ``503 Service Unavailable`` (``http=True`` only).

With ``http=True`` the client-to-server direction is read request by request (HTTP/1.1 framing by
``Content-Length``), so ``on_request(proxy, method, target)`` is called before each request is
relayed: a test uses it to strike at an exact moment (the second part of a multipart upload, the
PUT of a manifest). Responses are relayed as raw bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
import time

MODES = ("pass", "reset", "refuse", "http503")
SERVICE_UNAVAILABLE = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nRetry-After: 1\r\n"
    b"x-ms-error-code: ServerBusy\r\nConnection: close\r\n\r\n"
)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST rather than FIN, as a crashed peer or a middlebox does."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class FaultProxy:
    def __init__(self, listen_port: int, upstream_port: int, *, http: bool = False, on_request=None):
        self.listen_port, self.upstream_port, self.http = listen_port, upstream_port, http
        self.on_request = on_request
        self.mode = "pass"
        self.requests: list[tuple[str, str]] = []
        self.connections = 0
        self.faulted = 0
        self._open: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._server = None
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"fault-proxy-{listen_port}", daemon=True)

    def start(self) -> FaultProxy:
        self._thread.start()
        self._call(self._listen())
        return self

    def stop(self) -> None:
        self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    def set_mode(self, mode: str) -> None:
        """Switch the fault on or off; safe from any thread, including ``on_request`` itself."""
        if mode not in MODES:
            raise ValueError(f"unknown proxy mode {mode!r}; one of {MODES}")
        if threading.current_thread() is self._thread:
            self.mode = mode  # at once: the request being relayed already sees it
            self._loop.create_task(self._switch(mode))
        else:
            self._call(self._switch(mode))

    def fault_for(self, mode: str, seconds: float) -> None:
        """Fail in ``mode`` now, and pass again after ``seconds`` (from a timer thread)."""
        self.set_mode(mode)
        threading.Timer(seconds, self.set_mode, args=("pass",)).start()

    # -- inside the event loop ----------------------------------------------------------------

    def _call(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=10)

    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.listen_port, reuse_address=True)

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._open):
            _reset(writer)
        self._open.clear()

    async def _switch(self, mode: str) -> None:
        self.mode = mode
        if mode in ("reset", "refuse"):
            await self._shutdown()
        if mode != "refuse":
            await self._listen()

    async def _serve(self, client_reader, client_writer) -> None:
        self.connections += 1
        if self.mode in ("reset", "refuse"):
            self.faulted += 1
            _reset(client_writer)
            return
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            self.faulted += 1
            _reset(client_writer)
            return
        self._open.update((client_writer, upstream_writer))
        if self.http:
            forward = self._requests(client_reader, upstream_writer, client_writer)
        else:
            forward = self._pipe(client_reader, upstream_writer)
        try:
            await asyncio.gather(
                forward,
                self._pipe(upstream_reader, client_writer),
            )
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            for writer in (client_writer, upstream_writer):
                self._open.discard(writer)
                if self.mode == "pass":
                    writer.close()
                else:
                    _reset(writer)

    async def _pipe(self, reader, writer) -> None:
        while data := await reader.read(1 << 16):
            writer.write(data)
            await writer.drain()
        writer.close()

    async def _requests(self, reader, upstream_writer, client_writer) -> None:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                upstream_writer.close()
                return
            method, target = head.split(b" ", 2)[:2]
            self.requests.append((method.decode("latin-1"), target.decode("latin-1")))
            if self.on_request is not None:
                self.on_request(self, method.decode("latin-1"), target.decode("latin-1"))
            if self.mode == "http503":
                self.faulted += 1
                client_writer.write(SERVICE_UNAVAILABLE)
                await client_writer.drain()
                client_writer.close()
                upstream_writer.close()
                return
            if self.mode != "pass":
                self.faulted += 1
                raise ConnectionResetError("fault proxy: connection reset")
            headers = {
                name.strip().lower(): value.strip()
                for name, _, value in (line.partition(b":") for line in head.split(b"\r\n")[1:] if line)
            }
            upstream_writer.write(head)
            if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
                await self._pipe(reader, upstream_writer)  # opaque from here on: no more request boundaries
                return
            remaining = int(headers.get(b"content-length", b"0"))
            while remaining:
                chunk = await reader.read(min(remaining, 1 << 16))
                if not chunk:
                    raise asyncio.IncompleteReadError(b"", remaining)
                upstream_writer.write(chunk)
                remaining -= len(chunk)
            await upstream_writer.drain()


def wait_for_port(port: int, timeout: float = 10.0) -> bool:
    """Wait until something listens on the loopback port; returns whether it did."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.2)
    return False
