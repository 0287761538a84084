"""An export's C library under a prefix of its own, so that several models link into one firmware image.

Every generated name starts with hs_ / HS_ and every file is heartsight_model.* or hs_*.*: with the prefix beat_,
hs_infer becomes beat_infer, HS_INPUT_LENGTH BEAT_INPUT_LENGTH, heartsight_model.h beat_model.h and hs_kernels.c
beat_kernels.c. Each model then keeps its own arena, head and kernels (the kernels' code is duplicated: ~1-3 KB of
flash per extra model). An export that ships the C device path (`--sensor-fs`) has it renamed too: hs_monitor.c
becomes beat_monitor.c, hs_monitor_feed beat_monitor_feed, hs_monitor_config_for beat_monitor_config_for. The rename
is textual and total, so the prefixed library computes exactly what the export does (tests/test_prefix.py runs two of
them side by side against the exports; tests/test_monitor_export.py two device paths in one program).
"""

from __future__ import annotations

import re
from pathlib import Path

from firmware_export.codegen import C_FILES, write_cmake_lists
from firmware_export.monitor_tables import cmake_notes, monitor_files
from sdk.errors import HeartSightError

PREFIX = re.compile(r"^[a-z][a-z0-9]*_$")


def check_prefix(prefix: str) -> str:
    if not PREFIX.match(prefix):
        raise HeartSightError(f"prefix {prefix!r} must be lower-case letters and digits ending in '_', e.g. beat_")
    return prefix


def prefixed_name(name: str, prefix: str) -> str:
    """heartsight_model.h -> beat_model.h, hs_kernels.c -> beat_kernels.c."""
    if name.startswith("heartsight_"):
        return prefix + name[len("heartsight_"):]
    if name.startswith("hs_"):
        return prefix + name[len("hs_"):]
    raise HeartSightError(f"{name} is not a file of a HeartSight C library")


def prefixed_source(text: str, prefix: str) -> str:
    """The C text with every hs_ / HS_ name, include and the header guard under the prefix."""
    upper = prefix.upper()
    text = re.sub(r'#include "((?:heartsight|hs)_\w+\.h)"', lambda m: f'#include "{prefixed_name(m.group(1), prefix)}"',
                  text)
    text = re.sub(r"\bHEARTSIGHT_MODEL_H\b", f"{upper}MODEL_H", text)
    text = re.sub(r"\bhs_(?=\w)", prefix, text)
    return re.sub(r"\bHS_(?=\w)", upper, text)


def write_prefixed(export_dir: str | Path, prefix: str, out_dir: str | Path) -> list[Path]:
    """The export's C files (codegen.C_FILES, and the device path's when it ships one), renamed under the prefix, into
    out_dir with a CMakeLists.txt whose target is NAME_model; the C files written."""
    export_dir, out = Path(export_dir), Path(out_dir)
    check_prefix(prefix)
    missing = [name for name in C_FILES if not (export_dir / name).exists()]
    if missing:
        raise HeartSightError(f"{export_dir} is not an exported C model (missing {', '.join(missing)}); run "
                              "`heartsight export --model NAME --out DIR` first")
    device_path = monitor_files(export_dir)
    missing = [name for name in device_path if not (export_dir / name).exists()]
    if missing:
        raise HeartSightError(f"{export_dir} lists its device path's files in report.json but lacks "
                              f"{', '.join(missing)}; write the device path again (heartsight export ... --sensor-fs)")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name in [*C_FILES, *device_path]:
        target = out / prefixed_name(name, prefix)
        target.write_text(prefixed_source((export_dir / name).read_text(), prefix))
        written.append(target)
    write_cmake_lists(out, f"{prefix}model", [path.name for path in written if path.suffix == ".c"],
                      notes=cmake_notes(prefix.upper()) if device_path else (), libraries=["m"] if device_path else ())
    return written
