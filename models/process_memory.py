"""How much memory the trainer holds, for its log.

What Arrow keeps after a read: ``spark_jobs.driver_memory.use_returning_allocators``. Arrow's default allocator
(mimalloc in these wheels) keeps freed pages for reuse; after the exports are read into NumPy nothing reuses them:
at ML-25M's size, 1 GiB of the train samples' 6 GiB resident stayed with it even after ``release_unused()``, against
none with the system allocator."""

from __future__ import annotations

import os
import resource


def resident_gib() -> tuple[float, float]:
    """(now, peak so far) resident set size of this process, GiB."""
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    now = pages * os.sysconf("SC_PAGE_SIZE") / 2**30
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
    return round(now, 2), round(peak, 2)

