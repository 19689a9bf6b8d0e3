"""What the driver hands back to the system once it is freed."""

import re
from pathlib import Path

import pytest

from spark_jobs import driver_memory


def test_freed_memory_goes_back_to_the_system():
    rss_anon = re.compile(r"RssAnon:\s+(\d+) kB")

    def resident_mb() -> float:
        return int(rss_anon.search(Path("/proc/self/status").read_text()).group(1)) / 1024

    if not Path("/proc/self/status").exists() or driver_memory._glibc() is None:
        pytest.skip("glibc on Linux only: elsewhere return_freed_memory does nothing")
    # Blocks below glibc's mapping threshold, every tenth kept: the others' pages lie between live blocks, where only
    # a trim hands them back.
    blocks = [bytearray(64 << 10) for _ in range(4000)]
    kept = blocks[::10]
    del blocks
    before = resident_mb()
    driver_memory.return_freed_memory()
    assert before - resident_mb() > 100  # of the ~225 MB freed
    assert len(kept) == 400
