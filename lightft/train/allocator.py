"""Keep memory that a training step frees inside the process for the next step (glibc's malloc).

Why: a step allocates and frees the same large tensors every time (the gradients, among them the
word-embedding gradient of a full fine-tune, the activations). glibc serves blocks of 32 MiB and more,
and by default many smaller ones, straight from the kernel with mmap and hands them back on free, so
the next step faults every page in again: about 22,000 minor page faults (~90 MB) per MiniLM
full-fine-tuning step at batch 32. Keeping freed memory in the heap (no mmap for large blocks, no
trimming of the heap's top) lets the next step reuse it: about 3,000 faults per step, and whole MiniLM
runs spend 1.13x less time in their steps (median of 3 interleaved pairs on the 2-core AMX Xeon;
benchmarks/RESULTS.md, "The step's own overhead"). PyTorch's
CPU performance guide gives the same reason for preloading jemalloc or tcmalloc; this needs no
preloading and changes no numbers.

The cost: freed memory is not returned to the system while training runs, so the process's resident size stays
at the heap's high-water mark. With one batch shape the same blocks are reused and that mark is the step's own
peak; with many shapes (length-grouped batches of long, varied windows) glibc's heap fragments and the mark
keeps rising. Measured on MiniLM, batch 16, random lengths 120-384 (2-core EPYC, 2026-12-07, session 12, with
attention that still kept fp32 probabilities for backward): 60 steps reach 6.65 GB kept vs 5.70 GB with
glibc's defaults, which fragment too (a fixed length of 384: 3.2 GB either way), while the steps run 1.37x
faster kept (53.6 vs 73.7 s; 27 k vs 391 k page faults per step); a whole SQuAD recipe run reached 12.6 GB
then (benchmarks/RESULTS.md, session 12). After training the usual settings come back and the free memory is
returned (`malloc_trim`).

Where it applies: Linux with glibc, and only if the user has not tuned malloc through GLIBC_TUNABLES
(theirs wins). Elsewhere (macOS, Windows, musl) it does nothing. It is one of the fast paths behind
`--kernels` (`auto` takes it, `off` leaves malloc alone).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
from typing import Iterator, Optional

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # mallopt parameters (<malloc.h>)
GLIBC_DEFAULTS = {M_TRIM_THRESHOLD: 128 * 1024, M_MMAP_MAX: 65536}  # glibc's documented defaults
KEEP = {M_TRIM_THRESHOLD: 2**31 - 1, M_MMAP_MAX: 0}  # never trim the heap's top; no mmap'd blocks


def glibc() -> Optional[ctypes.CDLL]:
    """The C library when it is glibc on Linux (it has `mallopt` and `gnu_get_libc_version`), else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.gnu_get_libc_version  # glibc only (musl has no such symbol)
        libc.mallopt, libc.malloc_trim
    except (OSError, AttributeError):
        return None
    return libc


@contextlib.contextmanager
def reuse_freed_memory(enabled: bool = True) -> Iterator[bool]:
    """Inside the block, freed memory stays in the process (see the module docstring). Yields whether it does."""
    libc = glibc() if enabled and "glibc.malloc" not in os.environ.get("GLIBC_TUNABLES", "") else None
    if libc is None or not all(libc.mallopt(k, v) == 1 for k, v in KEEP.items()):
        yield False
        return
    try:
        yield True
    finally:
        for k, v in GLIBC_DEFAULTS.items():
            libc.mallopt(k, v)
        libc.malloc_trim(0)
