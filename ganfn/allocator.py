"""glibc's allocator settings for CPU training (a process-wide choice the ``ganfn`` command makes).

Pure (out-of-place) steps allocate a fresh tensor for every result. glibc
serves each allocation above its mmap threshold (128 KiB at first) from a new
``mmap`` and unmaps it on free, so every op of a stacked or image-sized step
pays page faults on freshly zeroed pages. :func:`tune_cpu_allocator` keeps
freed memory in the heap instead (measured: a vmapped 16-member Adam update of
an MLP D, 28 ms with the defaults, 8 ms tuned; 16 separate DCGAN/digits runs
1.44x faster, see ``bench/README_vmap.md``). The library never calls it on
import: a program that embeds ganfn keeps its own allocator settings.
"""
from __future__ import annotations

import ctypes

__all__ = ["tune_cpu_allocator"]

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3


def tune_cpu_allocator() -> bool:
    """Raise glibc's mmap threshold to its maximum (32 MiB), its trim threshold
    to 1 GiB and its top pad to 64 MiB, as ``MALLOC_MMAP_THRESHOLD_=33554432
    MALLOC_TRIM_THRESHOLD_=1073741824 MALLOC_TOP_PAD_=67108864`` would at start-up.

    Returns True when glibc took every setting; False (and changes nothing
    further) where there is no glibc, e.g. macOS or musl. The process keeps up
    to 1 GiB of freed memory for reuse instead of returning it to the system.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    ok = mallopt(_M_MMAP_THRESHOLD, 32 * 2**20) == 1  # glibc's maximum on 64-bit
    ok &= mallopt(_M_TRIM_THRESHOLD, 2**30) == 1
    ok &= mallopt(_M_TOP_PAD, 64 * 2**20) == 1
    return bool(ok)
