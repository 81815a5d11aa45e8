"""A progress bar over the steps the device has finished, not the ones the host has queued.

jax dispatches asynchronously: counting dispatched steps makes a bar race ahead and then stall at
every host sync, so its rate and ETA swing. StepBar keeps one step in flight (the host waits for
step N-1 after queueing step N, so data loading still overlaps compute) and averages the rate over
the run since its first step finished (compiling is not a step), so a pause for evaluation or a
checkpoint does not throw the ETA off.
"""
from __future__ import annotations

import time

import jax
from tqdm import tqdm


class StepBar:
    def __init__(self, total: int, initial: int = 0, desc: str = "", disable: bool = False):
        self.bar = tqdm(total=total, initial=initial, desc=desc, unit="step", disable=disable, dynamic_ncols=True,
                        smoothing=0)
        self.in_flight = None
        self.timing = False

    def dispatched(self, output) -> None:
        """Call after queueing a step, with one of its outputs (e.g. its loss)."""
        self._finish_in_flight()
        self.in_flight = output

    def set_postfix(self, **values) -> None:
        self.bar.set_postfix(values)

    def _finish_in_flight(self) -> None:
        if self.in_flight is not None:
            jax.block_until_ready(self.in_flight)
            self.bar.update(1)
            self.in_flight = None
            if not self.timing:  # the rate counts from here: the first step includes compiling
                self.bar.initial, self.bar.start_t, self.timing = self.bar.n, time.time(), True

    def close(self) -> None:
        self._finish_in_flight()
        self.bar.close()
