"""A Redis client for what the stores send on every request: script calls to one server,
pipelined over a single connection, replies parsed by hiredis in C.

Why not redis-py's asyncio client here (the cluster store still uses it): its per-command
layers (pool checkout, retry wrapper, response callbacks) cost more than the rest of a
batch, and its timeout is a plain timer that blames the store for time the event loop spent
elsewhere. Under uvloop, due timers even run before the I/O poll, so after any stall longer
than the timeout a reply already waiting in the socket was declared late, and the rules'
failure modes answered while Redis was healthy (bench/RESULTS.md, the soak of 2026-12-01).

Here a command's deadline measures the store:

- the deadline timer notes how late the loop ran it; time the loop was stalled beyond
  LOOP_STALL_S is granted back to every pending command (at most MAX_GRACE_S in all, so a
  hung Redis on a constantly stalled loop still fails);
- a timer that finds the reply already readable gives the loop one more turn to read it;
- only then does the command time out, and the connection is closed (its later replies
  would be for nobody) and opened again by the next call.
"""

from __future__ import annotations

import asyncio
import collections
import select
import ssl
from collections.abc import Awaitable, Callable
from typing import Any, cast

import hiredis

# A timer this late means the loop itself was stalled (GC, a config reload, no CPU).
LOOP_STALL_S = 0.005
# The most time granted back to one command for stalls of the loop.
MAX_GRACE_S = 1.0
# How long the loop gets to read a reply the deadline found waiting in the socket.
READ_GRACE_S = 0.001

Address = Callable[[], Awaitable[tuple[str, int]]]


class RespError(Exception):
    """The server answered a command with an error (the message is the server's)."""


class RespTimeoutError(TimeoutError):
    """The server did not answer within the timeout."""


class RespConnectionError(ConnectionError):
    """No connection to the server, or it broke."""


class _Pending:
    """A command sent and not yet answered."""

    __slots__ = ("deadline", "future", "grace", "read_grace")

    def __init__(self, future: asyncio.Future[Any], deadline: float) -> None:
        self.future = future
        self.deadline = deadline
        self.grace = 0.0  # loop stalls granted back so far
        self.read_grace = False  # already given a turn to read a waiting reply


class _Connection(asyncio.Protocol):
    """One connection: commands written in order, replies matched to them in order."""

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        self._loop = loop
        self._timeout = timeout
        self._reader = hiredis.Reader()
        self._pending: collections.deque[_Pending] = collections.deque()
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_due = 0.0
        self.closed = False

    # -- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's are not asyncio.Transport subclasses).
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        reader.feed(data)
        pending = self._pending
        reply = reader.gets()
        while reply is not False:
            if not pending:  # a reply nobody asked for: the stream cannot be trusted
                self.close(RespConnectionError("unexpected reply from redis"))
                return
            future = pending.popleft().future
            if not future.done():
                if isinstance(reply, hiredis.ReplyError):
                    future.set_exception(RespError(str(reply)))
                else:
                    future.set_result(reply)
            reply = reader.gets()

    def connection_lost(self, exc: Exception | None) -> None:
        self.close(RespConnectionError(f"connection lost: {exc}" if exc else "connection lost"))

    # -- commands ---------------------------------------------------------------------------

    def send(self, command: tuple[Any, ...]) -> asyncio.Future[Any]:
        """Write one command; its future resolves with the reply."""
        future = self._loop.create_future()
        if self.closed or self._transport is None:
            future.set_exception(RespConnectionError("not connected"))
            return future
        self._transport.write(hiredis.pack_command(command))
        now = self._loop.time()
        self._pending.append(_Pending(future, now + self._timeout))
        if self._timer is None:
            self._arm(now + self._timeout)
        return future

    def close(self, error: Exception) -> None:
        """Close the connection, failing every command still waiting with `error`."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.closed = True
        while self._pending:
            future = self._pending.popleft().future
            if not future.done():
                future.set_exception(error)
        if self._transport is not None:
            self._transport.close()

    # -- deadlines --------------------------------------------------------------------------

    def _arm(self, when: float) -> None:
        self._timer_due = when
        self._timer = self._loop.call_at(when, self._check_deadline)

    def _check_deadline(self) -> None:
        self._timer = None
        pending = self._pending  # replies not yet read (their waiters may have given up)
        if not pending:
            return
        now = self._loop.time()
        stalled = now - self._timer_due
        if stalled > LOOP_STALL_S:
            # The loop ran this timer late: that time was the loop's, not the store's.
            for command in pending:
                granted = min(stalled, MAX_GRACE_S - command.grace)
                if granted > 0:
                    command.grace += granted
                    command.deadline += granted
        head = pending[0]
        if head.deadline > now:
            self._arm(head.deadline)
            return
        if not head.read_grace and self._readable():
            head.read_grace = True
            self._arm(now + READ_GRACE_S)
            return
        self.close(RespTimeoutError(f"no reply within {self._timeout:g}s"))

    def _readable(self) -> bool:
        """Whether a reply is waiting in the socket, unread."""
        assert self._transport is not None
        sock = self._transport.get_extra_info("socket")
        if sock is None:
            return False
        try:
            return bool(select.select([sock.fileno()], [], [], 0)[0])
        except (OSError, ValueError):
            return False


class RespClient:
    """Commands to one Redis server (`address()` names it, asked again for every new
    connection, so a Sentinel-resolved master is followed), each bounded by `timeout`
    seconds of the store's own time (see the module docstring). Connects on first use and
    again after the connection broke; raises RespError, RespTimeoutError or
    RespConnectionError."""

    def __init__(
        self,
        address: Address,
        *,
        timeout: float,
        username: str | None = None,
        password: str | None = None,
        db: int = 0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._address = address
        self._timeout = timeout
        self._username = username
        self._password = password
        self._db = db
        self._ssl = ssl_context
        self._connection: _Connection | None = None
        self._connecting: asyncio.Future[_Connection] | None = None

    async def execute(self, *command: Any) -> Any:
        """Send one command and wait for its reply."""
        connection = self._connection
        if connection is None or connection.closed:
            connection = await self._connect()
        return await connection.send(command)

    async def ping(self) -> bool:
        """True when the server answers PING."""
        try:
            return bool(await self.execute("PING"))
        except (RespError, TimeoutError, ConnectionError, OSError):
            return False

    async def aclose(self) -> None:
        """Close the connection (commands still waiting fail)."""
        if self._connection is not None:
            self._connection.close(RespConnectionError("client closed"))
            self._connection = None

    async def _connect(self) -> _Connection:
        # Every caller that finds no connection waits for the same attempt.
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._open())
        connecting = self._connecting
        try:
            return await asyncio.shield(connecting)
        finally:
            if connecting.done():
                self._connecting = None

    async def _open(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            host, port = await asyncio.wait_for(self._address(), self._timeout)
            _, connection = await asyncio.wait_for(
                loop.create_connection(
                    lambda: _Connection(loop, self._timeout),
                    host,
                    port,
                    ssl=self._ssl,
                    server_hostname=host if self._ssl is not None else None,
                ),
                self._timeout,
            )
        except TimeoutError as exc:
            raise RespTimeoutError(f"no connection within {self._timeout:g}s") from exc
        except OSError as exc:
            raise RespConnectionError(str(exc)) from exc
        handshake = []
        if self._password is not None:
            user = (self._username,) if self._username else ()
            handshake.append(connection.send(("AUTH", *user, self._password)))
        if self._db:
            handshake.append(connection.send(("SELECT", self._db)))
        try:
            for reply in handshake:
                await reply
        except BaseException:
            connection.close(RespConnectionError("handshake failed"))
            for reply in handshake:  # the error raised is the first; the rest are read
                if reply.done() and not reply.cancelled():
                    reply.exception()
            raise
        self._connection = connection
        return connection
