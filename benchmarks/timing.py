"""What the CPU benchmarks share: a median timer and writing their markdown table."""

import statistics
import time


def timed(fn, repeats: int) -> float:
    """Median seconds of `repeats` calls of fn, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def emit(lines: list[str], out: str | None = None) -> str:
    """Print the table; append it to `out` (e.g. benchmarks/README.md) when given."""
    table = "\n".join(lines)
    print(table, flush=True)
    if out:
        with open(out, "a") as f:
            f.write(table + "\n\n")
    return table
