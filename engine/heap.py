"""Giving freed heap memory back to the operating system after peers are disconnected.

A disconnected peer's buffers (replies, a subscription trie) are freed, but glibc's allocator
keeps the pages of a fragmented heap, so the process would stay as large as at the attack's peak.
``malloc_trim(0)`` releases every free page; it is called once things settle after evictions.
Elsewhere than glibc it does nothing.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys
from collections.abc import Callable


def _malloc_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim  # type: ignore[no-any-return]
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        return None


_TRIM = _malloc_trim()


def release_free_memory() -> bool:
    """Return free heap pages to the OS; ``True`` if any were."""
    return bool(_TRIM(0)) if _TRIM is not None else False
