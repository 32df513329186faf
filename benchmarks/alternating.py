"""Side-by-side timing shared by the benchmarks: every contender runs once per repetition, in alternating order
(forward on even repetitions, reversed on odd ones), so that a slow phase of a busy machine falls on all of them;
the medians are compared, never a single run."""
import statistics
import time
from collections.abc import Callable


def alternating_medians(runs: dict[str, Callable[[], object]], reps: int) -> dict[str, float]:
    "Median wall seconds of each call in `runs` over `reps` alternating repetitions."
    times = {name: [] for name in runs}
    for rep in range(reps):
        for name in (list(runs) if rep % 2 == 0 else list(reversed(runs))):
            t = time.perf_counter()
            runs[name]()
            times[name].append(time.perf_counter() - t)
    return {name: statistics.median(v) for name, v in times.items()}
