"""The progress bar counts finished steps and keeps a steady ETA through the compile and pauses."""
import time

from electra_jax.progress import StepBar


def test_eta_stays_within_twice_the_truth_after_the_first_tenth():
    total, step_seconds = 40, 0.02  # the bar lags MAX_IN_FLIGHT steps: sleeps stand in for device time
    bar = StepBar(total, desc="t", disable=False)
    etas = []
    for step in range(total):
        time.sleep(0.5 if step == 0 else 0.3 if step == 20 else step_seconds)  # compile, then an eval pause
        bar.dispatched(step)
        done = bar.bar.n
        if done >= total // 10:
            rate = bar.bar.format_dict["rate"] or (done - bar.bar.initial) / (time.time() - bar.bar.start_t)
            etas.append((total - done) / rate)
            truth = (total - done) * step_seconds + (0.3 if done < 20 else 0)
            assert etas[-1] <= 2 * max(truth, 10 * step_seconds), (done, etas[-1], truth)
    bar.close()
    assert bar.bar.n == total  # every dispatched step is counted once it finishes
