"""HttpSender's one keep-alive connection against raw HTTP/1.1 servers on loopback that misbehave on
purpose: closing idle connections, dropping a request unanswered, never answering, TLS with a
certificate nobody trusts. `test_send.py` has the classification of every answer."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import shutil
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest

from tests.export.target_stub import KEY, TargetStub
from tests.fakes.otlp import OtlpHttpReceiver
from tests.samples import Request, trace_line
from tfgw.export.encode import EncodedBatch, batches, prepare
from tfgw.export.send import HttpSender, SendResult

#: answer (keep-alive), answer then close the connection (without saying so in the answer), read
#: the request then close the connection unanswered, read it and never answer, answer 413 after
#: the request's head and close the connection without reading its body
Action = Literal["answer", "answer+close", "drop", "hold", "413"]
#: what the server does with the request-th request (from 1) of the connection-th connection (from 1)
Script = Callable[[int, int], Action]


@dataclass(frozen=True)
class Seen:
    connection: int
    request: int
    action: Action


class RawHttpServer:
    """An HTTP/1.1 server on 127.0.0.1 that does with each POST what `script` says (an answer is
    an empty 200); TLS with `tls`. `.seen` records every request it read."""

    def __init__(self, script: Script, tls: ssl.SSLContext | None = None) -> None:
        self.script, self.tls = script, tls
        self._lock = threading.Lock()
        self._seen: list[Seen] = []
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self._listener.getsockname()[1]}/v1/traces"
        self.connections = 0

    @property
    def seen(self) -> list[Seen]:
        with self._lock:
            return list(self._seen)

    def __enter__(self) -> RawHttpServer:
        self._spawn(self._accept)
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            for sock in (self._listener, *self._sockets):
                with contextlib.suppress(OSError):  # shutdown, not only close: it wakes a blocked thread
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
        for thread in self._threads:
            thread.join(5)
            assert not thread.is_alive()

    def _spawn(self, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:  # closed by __exit__
                return
            with self._lock:
                self.connections += 1
                self._sockets.append(sock)
                number = self.connections
            self._spawn(self._serve, sock, number)

    def _serve(self, sock: socket.socket, connection: int) -> None:
        with sock:
            try:
                stream = self.tls.wrap_socket(sock, server_side=True) if self.tls else sock
                with self._lock:
                    self._sockets.append(stream)
                reader = stream.makefile("rb")
                for request in range(1, 1000):
                    length = _read_head(reader)
                    if length is None:
                        return
                    action = self.script(connection, request)
                    with self._lock:
                        self._seen.append(Seen(connection, request, action))
                    if action == "413":
                        stream.sendall(
                            b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 9\r\n\r\ntoo large"
                        )
                        return
                    if len(reader.read(length)) < length:
                        return
                    if action == "hold":  # until the client gives up or __exit__ closes it
                        reader.read()
                    if action in ("hold", "drop"):
                        return
                    stream.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\n")
                    stream.sendall(b"content-length: 0\r\n\r\n")
                    if action == "answer+close":
                        return
            except OSError:  # the client's TLS handshake failed, or __exit__ closed the socket
                return


def _read_head(reader: Any) -> int | None:
    """Read the head of a request: its Content-Length; None at the end of the connection."""
    length = 0
    line = reader.readline()
    if not line:
        return None
    while line not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
        line = reader.readline()
    return length


def batch_for(target: TargetStub) -> EncodedBatch:
    [batch] = batches([prepare(trace_line(Request(1)), target)], target.protocol)
    return batch


def outcome(result: SendResult) -> tuple[Any, ...]:
    assert result.latency_ms >= 0
    return (result.outcome, result.rejected_spans, result.message, result.retry_after, result.status)


ACCEPTED = ("accepted", 0, None, None, "200")


# -- keep-alive ----------------------------------------------------------------------------------------


def test_one_connection_for_many_sends() -> None:
    with RawHttpServer(lambda _c, _r: "answer") as server, HttpSender(TargetStub(server.url)) as sender:
        results = [outcome(sender.send(batch_for(sender.target))) for _ in range(3)]

    assert results == [ACCEPTED] * 3
    assert server.seen == [Seen(1, 1, "answer"), Seen(1, 2, "answer"), Seen(1, 3, "answer")]


def test_a_server_closing_each_connection_after_its_answer() -> None:
    """The sender sees the idle connection closed and opens a new one: one POST for each send."""
    with RawHttpServer(lambda _c, _r: "answer+close") as server, HttpSender(TargetStub(server.url)) as sender:
        results = [outcome(sender.send(batch_for(sender.target))) for _ in range(3)]

    assert results == [ACCEPTED] * 3
    assert server.seen == [Seen(1, 1, "answer+close"), Seen(2, 1, "answer+close"), Seen(3, 1, "answer+close")]


def test_a_reused_connection_closed_under_the_request_is_sent_again_once() -> None:
    """The server closes an idle connection as the next request arrives on it (its idle timeout
    racing the sender): the request goes again on a new connection, and the batch is accepted."""
    with (
        RawHttpServer(lambda c, r: "drop" if (c, r) == (1, 2) else "answer") as server,
        HttpSender(TargetStub(server.url)) as sender,
    ):
        results = [outcome(sender.send(batch_for(sender.target))) for _ in range(3)]

    assert results == [ACCEPTED] * 3
    assert server.seen == [
        Seen(1, 1, "answer"),
        Seen(1, 2, "drop"),
        Seen(2, 1, "answer"),
        Seen(2, 2, "answer"),
    ]


def test_a_fresh_connection_closed_unanswered_is_not_sent_again() -> None:
    with RawHttpServer(lambda _c, _r: "drop") as server, HttpSender(TargetStub(server.url)) as sender:
        results = [outcome(sender.send(batch_for(sender.target))) for _ in range(2)]

    dropped = ("retry", 0, "RemoteProtocolError: Remote end closed connection without response", None)
    assert results == [(*dropped, "transport error")] * 2
    assert server.seen == [Seen(1, 1, "drop"), Seen(2, 1, "drop")]


def test_a_server_that_never_answers_times_out_then_a_new_connection_is_used() -> None:
    target = TargetStub("", timeout=0.3)
    with (
        RawHttpServer(lambda c, _r: "hold" if c == 1 else "answer") as server,
        HttpSender(dataclasses.replace(target, endpoint=server.url)) as sender,
    ):
        timed_out = sender.send(batch_for(sender.target))
        again = sender.send(batch_for(sender.target))

    assert outcome(timed_out) == ("retry", 0, "ReadTimeout: timed out", None, "timeout")
    assert 300 <= timed_out.latency_ms < 1500
    assert outcome(again) == ACCEPTED
    assert server.seen == [Seen(1, 1, "hold"), Seen(2, 1, "answer")]


def test_an_answer_sent_before_the_body_was_read_is_the_answer() -> None:
    """A server that refuses a request too large from its head and closes the connection: the
    write fails, and the 413 it sent is what the sender reports (rejected, not retried)."""
    big = EncodedBatch(1, b"\x0a" * (8 << 20), "application/x-protobuf", 1)
    with RawHttpServer(lambda _c, _r: "413") as server, HttpSender(TargetStub(server.url)) as sender:
        result = sender.send(big)

    assert outcome(result) == ("rejected", 0, "too large", None, "413")
    assert server.seen == [Seen(1, 1, "413")]


# -- TLS -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ssl.SSLContext]:
    """A certificate for 127.0.0.1 that signs itself (its PEM file, made by `openssl`), and a
    server context using it."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not on PATH")
    directory = tmp_path_factory.mktemp("tls")
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            *(openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"),
            *("-nodes", "-keyout", str(key_file), "-out", str(cert_file), "-days", "1"),
            *("-subj", "/CN=tfgw test", "-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    return cert_file, context


def test_https_to_an_untrusted_certificate_is_refused(self_signed: tuple[Path, ssl.SSLContext]) -> None:
    _, context = self_signed
    with (
        RawHttpServer(lambda _c, _r: "answer", tls=context) as server,
        HttpSender(TargetStub(server.url, insecure=False)) as sender,
    ):
        result = sender.send(batch_for(sender.target))

    assert (result.outcome, result.rejected_spans, result.status) == ("retry", 0, "connect error")
    assert result.message is not None
    assert result.message.startswith(
        "ConnectError: [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed"
    )
    assert server.seen == []


def test_https_to_a_trusted_certificate_keeps_its_connection(
    self_signed: tuple[Path, ssl.SSLContext], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The system's CAs, which SSL_CERT_FILE stands for here, decide; the connection is kept."""
    cert_file, context = self_signed
    monkeypatch.setenv("SSL_CERT_FILE", str(cert_file))
    with (
        RawHttpServer(lambda _c, _r: "answer", tls=context) as server,
        HttpSender(TargetStub(server.url, insecure=False)) as sender,
    ):
        results = [outcome(sender.send(batch_for(sender.target))) for _ in range(2)]

    assert results == [ACCEPTED] * 2
    assert server.seen == [Seen(1, 1, "answer"), Seen(1, 2, "answer")]


# -- what the request carries ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def http_rx() -> Iterator[OtlpHttpReceiver]:
    with OtlpHttpReceiver() as rx:
        yield rx


@pytest.fixture(autouse=True)
def _reset(request: pytest.FixtureRequest) -> None:
    if "http_rx" in request.fixturenames:
        request.getfixturevalue("http_rx").reset()


def send(target: TargetStub) -> SendResult:
    with HttpSender(target) as sender:
        return sender.send(batch_for(target))


def test_the_target_headers_replace_the_senders_own_whatever_their_case(http_rx: OtlpHttpReceiver) -> None:
    target = TargetStub(http_rx.url, headers={"User-Agent": "mine/1", "Content-Type": "text/plain"})

    assert outcome(send(target)) == ACCEPTED
    [received] = http_rx.requests
    assert (received.headers["user-agent"], received.content_type) == ("mine/1", "application/x-protobuf")


def test_a_user_and_password_in_the_url_are_sent_as_basic_authorization(http_rx: OtlpHttpReceiver) -> None:
    url = http_rx.url.replace("http://", "http://tfgw:p%40ss@")
    target = TargetStub(url, headers={"authorization": "replaced"})

    assert outcome(send(target)) == ACCEPTED
    [received] = http_rx.requests
    assert received.headers["authorization"] == "Basic " + base64.b64encode(b"tfgw:p@ss").decode()


def test_no_proxy_from_the_environment(http_rx: OtlpHttpReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:1")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)

    assert outcome(send(TargetStub(http_rx.url))) == ACCEPTED
    assert len(http_rx.requests) == 1


def test_a_redirect_is_not_followed(http_rx: OtlpHttpReceiver) -> None:
    http_rx.fail_next(307, body=b"")

    assert outcome(send(TargetStub(http_rx.url))) == (
        "rejected",
        0,
        "HTTP 307 Temporary Redirect",
        None,
        "307",
    )
    assert [r.status for r in http_rx.requests] == ["307"]


@pytest.mark.parametrize(
    ("endpoint", "message"),
    [
        (
            "localhost:4318/v1/traces",
            "UnsupportedProtocol: Request URL has an unsupported protocol 'localhost://'.",
        ),
        (
            "//127.0.0.1:4318/v1/traces",
            "UnsupportedProtocol: Request URL is missing an 'http://' or 'https://' protocol.",
        ),
        ("http://127.0.0.1:99999/v1/traces", "InvalidURL: Port out of range 0-65535"),
        ("http:///v1/traces", "InvalidURL: the URL has no host"),
    ],
)
def test_urls_that_cannot_be_sent_to_are_rejected(endpoint: str, message: str) -> None:
    assert outcome(send(TargetStub(endpoint))) == ("rejected", 0, message, None, "client error")


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({"authorization": f"{KEY}\n"}, "the value of header 'authorization' has a line break or a NUL"),
        ({"x-key": f"{KEY}é€"}, "the value of header 'x-key' has characters outside Latin-1"),
        ({"bad name": "1"}, "'bad name' is not a valid header name"),
    ],
)
def test_a_header_that_cannot_be_sent_is_named_never_shown(headers: dict[str, str], message: str) -> None:
    result = send(TargetStub("http://127.0.0.1:1/v1/traces", headers=headers))

    assert outcome(result) == ("rejected", 0, f"LocalProtocolError: {message}", None, "client error")


def test_the_exporter_imports_no_httpx() -> None:
    """httpx's own command line brings click, rich and pygments: 11 MB in a process that lives as
    long as the gateway."""
    probe = (
        "import sys, tfgw.export.__main__, tfgw.export.worker, tfgw.export.send\n"
        "print(sorted(m for m in ('httpx', 'httpcore', 'click', 'rich', 'pygments') if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
    )
    assert (done.stdout, done.stderr) == ("[]\n", "")
