"""RateLimitQuotaService/StreamRateLimitQuotas as bytes, whichever transport carries the
stream: one QuotaCall per stream, each usage report in, a response (or nothing) out, and
responses pushed unasked (a share another Envoy gave up) through the `push` it is opened
with."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

from google.protobuf.message import DecodeError

from ratelimitd.core.quota_service import Neighbours, QuotaStream
from ratelimitd.model.messages import InvalidRequestError
from ratelimitd.model.observer import NO_OBSERVER, Observer
from ratelimitd.model.quota import BucketAction
from ratelimitd.model.rules import Config
from ratelimitd.observe.tracing import Metadata
from ratelimitd.protos.envoy.service.rate_limit_quota.v3 import rlqs_pb2
from ratelimitd.storage.base import StoreError
from ratelimitd.storage.demand import DemandStore
from ratelimitd.transports import rlqs_codec
from ratelimitd.transports.grpc_status import INVALID_ARGUMENT, GrpcError

RLQS_SERVICE = rlqs_pb2.DESCRIPTOR.services_by_name["RateLimitQuotaService"].full_name
RLQS_METHOD_NAME = "StreamRateLimitQuotas"
RLQS_METHOD = f"/{RLQS_SERVICE}/{RLQS_METHOD_NAME}"
# Metadata naming the Envoy (set it in the filter's grpc_service.initial_metadata, e.g. the
# pod's name): the same name on a new stream finds the demand the last one left.
CLIENT_HEADER = "x-rlqs-client"
# How often a stream looks for a share to grow into (a demand store read per bucket held
# below its target, none otherwise).
RECHECK_S = 1.0


def client_name(metadata: Metadata, peer: str) -> str:
    """The Envoy's name: its x-rlqs-client metadata, else the peer address."""
    for key, value in metadata:
        name = key if isinstance(key, str) else key.decode("latin-1")
        if name == CLIENT_HEADER and value:
            return value if isinstance(value, str) else value.decode("utf-8", "replace")
    return peer


@dataclass(slots=True)
class QuotaCall:
    """One stream's reports, answered."""

    stream: QuotaStream

    async def report(self, data: bytes) -> bytes | None:
        """The serialized response to one serialized usage report, None when it needs none;
        GrpcError(INVALID_ARGUMENT) for a malformed one."""
        try:
            domain, usages = rlqs_codec.decode_reports(data)
            actions = await self.stream.report(domain, usages)
        except DecodeError as exc:
            raise GrpcError(
                INVALID_ARGUMENT, f"malformed RateLimitQuotaUsageReports: {exc}"
            ) from exc
        except InvalidRequestError as exc:
            raise GrpcError(INVALID_ARGUMENT, str(exc)) from exc
        return rlqs_codec.encode_actions(actions) if actions else None

    async def recheck_periodically(self) -> None:
        """Until cancelled, every RECHECK_S: push the shares that could grow (see
        QuotaStream.recheck); a store error waits for the next round."""
        while True:
            await asyncio.sleep(RECHECK_S)
            with contextlib.suppress(StoreError):
                await self.stream.recheck()

    def close(self) -> None:
        """The stream ended."""
        self.stream.close()


@dataclass(slots=True)
class QuotaRpc:
    """Opens a QuotaCall per stream, on the running config and the shared demand."""

    config: Callable[[], Config]
    demand: DemandStore
    clock_us: Callable[[], int]
    observer: Observer = NO_OBSERVER
    neighbours: Neighbours = field(default_factory=Neighbours)

    def open_stream(
        self, metadata: Metadata, peer: str, push: Callable[[bytes], None]
    ) -> QuotaCall:
        """The call of a new stream, its Envoy named by its metadata, else by `peer`."""
        return self.open(client_name(metadata, peer), push)

    def open(self, client: str, push: Callable[[bytes], None]) -> QuotaCall:
        """The call of a new stream from the Envoy named `client`; `push` sends a response
        on it unasked."""

        def push_actions(actions: list[BucketAction]) -> None:
            push(rlqs_codec.encode_actions(actions))

        stream = QuotaStream(
            client,
            self.config,
            self.demand,
            self.clock_us,
            self.neighbours,
            push_actions,
            self.observer,
        )
        return QuotaCall(stream)
