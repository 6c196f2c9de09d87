"""Settling one channel's deliveries: what committed is acknowledged several at a time.

RabbitMQ numbers the deliveries of a channel 1, 2, 3, ... (the delivery tag),
and ``basic.ack`` with ``multiple=True`` acknowledges every unacknowledged
delivery of the channel up to a tag. The subscriber's partition queues share
one channel, and their deliveries commit out of tag order (another queue's
batch, a delivery being retried), so a multiple ack is sent only up to the
**floor**: the highest tag such that every tag up to it is settled, i.e.
committed (and so to be acknowledged) or already acknowledged, rejected or
given back one by one. A delivery that committed above the floor waits for
the deliveries before it; after ``hold`` seconds (at most twice that) it is
acknowledged alone, so a delivery being retried never holds back the
acknowledgements (and the prefetch window) of the others for longer.

A tag is counted as settled only once its own frame (ack, reject, nack) has
been handed to the connection, so a multiple ack never overtakes a reject.
A tag never seen (a numbering with gaps, which RabbitMQ does not make) keeps
the floor where it is: the deliveries above it are then acknowledged alone
after ``hold``, never acknowledged unseen. A new channel starts a new count
(one :class:`ChannelAcks` per channel).

A batch's queues acknowledge their deliveries one after another in one turn
of the event loop; the first waits for the end of that turn, so that one
multiple ack covers the whole batch instead of one frame per queue (each
frame is a write on the socket and work for the broker).

The frames go out on the channel's aiormq channel (aio-pika's
``get_underlay_channel()``), by delivery tag: the subscriber consumes there,
without aio-pika's per-delivery message objects.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aiormq.abc import AbstractChannel

__all__ = ["ChannelAcks"]


class ChannelAcks:
    """Acknowledges, rejects and gives back one channel's deliveries (see the module).

    Args:
        channel: The aiormq channel the deliveries came on.
        hold: Seconds a committed delivery may wait for the ones before it to be
            settled before it is acknowledged alone (0: each delivery is
            acknowledged alone at once, one frame each).
    """

    def __init__(self, channel: AbstractChannel, *, hold: float) -> None:
        if hold < 0:
            raise ValueError(f"hold must not be negative, got {hold}")
        self._channel = channel
        self._hold = hold
        self._floor = 0  # every tag up to it is settled
        self._committed: set[int] = set()  # above the floor, to ack
        self._settled: set[int] = set()  # above the floor, settled one by one
        self._held = asyncio.Event()  # set while something waits in _committed
        self._alone_acks = asyncio.Lock()  # flush waits for those run() is sending
        self._turn = False  # an ack() waits for this turn's others, then advances

    async def ack(self, tags: Iterable[int]) -> None:
        """Acknowledge deliveries whose effects committed (or that were skipped).

        The acknowledgement may go out a turn of the event loop later, with those
        of the other queues whose deliveries committed in the same transaction.
        """
        held = False
        for tag in tags:
            if not self._hold:
                await self._alone(self._channel.basic_ack(tag), tag)
            elif tag > self._floor:  # (at or below it: settled already, nothing to send)
                self._committed.add(tag)
                held = True
        if not held:
            await self._advance()
        elif not self._turn:
            # A batch's queues resume in one turn of the loop, one after another:
            # the first waits for the others to register their deliveries, then
            # one multiple ack covers them all (not one frame per queue).
            self._turn = True
            try:
                await asyncio.sleep(0)
            finally:
                self._turn = False
            await self._advance()

    async def reject(self, tag: int) -> None:
        """Reject without requeue: RabbitMQ routes it to the dead-letter exchange."""
        await self._alone(self._channel.basic_reject(tag, requeue=False), tag)
        await self._advance()

    async def give_back(self, tag: int) -> None:
        """Return it to its queue untouched (``nack`` with requeue)."""
        await self._alone(self._channel.basic_nack(tag, requeue=True), tag)
        await self._advance()

    async def flush(self) -> None:
        """Acknowledge at once what waits (stopping: nothing committed stays unacknowledged)."""
        async with self._alone_acks:
            await self._advance()
            while self._committed:
                tag = min(self._committed)
                self._committed.discard(tag)
                await self._alone(self._channel.basic_ack(tag), tag)
            await self._advance()

    async def run(self) -> None:
        """Acknowledge alone what waited ``hold`` seconds or more (a task per channel)."""
        previous: set[int] = set()
        while True:
            if not self._committed:
                previous = set()
                self._held.clear()
                await self._held.wait()
            await asyncio.sleep(self._hold)
            async with self._alone_acks:
                stale = sorted(tag for tag in previous if tag in self._committed)
                for tag in stale:
                    self._committed.discard(tag)
                    await self._alone(self._channel.basic_ack(tag), tag)
                previous = set(self._committed)
                if stale:
                    await self._advance()

    async def _alone(self, settle: Awaitable[None], tag: int) -> None:
        """Send one delivery's frame; only then does its tag count as settled."""
        await settle
        if self._hold and tag > self._floor:
            self._settled.add(tag)

    async def _advance(self) -> None:
        """Move the floor over what is settled; one multiple ack for the committed ones."""
        top: int | None = None
        while True:
            following = self._floor + 1
            if following in self._committed:
                self._committed.discard(following)
                top = following
            elif following in self._settled:
                self._settled.discard(following)
            else:
                break
            self._floor = following
        if top is not None:
            await self._channel.basic_ack(top, multiple=True)
        if self._committed:
            self._held.set()
