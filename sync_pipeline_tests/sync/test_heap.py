"""The sync's heap settings: applied where the C library is glibc, harmless elsewhere."""

from __future__ import annotations

import platform
import subprocess
import sys

from sync_pipeline.sync.heap import return_large_blocks_promptly


def test_glibc_takes_the_settings_and_a_second_call_changes_nothing() -> None:
    on_glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert return_large_blocks_promptly() is on_glibc
    assert return_large_blocks_promptly() is on_glibc


def test_freed_page_sized_blocks_go_back_to_the_system() -> None:
    # glibc's default would raise its mmap threshold after the first freed 1 MB block and keep
    # the next hundred in the heap; with the settings each is its own mapping, unmapped on free
    script = """
import sys
from sync_pipeline.sync.heap import return_large_blocks_promptly
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) // 1024
if "--tuned" in sys.argv:
    return_large_blocks_promptly()
first = bytearray(1 << 20); del first
before = rss()
pages = [bytearray(1 << 20) for _ in range(200)]
kept = pages[-1::-50]  # a few survivors spread over the heap, as live pages are
del pages
print(rss() - before)
"""
    grown = {
        mode: int(subprocess.check_output([sys.executable, "-c", script, mode], text=True))
        for mode in ("--default", "--tuned")
    }
    assert grown["--tuned"] < 20, grown
