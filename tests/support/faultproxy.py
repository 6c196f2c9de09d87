"""A fault-injecting TCP proxy on 127.0.0.1, for the rude failures of a database link.

The proxy forwards every connection to a target (a real PostgreSQL server)
on its own thread and event loop, so it keeps working whatever the test's
loop does. A test arms one fault at a time; it fires on the first
connection whose client bytes contain a pattern (a value the statement
carries, say an aggregate id) and says when it fired (:attr:`Fault.fired`):

* ``drop_before``: the bytes never reach the server; the connection is cut.
* ``drop_after``: the bytes reach the server, the proxy waits until the
  server has answered (its ``ReadyForQuery``: the statement ran and, run
  outside a transaction, committed) and cuts the connection without passing
  the answer on.
* ``drop_sent``: the bytes reach the server and the connection is cut at
  once (the server may or may not run them).
* ``freeze_before`` / ``freeze_after``: the connection stops moving in both
  directions, before or after the bytes reach the server, until
  :meth:`FaultProxy.thaw` (or the end).

Link-wide faults: :meth:`FaultProxy.refuse` (new connections are refused),
:meth:`FaultProxy.hang_new` (new connections are accepted and never
answered), :meth:`FaultProxy.freeze_all` (every connection stops moving).
``then_hang_new=True`` on a fault makes new connections hang from the moment
it fires (the server looks gone right after the cut).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["Action", "Fault", "FaultProxy", "free_port", "running_proxy"]

Action = Literal["drop_before", "drop_after", "drop_sent", "freeze_before", "freeze_after"]


@dataclass
class Fault:
    """One armed fault; :attr:`fired` is set when it happened."""

    pattern: bytes
    action: Action
    then_hang_new: bool = False
    fired: threading.Event = field(default_factory=threading.Event)


class _Link:
    """One proxied connection: client <-> proxy <-> server."""

    def __init__(self, proxy: FaultProxy, client: asyncio.StreamWriter) -> None:
        self.proxy = proxy
        self.client = client
        self.server: asyncio.StreamWriter | None = None
        self.frozen = asyncio.Event()  # set: moving; clear: frozen
        self.frozen.set()
        self.await_answer = False  # drop_after: cut at the server's next ReadyForQuery
        self.pending: Fault | None = None  # the drop_after fault waiting for the answer
        self.answer = bytearray()
        self.closed = False
        self.tail = b""

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for writer in (self.client, self.server):
            if writer is not None:
                with contextlib.suppress(Exception):
                    writer.transport.abort()


class FaultProxy:
    """Forwards 127.0.0.1:``port`` to ``target_host``:``target_port`` (see the module)."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.base_events.Server | None = None
        self._links: set[_Link] = set()
        self._fault: Fault | None = None
        self._hang_new = False
        self._moving = True  # freeze_all clears it

    # -- life ----------------------------------------------------------------

    def start(self) -> int:
        self._thread.start()
        self._call(self._listen())
        return self.port

    def stop(self) -> None:
        self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    def _call(self, coro: Coroutine[Any, Any, None]) -> None:
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        future.result(timeout=10)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(
            self._accept, "127.0.0.1", self.port or 0, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for link in list(self._links):
            link.close()

    # -- controls (thread-safe) ---------------------------------------------

    def arm(self, pattern: bytes, action: Action, *, then_hang_new: bool = False) -> Fault:
        """Fire ``action`` on the first client bytes containing ``pattern``."""
        fault = Fault(pattern, action, then_hang_new)
        self._loop.call_soon_threadsafe(setattr, self, "_fault", fault)
        self._call(asyncio.sleep(0))  # applied before this returns
        return fault

    def refuse(self, refusing: bool = True) -> None:
        """Refuse new connections (nothing listens), or listen again."""
        self._call(self._close_listener() if refusing else self._listen())

    async def _close_listener(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    def hang_new(self, hanging: bool = True) -> None:
        """Accept new connections and never answer them (or stop doing so)."""
        self._call(self._set("_hang_new", hanging))

    def freeze_all(self) -> None:
        """Every connection, open or new, stops moving (until :meth:`thaw`)."""
        self._call(self._freeze_all())

    def thaw(self) -> None:
        """Everything frozen moves again."""
        self._call(self._thaw())

    def cut_all(self) -> None:
        """Cut every open connection now."""
        self._call(self._cut_all())

    async def _set(self, name: str, value: bool) -> None:
        setattr(self, name, value)

    async def _freeze_all(self) -> None:
        self._moving = False
        for link in self._links:
            link.frozen.clear()

    async def _thaw(self) -> None:
        self._moving = True
        for link in self._links:
            link.frozen.set()

    async def _cut_all(self) -> None:
        for link in list(self._links):
            link.close()

    # -- forwarding ----------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        link = _Link(self, writer)
        self._links.add(link)
        try:
            if self._hang_new:
                await reader.read()  # never answer; wait until the client leaves
                return
            try:
                server_reader, link.server = await asyncio.open_connection(*self.target)
            except OSError:
                return
            if not self._moving:
                link.frozen.clear()
            await asyncio.gather(
                self._pump(link, reader, link.server, upstream=True),
                self._pump(link, server_reader, writer, upstream=False),
                return_exceptions=True,
            )
        finally:
            link.close()
            self._links.discard(link)

    async def _pump(
        self,
        link: _Link,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        upstream: bool,
    ) -> None:
        while not link.closed:
            data = await reader.read(65536)
            if not data:
                link.close()
                return
            await link.frozen.wait()
            if link.closed:
                return
            if upstream:
                if not await self._upstream(link, data):
                    return
                continue
            if link.await_answer:
                if self._answered(link, data):
                    self._fire_cut(link)
                    return
                continue  # held back: the client never sees it
            writer.write(data)

    async def _upstream(self, link: _Link, data: bytes) -> bool:
        """Forward ``data`` to the server unless the armed fault says otherwise."""
        fault = self._fault
        seen = link.tail + data
        link.tail = data[-256:]
        server = link.server
        assert server is not None
        if fault is None or fault.fired.is_set() or fault.pattern not in seen:
            server.write(data)
            return True
        self._fault = None
        action = fault.action
        if action == "drop_before":
            self._fired(fault)
            link.close()
            return False
        if action == "freeze_before":
            link.frozen.clear()
            self._fired(fault)
            await link.frozen.wait()
            server.write(data)
            return True
        server.write(data)
        with contextlib.suppress(Exception):
            await server.drain()
        if action == "drop_sent":
            self._fired(fault)
            link.close()
            return False
        if action == "drop_after":
            link.answer.clear()
            link.await_answer = True
            link.pending = fault
            return True
        link.frozen.clear()  # freeze_after
        self._fired(fault)
        return True

    def _answered(self, link: _Link, data: bytes) -> bool:
        """True once the server's bytes since the statement hold a ReadyForQuery."""
        buffer = link.answer
        buffer.extend(data)
        offset = 0
        while len(buffer) - offset >= 5:
            kind = buffer[offset]
            length = int.from_bytes(buffer[offset + 1 : offset + 5], "big")
            if len(buffer) - offset < 1 + length:
                break
            if kind == ord("Z"):
                return True
            offset += 1 + length
        del buffer[:offset]
        return False

    def _fire_cut(self, link: _Link) -> None:
        if link.pending is not None:
            self._fired(link.pending)
        link.close()

    def _fired(self, fault: Fault) -> None:
        if fault.then_hang_new:
            self._hang_new = True
        fault.fired.set()

    def url(self, database_url: str) -> str:
        """``database_url`` with its host and port replaced by the proxy's."""
        from sqlalchemy.engine import make_url

        return (
            make_url(database_url)
            .set(host="127.0.0.1", port=self.port)
            .render_as_string(hide_password=False)
        )


@contextlib.contextmanager
def running_proxy(database_url: str) -> Iterator[FaultProxy]:
    """A started proxy in front of ``database_url``'s server, stopped afterwards."""
    from sqlalchemy.engine import make_url

    parsed = make_url(database_url)
    proxy = FaultProxy(parsed.host or "127.0.0.1", parsed.port or 5432)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with contextlib.closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
