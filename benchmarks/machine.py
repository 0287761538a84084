"""What a benchmark ran on, for its results: shared 2-core machines differ, so every result names its CPU."""

from __future__ import annotations

import os
import platform
from pathlib import Path

FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "asimd")


def describe() -> str:
    """e.g. 'AMD EPYC (x86_64; avx2, avx512f, avx512_vnni), 2 cores'."""
    name, flags = platform.machine(), set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and name == platform.machine():
                name = value.strip()
            elif key.strip() in ("flags", "Features"):
                flags |= set(value.split())
    seen = ", ".join(f for f in FEATURES if f in flags) or "no SIMD flags read"
    return f"{name} ({platform.machine()}; {seen}), {os.cpu_count()} cores"
