"""The JetStream stream trace records go to (`[bus] stream`): made when it is missing, used as it
is when it exists.

A stream tfgw makes: file storage, subjects `[bus.subject]`, `num_replicas` = `bus.replicas`,
`max_age` = `bus.max_age_hours` and `max_bytes` = `bus.max_mb` MiB (past either the oldest records
are discarded), and a duplicate window of `DUPLICATE_WINDOW_S`: a record published again within
two minutes of the first time (same `Nats-Msg-Id`) is acknowledged and not stored twice. A stream
that exists is never changed: its operator's settings win (`nats stream info` shows them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tfgw.bus.connect import BusError, describe
from tfgw.config_bus import BusSettings

if TYPE_CHECKING:
    from nats.js import JetStreamContext

__all__ = ["DUPLICATE_WINDOW_S", "ensure_stream", "stream_config"]

#: JetStream de-duplicates a record published again within this many seconds (by Nats-Msg-Id)
DUPLICATE_WINDOW_S = 120.0
#: JetStream's code for "stream name already in use" (made by another process with other settings)
STREAM_NAME_IN_USE = 10058


def stream_config(bus: BusSettings) -> Any:
    """The `StreamConfig` of a stream tfgw makes for `bus`."""
    from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig

    return StreamConfig(
        name=bus.stream,
        subjects=[bus.subject],
        retention=RetentionPolicy.LIMITS,
        discard=DiscardPolicy.OLD,
        storage=StorageType.FILE,
        num_replicas=bus.replicas,
        max_age=bus.max_age_hours * 3600.0,
        max_bytes=bus.max_mb * 1024 * 1024,
        duplicate_window=DUPLICATE_WINDOW_S,
    )


async def ensure_stream(js: JetStreamContext, bus: BusSettings) -> Any:
    """The stream's `StreamInfo`, the stream made first if it is missing; `BusError` otherwise."""
    import nats.errors
    from nats.js.errors import BadRequestError, NotFoundError

    try:
        try:
            return await js.stream_info(bus.stream)
        except NotFoundError:
            pass
        try:
            return await js.add_stream(stream_config(bus))
        except BadRequestError as exc:
            if exc.err_code != STREAM_NAME_IN_USE:
                raise
            return await js.stream_info(bus.stream)  # another gateway made it a moment ago
    except (OSError, nats.errors.Error) as exc:
        raise BusError(f"JetStream stream {bus.stream}: {describe(exc, bus)}") from exc
