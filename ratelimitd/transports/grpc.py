"""gRPC transport (grpc.aio): RateLimitService, Authorization (ext_authz),
RateLimitQuotaService (the rate_limit_quota filter's stream, when given), grpc.health.v1
(Check and Watch) and server reflection."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from ratelimitd.observe.tracing import Metadata
from ratelimitd.transports.grpc_status import MAX_MESSAGE_BYTES, GrpcError
from ratelimitd.transports.rlqs_rpc import RLQS_METHOD_NAME, RLQS_SERVICE, QuotaRpc
from ratelimitd.transports.rpc import AUTHZ_SERVICE, HEALTH_SERVICES, RLS_SERVICE, Rpc
from ratelimitd.transports.tls import Tls

_STATUS_CODES = {code.value[0]: code for code in grpc.StatusCode}

Method = Callable[[bytes, Metadata], Awaitable[bytes]]


def _unary(method: Method) -> grpc.RpcMethodHandler[bytes, bytes]:
    """A handler taking the raw request bytes, so a malformed message is INVALID_ARGUMENT,
    and the call's metadata (its request id and trace context)."""

    async def handle(data: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        try:
            return await method(data, tuple(context.invocation_metadata() or ()))
        except GrpcError as exc:
            await context.abort(_STATUS_CODES[exc.status], str(exc))
            raise  # abort() raises; this keeps type checkers content

    return grpc.unary_unary_rpc_method_handler(handle)


Outbox = asyncio.Queue[bytes | None]


def _quota_stream(
    quota: QuotaRpc, open_streams: set[Outbox]
) -> grpc.RpcMethodHandler[bytes, bytes]:
    """StreamRateLimitQuotas: each usage report answered as it arrives, and assignments
    pushed unasked, through one outbox (in `open_streams` while the stream lasts: None put
    there ends it)."""

    async def handle(
        reports: AsyncIterator[bytes], context: grpc.aio.ServicerContext[bytes, bytes]
    ) -> AsyncIterator[bytes]:
        outbox: Outbox = asyncio.Queue()
        metadata = tuple(context.invocation_metadata() or ())
        call = quota.open_stream(metadata, context.peer(), outbox.put_nowait)

        async def read() -> None:
            try:
                async for data in reports:
                    response = await call.report(data)
                    if response is not None:
                        outbox.put_nowait(response)
            finally:
                outbox.put_nowait(None)  # the end of the stream, or of its reading

        reader = asyncio.ensure_future(read())
        recheck = asyncio.ensure_future(call.recheck_periodically())
        open_streams.add(outbox)
        try:
            while (response := await outbox.get()) is not None:
                yield response
            if reader.done():
                await reader  # raises what ended the reading
        except GrpcError as exc:
            await context.abort(_STATUS_CODES[exc.status], str(exc))
        finally:
            open_streams.discard(outbox)
            recheck.cancel()
            reader.cancel()
            call.close()

    return grpc.stream_stream_rpc_method_handler(handle)


class GrpcTransport:
    """The grpc.aio server with its health service, started and stopped with the process."""

    def __init__(
        self,
        rpc: Rpc,
        address: str,
        tls: Tls | None = None,
        max_request_bytes: int = MAX_MESSAGE_BYTES,
        max_streams_per_connection: int | None = None,
        quota: QuotaRpc | None = None,
    ) -> None:
        self.address = address
        options: list[tuple[str, int]] = [
            ("grpc.max_receive_message_length", max_request_bytes),
            # Every worker process binds the same address.
            ("grpc.so_reuseport", 1),
        ]
        if max_streams_per_connection is not None:
            # Announced in SETTINGS_MAX_CONCURRENT_STREAMS: a busy Envoy opens more
            # connections, which SO_REUSEPORT spreads over the workers.
            options.append(("grpc.max_concurrent_streams", max_streams_per_connection))
            # grpc's overload protection (on by default) counts a call against the limit
            # until the server has freed it, after the client saw it end: it would refuse
            # calls the client was allowed to send (UNAVAILABLE to a gRPC client).
            options.append(("grpc.http.overload_protection", 0))
        self.server = grpc.aio.server(options=options)
        self._quota_streams: set[Outbox] = set()
        handlers = [
            grpc.method_handlers_generic_handler(
                RLS_SERVICE, {"ShouldRateLimit": _unary(rpc.should_rate_limit)}
            ),
            grpc.method_handlers_generic_handler(AUTHZ_SERVICE, {"Check": _unary(rpc.check)}),
        ]
        if quota is not None:
            handlers.append(
                grpc.method_handlers_generic_handler(
                    RLQS_SERVICE, {RLQS_METHOD_NAME: _quota_stream(quota, self._quota_streams)}
                )
            )
        self.server.add_generic_rpc_handlers(handlers)
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            [RLS_SERVICE, AUTHZ_SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME],
            self.server,
        )
        if tls is None:
            self.port = self.server.add_insecure_port(address)
        else:
            client_ca = tls.client_ca.read_bytes() if tls.client_ca else None
            credentials = grpc.ssl_server_credentials(
                [(tls.key.read_bytes(), tls.cert.read_bytes())],
                root_certificates=client_ca,
                require_client_auth=client_ca is not None,
            )
            self.port = self.server.add_secure_port(address, credentials)

    async def start(self) -> None:
        """Start serving and report SERVING for the overall server and its services."""
        await self.server.start()
        await self.set_serving(True)

    async def set_serving(self, serving: bool) -> None:
        """Flip the gRPC health status of "" and the RLS and Authorization services."""
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for service in HEALTH_SERVICES:
            await self.health.set(service, status)

    async def stop(self, grace: float) -> None:
        """Stop accepting calls and give in-flight ones `grace` seconds to finish."""
        await self.set_serving(False)
        # RLQS streams never end on their own: end them now (OK), rather than cancel them
        # after `grace`. Envoy keeps its assignments for their TTL and reopens the stream
        # at its next report, to another replica.
        for outbox in self._quota_streams:
            outbox.put_nowait(None)
        await self.server.stop(grace)
