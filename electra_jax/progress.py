"""A progress bar over the steps the device has finished, not the ones the host has queued.

jax dispatches asynchronously: counting dispatched steps makes a bar race ahead and then stall at
every host sync, so its rate and ETA swing. StepBar counts a step once its output is ready, but
only waits on outputs MAX_IN_FLIGHT steps old, so the device keeps a queue of work and the host is
not synchronised step by step. The rate is averaged over the run since its first step finished
(compiling is not a step), so a pause for evaluation or a checkpoint does not throw the ETA off.
"""
from __future__ import annotations

import collections
import time

import jax
from tqdm import tqdm

MAX_IN_FLIGHT = 4


class StepBar:
    def __init__(self, total: int, initial: int = 0, desc: str = "", disable: bool = False):
        self.bar = tqdm(total=total, initial=initial, desc=desc, unit="step", disable=disable, dynamic_ncols=True,
                        smoothing=0)
        self.in_flight = collections.deque()
        self.timing = False

    def dispatched(self, output) -> None:
        """Call after queueing a step, with one of its outputs (e.g. its loss)."""
        self.in_flight.append(output)
        if len(self.in_flight) > MAX_IN_FLIGHT:
            self._finish_oldest()

    def set_postfix(self, **values) -> None:
        self.bar.set_postfix(values)

    def _finish_oldest(self) -> None:
        jax.block_until_ready(self.in_flight.popleft())
        self.bar.update(1)
        if not self.timing:  # the rate counts from here: the first step includes compiling
            self.bar.initial, self.bar.start_t, self.timing = self.bar.n, time.time(), True

    def close(self) -> None:
        while self.in_flight:
            self._finish_oldest()
        self.bar.close()
