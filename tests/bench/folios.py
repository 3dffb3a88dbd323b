#!/usr/bin/env python3
"""Histogram of the page-cache folio sizes that hold a file (Linux, root).

Usage: tests/bench/folios.py FILE...

Maps each file read-only, asks mincore(2) which pages are cached, touches only those (which
maps the folios as they are, reading nothing), then looks each page's frame up in
/proc/self/pagemap and its flags in /proc/kpageflags: a compound head starts a large folio,
compound tails continue it. Pages not cached are counted, never read in.
Used for docs/benchmarks.md, "Page-cache folios": sendfile(2) pays per folio, and the kernel
sizes a file's folios by the writes (or readahead) that created them.
"""
import collections
import ctypes
import mmap
import os
import struct
import sys

PAGE = os.sysconf("SC_PAGE_SIZE")
KPF_COMPOUND_HEAD = 1 << 15
KPF_COMPOUND_TAIL = 1 << 16
PFN_MASK = (1 << 55) - 1
PRESENT = 1 << 63


LIBC = ctypes.CDLL(None, use_errno=True)


def resident(addr, length, pages):
    """mincore(2) of the mapping at `addr`: per page, whether it is cached."""
    vec = (ctypes.c_ubyte * pages)()
    if LIBC.mincore(ctypes.c_void_p(addr), ctypes.c_size_t(length), vec) != 0:
        raise OSError(ctypes.get_errno(), "mincore")
    return [b & 1 for b in vec]


def histogram(path):
    """(pages, uncached pages, order-0 pages, {folio size in pages: count}) of `path`."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            return 0, 0, 0, {}
        m = mmap.mmap(fd, size, prot=mmap.PROT_READ)
    finally:
        os.close(fd)
    pages = (size + PAGE - 1) // PAGE
    real = os.path.realpath(path)
    base = None
    with open("/proc/self/maps") as maps:
        for line in maps:
            if line.rstrip().endswith(real):
                base = int(line.split()[0].split("-")[0], 16)
                break
    if base is None:
        raise SystemExit(f"{path}: mapping not found in /proc/self/maps")
    cached = resident(base, size, pages)
    for i in range(pages):
        if cached[i]:
            m[i * PAGE]  # map the cached folio
    runs = collections.Counter()
    singles = 0
    current = 0
    with open("/proc/self/pagemap", "rb") as pagemap, open("/proc/kpageflags", "rb") as flags:
        for i in range(pages):
            pagemap.seek((base // PAGE + i) * 8)
            entry = struct.unpack("Q", pagemap.read(8))[0]
            if not entry & PRESENT:
                if current:
                    runs[current] += 1
                current = 0
                continue
            flags.seek((entry & PFN_MASK) * 8)
            f = struct.unpack("Q", flags.read(8))[0]
            if f & KPF_COMPOUND_TAIL and current:
                current += 1
                continue
            if current:
                runs[current] += 1
            if f & KPF_COMPOUND_HEAD:
                current = 1
            else:
                current = 0
                singles += 1
    if current:
        runs[current] += 1
    m.close()
    return pages, pages - sum(cached), singles, dict(runs)


def main():
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    for path in sys.argv[1:]:
        pages, uncached, singles, runs = histogram(path)
        print(f"{path}: {pages} pages, {uncached} not cached; {singles} in 4 KiB folios; "
              f"{sum(runs.values())} large folios")
        for n in sorted(runs):
            print(f"  {n * PAGE // 1024} KiB folios: {runs[n]}")


if __name__ == "__main__":
    main()
