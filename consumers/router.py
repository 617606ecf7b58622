"""Router: consumes `mailgw.commands`, runs the command handler for its routing key, publishes
the staged deliver tasks, answers `reply_to`, and only then acks.

`COMMAND_HANDLERS` maps a routing key to `handler(ctx, message, body) -> Outcome`. A handler
raises a `GatewayError` with a 4xx status for a command that can never succeed: the error
shape goes to `reply_to` and the command is parked in `mailgw.dead` (commands the HTTP API
published were validated already, so their 4xx answers — e.g. an unknown `convId` — are
just answered). Anything else is transient: nacked and requeued (the quorum queue's
delivery limit parks what keeps failing).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any, cast

import asyncpg
import orjson
from aio_pika.abc import AbstractIncomingMessage
from pydantic import ValidationError

from consumers.runner import Context
from gateway import outbox
from gateway.bus import rpc
from gateway.bus.consumer import consume
from gateway.bus.topology import COMMANDS
from gateway.db import affinity
from gateway.db import idempotency as idemdb
from gateway.errors import BadRequest, GatewayError, PermanentError
from gateway.inbox.commands import forward_command, reply_command
from gateway.logging import get_logger
from gateway.send.handler import Outcome, Pending, handle_batch, handle_send, take_batch
from gateway.send.idempotency import check_key, request_hash
from gateway.send.models import SendCommand, prepare
from gateway.send.task_publisher import TaskPublisher
from gateway.validation import error_details

log = get_logger(__name__)

CommandHandler = Callable[[Context, AbstractIncomingMessage, dict[str, Any]], Awaitable[Outcome]]
PURGE_EVERY = 600.0


async def send_command(ctx: Context, message: AbstractIncomingMessage, body: dict[str, Any]) -> Outcome:
    """`send`: the body is the HTTP body plus `workspaceId` and `identity`; key = `message_id`.

    A command from the HTTP API may carry the caller's API key to check (`rpc.KEY_HEADER`,
    see `gateway.api.auth.deferred_workspace`); it is checked before anything is answered.
    """
    key_check = rpc.key_check(message)
    try:
        try:
            cmd = SendCommand.model_validate_json(message.body)
        except ValidationError as exc:
            raise BadRequest(details=error_details(exc.errors())) from None
        key = check_key(message.message_id, "message_id") if message.message_id else None
        item = Pending(cmd, prepare(cmd, cmd.workspaceId), key, request_hash(body), key_check)
    except GatewayError:
        if key_check is not None:  # 401 / 404 come first, as when the API checks the key
            async with ctx.pool.acquire() as conn:
                await affinity.check_key(conn, str(body.get("workspaceId", "")), key_check)
        raise
    batcher = ctx.extras.get("send_batcher")
    if isinstance(batcher, SendBatcher) and item.batchable:
        return await batcher.submit(item)
    return await _send_alone(ctx, item)


async def _send_alone(ctx: Context, item: Pending) -> Outcome:
    async with ctx.pool.acquire() as conn:
        return await handle_send(cast(asyncpg.Connection, conn), item.cmd, key=item.key,
                                 digest=item.digest, prepared=item.prepared,
                                 key_check=item.key_check)


class SendBatcher:
    """Sends that arrive together share a transaction (`gateway.send.handler.handle_batch`).

    A send alone goes straight through (`handle_send`: a read and one autocommitted statement); while
    `workers` batches are being written, new sends queue up and form the next batches (one
    identity per batch, see `take_batch`). Two batches of one identity are never written at
    once: the second would only wait on the first's cap-row lock, and waiting in the queue
    instead lets it grow. When a batch fails, each of its sends runs alone, so every caller
    gets exactly the answer or error a lone send would have given.
    """

    def __init__(self, ctx: Context, workers: int = 2) -> None:
        self.ctx = ctx
        self.workers = workers
        self.queue: list[tuple[Pending, asyncio.Future[Outcome]]] = []
        self.running: set[asyncio.Task[None]] = set()
        self.writing: set[object] = set()  # groups of the batches being written

    async def submit(self, item: Pending) -> Outcome:
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self.queue.append((item, future))
        if len(self.running) < self.workers:
            task = asyncio.create_task(self._drain())
            self.running.add(task)
            task.add_done_callback(self.running.discard)
        return await future

    async def _drain(self) -> None:
        """Write batches until none is left that another worker is not already writing (that
        worker takes the rest of its group when it is done)."""
        while self.queue:
            futures = dict((id(it), f) for it, f in self.queue)
            batch, rest = take_batch([it for it, _ in self.queue], busy=self.writing)
            if not batch:
                return
            self.queue = [(it, futures[id(it)]) for it in rest]
            pairs = [(it, futures[id(it)]) for it in batch]
            group = batch[0].group
            self.writing.add(group)
            try:
                await asyncio.shield(self._write(pairs))
            finally:
                self.writing.discard(group)

    async def _write(self, pairs: list[tuple[Pending, asyncio.Future[Outcome]]]) -> None:
        results: list[Outcome | BaseException] = []
        if len(pairs) > 1:
            try:
                async with self.ctx.pool.acquire() as conn:
                    results = list(await handle_batch(cast(asyncpg.Connection, conn),
                                                      [it for it, _ in pairs]))
            except Exception as exc:  # rolled back: each send runs alone below
                log.info("send_batch_split", size=len(pairs), error=repr(exc))
                results = []
        if not results:
            for item, _ in pairs:
                try:
                    results.append(await _send_alone(self.ctx, item))
                except Exception as exc:
                    results.append(exc)
        for (_, future), result in zip(pairs, results, strict=True):
            if future.done():
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)


COMMAND_HANDLERS: dict[str, CommandHandler] = {
    "send": send_command, "reply": reply_command, "forward": forward_command,
}


def _decode(message: AbstractIncomingMessage) -> dict[str, Any]:
    try:
        body = orjson.loads(message.body)
    except orjson.JSONDecodeError:
        raise BadRequest("Malformed JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("The JSON body must be an object")
    return body


async def run(ctx: Context, stop: asyncio.Event) -> None:
    responder = await rpc.Responder.open(ctx.amqp)
    ctx.extras["send_batcher"] = SendBatcher(ctx)

    async def on_command(message: AbstractIncomingMessage) -> None:
        if rpc.expired(message):
            log.warning("command_expired", routing_key=message.routing_key,
                        message_id=message.message_id, correlation_id=message.correlation_id)
            return
        from_api = (message.headers or {}).get(rpc.ORIGIN_HEADER) == "api"
        try:
            handler = COMMAND_HANDLERS.get(message.routing_key or "")
            if handler is None:
                raise BadRequest(f"Unknown command {message.routing_key!r}")
            outcome = await handler(ctx, message, _decode(message))
        except GatewayError as exc:
            if exc.transient or exc.status >= 500:
                raise
            await responder.answer(message, exc.status, exc.body())
            if from_api:
                return
            raise PermanentError(f"{exc.status} {exc.message}: {orjson.dumps(exc.details).decode()}"
                                 if exc.details else f"{exc.status} {exc.message}") from exc
        # The write is committed: the answer and the deliver tasks go out together (the answer
        # is not confirmed, so it does not wait; a task whose publish fails stays unstamped and
        # the scheduler relays it); ack after both. In sequence, not gather: no task per send.
        try:
            await responder.answer(message, outcome.status, outcome.body, replayed=outcome.replayed)
        finally:
            await _publish(ctx, stamper, tasks, outcome)

    stamper = outbox.Stamper(ctx.pool)
    tasks = TaskPublisher(ctx.publisher)
    done = asyncio.Event()  # the consumer has finished: helpers flush and end
    helpers = [asyncio.create_task(_purge(ctx, done))]
    try:
        await consume(ctx.amqp, ctx.publisher, COMMANDS, on_command, role="router",
                      prefetch=ctx.settings.router_prefetch, stop=stop)
    finally:
        done.set()
        await asyncio.gather(*helpers, return_exceptions=True)
        await stamper.close()
        await responder.close()


async def _publish(ctx: Context, stamper: outbox.Stamper, tasks: TaskPublisher, outcome: Outcome) -> None:
    try:
        if outcome.tasks:
            # The tasks of every send answered in this loop turn go out in one write.
            errors = await tasks.publish(outcome.tasks)
            stamper.add([t.outbox_id for t, error in zip(outcome.tasks, errors, strict=True)
                         if error is None])
            failed = next((error for error in errors if error is not None), None)
            if failed is not None:
                raise failed
        await outbox.publish_rows(ctx.pool, ctx.publisher, outcome.outbox_ids)
    except Exception as exc:  # committed: the scheduler relays rows never stamped
        log.warning("outbox_publish_deferred", error=repr(exc))


async def _purge(ctx: Context, stop: asyncio.Event) -> None:
    """Drop expired idempotency keys now and then (any router may; the statement is bounded)."""
    while not stop.is_set():
        try:
            await idemdb.purge_expired(ctx.pool)
        except Exception as exc:
            log.warning("idempotency_purge_failed", error=repr(exc))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), PURGE_EVERY)
