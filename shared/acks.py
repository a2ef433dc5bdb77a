"""Acknowledge handled deliveries together: one ``basic.ack`` with ``multiple`` per channel
for a run of handled messages, instead of one ack frame each (and, on a quorum queue, one
Raft command each).

RabbitMQ numbers the deliveries on a channel 1, 2, 3, ... An ack with ``multiple`` settles
every outstanding delivery up to its tag, so it is sent only for a run that is wholly
settled: each of its deliveries handled (waiting here for the ack) or already nacked or
rejected on its own. A handled delivery behind one still in progress (a slow retry, say) is
acked on its own once it has waited ``max_wait``, so one stuck message never holds back
the prefetch window.

A handler calls ``ack`` when its work is committed and waits until the ack frame is on its
way, so a service that stops after its handlers return has sent every ack first. Failures
go through ``nack`` and ``reject``, which settle the delivery at once: the frame is queued
before any later ``multiple`` ack could cover the delivery. The aio-pika message is locked,
so FastStream's own acknowledgement after the handler does nothing more.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aio_pika
import aiormq

log = logging.getLogger(__name__)


class _ChannelAcks:
    """The deliveries of one AMQP channel not yet covered by an ack."""

    __slots__ = ("channel", "handled", "next_tag", "settled")

    def __init__(self, channel: Any) -> None:
        self.channel = channel
        self.next_tag = 1  # the lowest delivery tag not known to be settled
        # handled, ack not yet sent: tag -> (when handled, the handler waiting for its ack)
        self.handled: dict[int, tuple[float, asyncio.Future[None]]] = {}
        self.settled: set[int] = set()  # above next_tag, settled on their own


class AckBatcher:
    """Batches the acks of the deliveries a process handles, channel by channel."""

    def __init__(self, max_wait: float = 0.1) -> None:
        self.max_wait = max_wait
        self._channels: dict[int, _ChannelAcks] = {}
        self._flush_scheduled = False
        self._timer: asyncio.TimerHandle | None = None
        self.frames = 0  # ack frames sent
        self.acked = 0  # deliveries they covered

    async def ack(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        """The delivery is handled: acknowledge it with the channel's other handled ones.
        Returns once the ack is queued for the socket."""
        tag = message.delivery_tag
        if tag is None:  # consumed without acks
            return
        message.lock()
        try:
            channel = message.channel
        except aiormq.exceptions.ChannelInvalidStateError:
            return  # closed: the delivery is back in its queue, for the inbox to skip
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._state(channel).handled[tag] = (loop.time(), done)
        self._schedule_flush()
        await done

    async def nack(self, message: aio_pika.abc.AbstractIncomingMessage, requeue: bool = True
                   ) -> None:
        """Return the delivery to its queue now, on its own."""
        await message.nack(requeue=requeue)
        self._settled(message)

    async def reject(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        """Refuse the delivery now, on its own (the queue dead-letters it)."""
        await message.reject(requeue=False)
        self._settled(message)

    def _settled(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        if message.delivery_tag is None:
            return
        try:
            channel = message.channel
        except aiormq.exceptions.ChannelInvalidStateError:
            return
        self._state(channel).settled.add(message.delivery_tag)
        self._schedule_flush()

    def _state(self, channel: Any) -> _ChannelAcks:
        state = self._channels.get(id(channel))
        if state is None or state.channel is not channel:
            state = self._channels[id(channel)] = _ChannelAcks(channel)
        return state

    def _schedule_flush(self) -> None:
        # After the handlers a group commit released in this turn of the loop have all
        # reported: one ack covers them.
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        now = asyncio.get_running_loop().time()
        waiting = False
        for key, state in list(self._channels.items()):
            if state.channel.is_closed:
                # Its unacknowledged deliveries go back to their queues with the channel.
                del self._channels[key]
                for _, done in state.handled.values():
                    if not done.done():
                        done.set_result(None)
                continue
            covered: list[asyncio.Future[None]] = []
            top = 0
            while True:
                tag = state.next_tag
                if tag in state.handled:
                    covered.append(state.handled.pop(tag)[1])
                    top = tag
                elif tag in state.settled:
                    state.settled.discard(tag)
                else:
                    break
                state.next_tag += 1
            if covered:
                self._send(state.channel, top, True, covered)
            late = [tag for tag, (since, _) in state.handled.items()
                    if now - since >= self.max_wait]
            for tag in late:
                self._send(state.channel, tag, False, [state.handled.pop(tag)[1]])
                state.settled.add(tag)
            waiting = waiting or bool(state.handled)
        if waiting and self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.max_wait, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._flush()

    def _send(self, channel: Any, tag: int, multiple: bool,
              waiters: list[asyncio.Future[None]]) -> None:
        self.frames += 1
        self.acked += len(waiters)
        task = asyncio.ensure_future(channel.basic_ack(delivery_tag=tag, multiple=multiple,
                                                       wait=False))

        def sent(task: asyncio.Future[None]) -> None:
            error = None if task.cancelled() else task.exception()
            if error is not None:
                log.warning("ack of delivery %d%s failed (redelivered later): %r", tag,
                            " and before" if multiple else "", error)
            # The work is committed either way: a delivery whose ack was lost comes back,
            # and the inbox makes the second handling a no-op.
            for done in waiters:
                if not done.done():
                    done.set_result(None)

        task.add_done_callback(sent)
