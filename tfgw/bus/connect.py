"""The one way every tfgw process connects to NATS (`[bus]`, tfgw.config_bus).

`connect(bus, role)` gives a connected nats-py client named `tfgw-<role>-<pid>` (what
`nats server report connections` shows), authenticated the one way the config gives (user and
password, a token, a creds file, an NKey seed file), over TLS when `[bus] tls` says so. The first
connection is tried for as long as `timeout` allows, every `RECONNECT_WAIT_S` on each server (None:
until it works; cancel the call to give up); after it, with `reconnect`, nats-py reconnects by
itself forever, every `RECONNECT_WAIT_S`. Without `reconnect` a lost connection closes the client
(`on_closed`): its caller decides what happens next (the publisher does: a new connection, so that
nothing the lost one still buffered is sent out of order).

Nothing here raises a nats-py exception: a failure is a `BusError` whose message, like every line
given to `on_error`, has the config's secrets masked (tfgw.secrets).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from tfgw.config_bus import BusSettings, TlsSettings
from tfgw.errors import TfgwError
from tfgw.secrets import mask

if TYPE_CHECKING:
    from nats.aio.client import Client

__all__ = ["RECONNECT_WAIT_S", "BusError", "check_subject", "connect", "describe", "masked"]

log = logging.getLogger("tfgw.bus")

#: seconds between two attempts on the same server, first connection and reconnections alike
RECONNECT_WAIT_S = 1.0
#: seconds one attempt (TCP, TLS, INFO/CONNECT) may take
CONNECT_TIMEOUT_S = 2.0
#: an `on_error` that logs says the same thing at most this often
LOG_EVERY_S = 60.0

_USERINFO = re.compile(r"(\w+://)[^/@\s]*@")

OnError = Callable[[str], None]
Callback = Callable[[], Awaitable[None]]


class BusError(TfgwError):
    """NATS cannot be used: unreachable, refused, or an answer tfgw cannot take (secrets masked)."""


def masked(text: str, bus: BusSettings) -> str:
    """`text` with the config's secrets, and any user:password@ in a URL, masked."""
    for secret in bus.secrets():
        text = text.replace(secret, mask(secret))
    return _USERINFO.sub(r"\1…@", text)


def describe(exc: BaseException, bus: BusSettings) -> str:
    """One line for a nats-py exception, secrets masked."""
    text = str(exc).strip() or type(exc).__name__
    if not text.startswith("nats:") and type(exc).__name__ not in text:
        text = f"{type(exc).__name__}: {text}"
    return masked(text, bus)


def check_subject(subject: str, where: str) -> None:
    """A subject one can publish on: not empty, no whitespace, no empty token; `BusError` otherwise."""
    if not subject or any(c.isspace() for c in subject) or "" in subject.split("."):
        raise BusError(f"{where}: {subject!r} is not a NATS subject one can publish on")


def tls_context(tls: TlsSettings | None) -> ssl.SSLContext | None:
    if tls is None:
        return None
    context = ssl.create_default_context(cafile=tls.ca)
    if tls.cert and tls.key:
        context.load_cert_chain(tls.cert, tls.key)
    return context


def options(bus: BusSettings, role: str, *, reconnect: bool = True) -> dict[str, Any]:
    """nats-py's `connect()` keywords for `bus` (the credentials among them)."""
    out: dict[str, Any] = {
        "servers": list(bus.urls),
        "name": f"tfgw-{role}-{os.getpid()}",
        "allow_reconnect": reconnect,
        "max_reconnect_attempts": -1,
        "reconnect_time_wait": RECONNECT_WAIT_S,
        "connect_timeout": CONNECT_TIMEOUT_S,
    }
    if bus.user is not None:
        out["user"], out["password"] = bus.user, bus.password
    if bus.token is not None:
        out["token"] = bus.token
    if bus.creds is not None:
        out["user_credentials"] = bus.creds
    if bus.nkey is not None:
        out["nkeys_seed"] = bus.nkey
    return out


def logged(bus: BusSettings, role: str) -> OnError:
    """An `on_error` that logs each distinct message at most once every `LOG_EVERY_S`."""
    said: dict[str, float] = {}

    def on_error(message: str) -> None:
        now = time.monotonic()
        if now - said.get(message, -LOG_EVERY_S) >= LOG_EVERY_S:
            said[message] = now
            log.warning("NATS (%s, %s): %s", role, ", ".join(masked(u, bus) for u in bus.urls), message)

    return on_error


async def connect(
    bus: BusSettings,
    role: str,
    *,
    reconnect: bool = True,
    timeout: float | None = None,
    on_error: OnError | None = None,
    on_closed: Callback | None = None,
    on_disconnected: Callback | None = None,
    on_reconnected: Callback | None = None,
    checked_subjects: bool = False,
) -> Client:
    """A client connected to `bus` (see the module's docstring); `BusError` if the first
    connection did not succeed within `timeout` seconds or was refused. `checked_subjects`: the
    caller has checked every subject it publishes on (`check_subject`), so nats-py does not check
    each message's again."""
    import nats.errors
    from nats.aio.client import Client

    report = on_error or logged(bus, role)
    last: list[str] = []

    async def error_cb(exc: Exception) -> None:
        last[:] = [describe(exc, bus)]
        report(last[0])

    try:
        context = tls_context(bus.tls)
    except (OSError, ssl.SSLError) as exc:
        raise BusError(f"bus.tls: cannot load the TLS files: {describe(exc, bus)}") from exc
    kwargs = options(bus, role, reconnect=reconnect)
    if context is not None:
        kwargs["tls"] = context
    kwargs["error_cb"] = error_cb
    kwargs["skip_subject_validation"] = checked_subjects
    callbacks = {"closed_cb": on_closed, "disconnected_cb": on_disconnected, "reconnected_cb": on_reconnected}
    kwargs.update((k, v) for k, v in callbacks.items() if v is not None)
    client = Client()
    try:
        await asyncio.wait_for(client.connect(**kwargs), timeout)
    except asyncio.CancelledError:
        await _abandon(client)
        raise
    except TimeoutError as exc:  # the first connection took longer than `timeout`
        await _abandon(client)
        within = "" if timeout is None else f" within {timeout:g} s"
        why = f": {last[0]}" if last else ""
        raise BusError(f"cannot reach NATS at {_urls(bus)}{within}{why}") from exc
    except (OSError, nats.errors.Error) as exc:
        await _abandon(client)
        raise BusError(f"NATS at {_urls(bus)}: {describe(exc, bus)}") from exc
    return client


def _urls(bus: BusSettings) -> str:
    return ", ".join(masked(u, bus) for u in bus.urls)


async def _abandon(client: Client) -> None:
    """Close a client whose first connection did not complete (its tasks, its socket)."""
    try:
        await client.close()
    except Exception as exc:  # nats-py may raise anything from a half-made client: it is gone either way
        log.debug("closing an unconnected NATS client: %s", exc)
