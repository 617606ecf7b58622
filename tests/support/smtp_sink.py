"""A controllable SMTP sink for tests (aiosmtpd on 127.0.0.1, in its own thread).

    async with SmtpSink() as sink:
        sink.fail_next(2)                      # next 2 DATA -> 451 4.3.0 try later
        ... point the code under test at 127.0.0.1:sink.port ...
        [msg] = await sink.wait_for(1, timeout=5)

The server runs in aiosmtpd's Controller thread, so it keeps answering even while the test's
event loop is busy; received messages are handed to the test loop thread-safely and
`wait_for` waits on an asyncio.Event (no sleeps).
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import errno
import socket
import threading
from dataclasses import dataclass
from email.message import EmailMessage
from types import TracebackType
from typing import Any, Literal, cast

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

__all__ = ["ReceivedMessage", "SmtpSink"]


@dataclass(frozen=True)
class ReceivedMessage:
    mail_from: str
    rcpt_tos: list[str]
    raw: bytes
    message: EmailMessage
    login: str | None  # AUTH login of the session, None when it did not authenticate


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class _CountingSMTP(SMTP):
    def __init__(self, handler: Any, *, sink: SmtpSink, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._sink = sink

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._sink._on_connection()
        super().connection_made(transport)


class _Controller(Controller):
    def __init__(self, sink: SmtpSink, **kwargs: Any) -> None:
        super().__init__(sink, **kwargs)
        self._sink = sink

    def factory(self) -> SMTP:
        return _CountingSMTP(self.handler, sink=self._sink, **self.SMTP_kwargs)


class SmtpSink:
    """SMTP server on 127.0.0.1:`port` that records messages and misbehaves on request.

    AUTH (PLAIN/LOGIN) is offered without TLS. With `username`/`password` set only those
    credentials succeed (535 otherwise); unset, any credentials are accepted. `require_auth`
    answers MAIL FROM with 530 until the session has authenticated.
    """

    def __init__(
        self,
        *,
        username: str | None = None,
        password: str | None = None,
        require_auth: bool = False,
        hostname: str = "127.0.0.1",
    ) -> None:
        self.hostname = hostname
        self.port = 0
        self.username = username
        self.password = password
        self.require_auth = require_auth
        self.messages: list[ReceivedMessage] = []
        self.connections = 0  # TCP connections accepted since start()
        self.data_attempts = 0  # DATA transactions received, whatever the answer
        self.logins: list[str] = []  # successful AUTH logins
        self._lock = threading.Lock()
        self._fail_next = 0
        self._fail_reply = "451 4.3.0 try later"
        self._drop_next = 0
        self._reject: str | None = None
        self._reject_at: Literal["rcpt", "data"] = "data"
        self._delay = 0.0
        self._controller: _Controller | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed: asyncio.Event | None = None

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        if self._controller is not None:
            raise RuntimeError("SmtpSink already started")
        self._loop = asyncio.get_running_loop()
        self._changed = asyncio.Event()
        for _ in range(5):  # the free port may be taken between probe and bind: retry
            port = _free_port(self.hostname)
            controller = _Controller(
                self,
                hostname=self.hostname,
                port=port,
                ready_timeout=10.0,
                server_hostname="sink.test",
                auth_require_tls=False,
                authenticator=self._authenticate,
            )
            try:
                await asyncio.to_thread(controller.start)
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise
                continue
            self._controller, self.port = controller, port
            break
        else:
            raise RuntimeError(f"SmtpSink: no free port on {self.hostname}")
        with self._lock:
            self.connections = 0  # Controller.start() opened one probe connection itself

    async def stop(self) -> None:
        controller, self._controller = self._controller, None
        if controller is not None:
            await asyncio.to_thread(controller.stop)

    async def __aenter__(self) -> SmtpSink:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- behaviour controls (callable at any time, from the test's thread) --------------
    def fail_next(self, n: int, code: int = 451, text: str = "4.3.0 try later") -> None:
        """Answer the next `n` DATA transactions with `code text` (after reading the data)."""
        with self._lock:
            self._fail_next, self._fail_reply = n, f"{code} {text}"

    def reject_always(
        self,
        code: int = 550,
        text: str = "5.1.1 no such user",
        *,
        at: Literal["rcpt", "data"] = "data",
    ) -> None:
        """Refuse every message from now on, at DATA (default) or at each RCPT TO."""
        with self._lock:
            self._reject, self._reject_at = f"{code} {text}", at

    def drop_after_data_next(self, n: int) -> None:
        """For the next `n` DATA transactions, read the data then close without replying."""
        with self._lock:
            self._drop_next = n

    def delay_data(self, seconds: float) -> None:
        """Wait `seconds` after receiving the data before answering (0 turns it off)."""
        with self._lock:
            self._delay = seconds

    def reset(self) -> None:
        """Back to plain accept-everything; recorded messages and counters are kept."""
        with self._lock:
            self._fail_next = self._drop_next = 0
            self._reject, self._delay = None, 0.0

    # -- waiting ---------------------------------------------------------------------------
    async def wait_for(
        self,
        count: int,
        timeout: float = 10.0,  # noqa: ASYNC109 -- the deadline is the point of this helper
    ) -> list[ReceivedMessage]:
        """Wait until at least `count` messages were accepted; return a snapshot of them."""
        if self._changed is None:
            raise RuntimeError("SmtpSink not started")
        try:
            async with asyncio.timeout(timeout):
                while True:
                    # clear before checking: a message landing after the check sets it again
                    self._changed.clear()
                    with self._lock:
                        if len(self.messages) >= count:
                            return list(self.messages)
                    await self._changed.wait()
        except TimeoutError:
            raise TimeoutError(
                f"SmtpSink: {len(self.messages)}/{count} messages after {timeout}s"
            ) from None

    # -- aiosmtpd hooks (run in the Controller thread) -------------------------------------
    def _on_connection(self) -> None:
        with self._lock:
            self.connections += 1

    def _notify(self) -> None:
        loop, changed = self._loop, self._changed
        if loop is not None and changed is not None:
            try:
                loop.call_soon_threadsafe(changed.set)
            except RuntimeError:  # test loop already closed
                pass

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login = auth_data.login.decode("utf-8", "replace")
        password = auth_data.password.decode("utf-8", "replace")
        ok = self.username is None or (login == self.username and password == self.password)
        if ok:
            with self._lock:
                self.logins.append(login)
        return AuthResult(success=ok, handled=False, auth_data=auth_data)

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        if self.require_auth and not session.authenticated:
            return "530 5.7.0 Authentication required"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        with self._lock:
            reject = self._reject if self._reject_at == "rcpt" else None
        if reject is not None:
            return reject
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        with self._lock:
            self.data_attempts += 1
            delay = self._delay
            drop = self._drop_next > 0
            if drop:
                self._drop_next -= 1
        if delay > 0:
            await asyncio.sleep(delay)
        if drop:
            self._notify()
            assert server.transport is not None
            server.transport.close()
            # connection_lost() cancels this handler: never reply
            await asyncio.get_running_loop().create_future()
        with self._lock:
            if self._fail_next > 0:
                self._fail_next -= 1
                reply: str | None = self._fail_reply
            else:
                reply = self._reject if self._reject_at == "data" else None
        if reply is not None:
            self._notify()
            return reply
        raw = cast(bytes, envelope.original_content or envelope.content or b"")
        message = email.message_from_bytes(raw, policy=email.policy.default)
        auth = session.auth_data
        received = ReceivedMessage(
            mail_from=str(envelope.mail_from or ""),
            rcpt_tos=list(envelope.rcpt_tos),
            raw=raw,
            message=message,
            login=auth.login.decode("utf-8", "replace") if isinstance(auth, LoginPassword) else None,
        )
        with self._lock:
            self.messages.append(received)
        self._notify()
        return "250 2.0.0 OK: queued"
