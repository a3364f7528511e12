"""The calls that may be in progress at once (`trunk.max_calls`): a SIP trunk has so many
channels and a PBX carries so many calls; past that, more calls only make every call fail
(timeouts, lost DTMF). The rest wait their turn, first come first served."""

from __future__ import annotations

import asyncio


class NoFreeLine(Exception):
    """No line came free within the queue time-out."""


class Lines:
    def __init__(self, size: int, queue_timeout: float) -> None:
        self.size = size
        self.queue_timeout = queue_timeout
        self._free = asyncio.Semaphore(size)  # FIFO: waiters are served in order
        self.waiting = 0
        self.in_use = 0

    def must_wait(self) -> bool:
        return self._free.locked()

    async def acquire(self, timeout: float) -> None:
        """Take a line (give it back with release()); NoFreeLine after `timeout` (what is
        left of the call's `queue_timeout`, CallFlow)."""
        self.waiting += 1
        try:
            async with asyncio.timeout(timeout):
                await self._free.acquire()
            self.in_use += 1
        except TimeoutError:
            raise NoFreeLine from None
        finally:
            self.waiting -= 1

    def release(self) -> None:
        self.in_use -= 1
        self._free.release()
