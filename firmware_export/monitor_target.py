"""Run the whole device path in C on an emulated Cortex-M4: build examples/firmware_monitor (hs_monitor with an exported
beat model, the tables monitor_tables_c writes for the sensor rate, and ecg_af linked next to it under the prefix af_),
feed it a signal under QEMU and read back its events.

`run_monitor_qemu` returns what the firmware printed: every beat, signal-quality event and alert, the af_ model's result
on its window, and a summary with the counts, the monitor's state size and peak stack, and SysTick ticks per stage.
Run with `icount_shift` (QEMU's -icount: one instruction advances the clock 2^shift ns) the ticks count instructions,
and the result has them per stage ("instructions"); `profile=True` splits the path into its stages (stage_wraps.c).
`measure_path_size` builds the path alone (size_probe.c) and attributes its flash and RAM from the linker map.
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import os
import re
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from firmware_export.codegen import C_FILES
from firmware_export.monitor_tables import monitor_tables_c
from firmware_export.prefix import write_prefixed
from firmware_export.target import (QEMU_COMMAND, cmsis_make_variables, instructions_per_tick, output_tail,
                                    section_sizes, toolchain_missing)
from models.registry import ZOO_DIR
from sdk.errors import HeartSightError

FIRMWARE_DIR = Path(__file__).resolve().parents[1] / "examples" / "firmware_monitor"
MAKEFILE = FIRMWARE_DIR / "Makefile"
AF_EXPORT = ZOO_DIR / "ecg_af" / "int8"
# Buffers sized for one sensor rate, as a device built for its sensor would be (hs_monitor.h).
SIZE_FLAGS = ("-DHS_MONITOR_MAX_FS=360",)
STAGES = ("glue", "preprocess", "rpeak", "windows", "model", "explainer", "policy", "harness")
SAMPLES_FILE, CONFIG_FILE = "samples.f32", "monitor.cfg"


def run_monitor_qemu(export_dir, signal, fs, seconds=None, *, work_dir=None, size_flags=SIZE_FLAGS,
                     profile: bool = False, icount_shift: int | None = None, timeout_s: float = 900,
                     af_export_dir=AF_EXPORT, optimisation: str = "-O2") -> dict:
    """Build the firmware for this export and sensor rate, run it under QEMU on the signal (mV at fs Hz; its first
    `seconds` if given), in one-second chunks then finish, and return the parsed events:
    {"beats": [...], "quality": [...], "alerts": [...], "events": [(kind, event), ...] (all three in order),
    "af": {...}, "summary": {...}, "qemu_s", "sizes"}, and with
    icount_shift "instructions" (per stage, and "path": all but the harness). work_dir keeps the build between calls
    (a temporary directory by default)."""
    problem = toolchain_missing()
    if problem:
        raise HeartSightError(problem)
    x = _samples(signal, fs, seconds)
    if icount_shift is not None and not (isinstance(icount_shift, int) and 0 <= icount_shift <= 10):
        raise HeartSightError(f"icount_shift must be an integer 0-10 (QEMU's -icount shift), got {icount_shift!r}")
    with _work_directory(work_dir) as work:
        elf = build_monitor_firmware(export_dir, fs, work, size_flags=size_flags, profile=profile,
                                     af_export_dir=af_export_dir, timeout_s=timeout_s, optimisation=optimisation)
        run_dir = work / "run"
        run_dir.mkdir(exist_ok=True)
        x.astype("<f4").tofile(run_dir / SAMPLES_FILE)
        (run_dir / CONFIG_FILE).write_text(f"{SAMPLES_FILE} {float(fs)!r}\n")
        command = [*QEMU_COMMAND, *([] if icount_shift is None else ["-icount", f"shift={icount_shift}"]),
                   "-kernel", str(elf)]
        started = time.perf_counter()
        run = _run(command, timeout_s, "QEMU", cwd=run_dir)
        elapsed = time.perf_counter() - started
        result = _parse(run, command)
        result["qemu_s"] = elapsed
        result["sizes"] = section_sizes(elf)
    if icount_shift is not None:
        result["instructions"] = _instructions(result["summary"], icount_shift)
    return result


def build_monitor_firmware(export_dir, fs, work_dir, *, size_flags=SIZE_FLAGS, profile: bool = False,
                           af_export_dir=AF_EXPORT, target: str = "app.elf", timeout_s: float = 900,
                           optimisation: str = "-O2") -> Path:
    """Write the generated sources (the tables for fs, the af_ library) into work_dir/gen and build `target`
    (app.elf, probe.elf or baseline.elf) in a build directory of its own for these flags; returns its path."""
    problem = toolchain_missing()
    if problem:
        raise HeartSightError(problem)
    export_dir, af_export_dir = Path(export_dir).resolve(), Path(af_export_dir).resolve()
    work = Path(work_dir).resolve()
    for directory in (export_dir, af_export_dir):
        absent = [name for name in C_FILES if not (directory / name).is_file()]
        if absent:
            raise HeartSightError(f"{directory} is not an exported model library: missing {', '.join(absent)}; "
                                  "export it with `heartsight export --model NAME --out DIR`")
    if optimisation not in ("-O0", "-O1", "-O2", "-O3", "-Os", "-Og"):
        raise HeartSightError(f"optimisation must be one of -O0 -O1 -O2 -O3 -Os -Og, got {optimisation!r}")
    if " " in f"{export_dir}{af_export_dir}{work}{FIRMWARE_DIR}":
        raise HeartSightError(f"make cannot handle spaces in paths: move {work} (and the exports) to paths without "
                              "spaces")
    _check_rate(fs, size_flags)
    flags = " ".join(size_flags)
    gen = work / "gen"
    tables = gen / f"monitor_tables_{_rate_name(fs)}.c"
    _write_if_changed(tables, monitor_tables_c([float(fs)]))
    _write_prefixed_if_changed(af_export_dir, gen / "af")
    key = f"{export_dir}|{flags}|{profile}|{optimisation}"
    build = work / ("build-" + hashlib.sha256(key.encode()).hexdigest()[:12])
    command = ["make", "-f", str(MAKEFILE), f"BUILD={build}", f"GEN={gen}", f"TABLES={tables}", f"AF_DIR={gen / 'af'}",
               f"MODEL_DIR={export_dir}", f"SIZE_FLAGS={flags}", f"PROFILE={int(bool(profile))}", f"OPT={optimisation}",
               *cmsis_make_variables(export_dir), f"-j{os.cpu_count() or 1}", str(build / target)]
    made = _run(command, timeout_s, "the firmware build")
    if made.returncode != 0:
        raise HeartSightError(f"the firmware build failed in {build}: fix the C errors below (model in {export_dir}, "
                              f"flags {flags or 'none'})\n" + output_tail(made.stdout + made.stderr))
    return build / target


def measure_path_size(export_dir, fs, work_dir, *, size_flags=SIZE_FLAGS, af_export_dir=AF_EXPORT,
                      optimisation: str = "-O2") -> dict:
    """Flash and static RAM of the device path alone: size_probe.c's image minus its baseline (the same startup, an
    empty main), from arm-none-eabi-size, and per object file from the linker maps. Returns {"flash", "ram_static",
    "groups": {name: {"text", "rodata", "data", "bss"}}, "total" (the groups' sum), "probe", "baseline"}; flash is
    text + rodata + data, static RAM data + bss (the hs_monitor_t state is in the probe's bss, with one chunk of
    input). The groups add up to the totals but for alignment padding."""
    work = Path(work_dir)
    maps, images = {}, {}
    for name in ("probe", "baseline"):
        elf = build_monitor_firmware(export_dir, fs, work, size_flags=size_flags, af_export_dir=af_export_dir,
                                     target=f"{name}.elf", optimisation=optimisation)
        maps[name] = {("size_probe" if group == "size_baseline" else group): kinds  # one main, built twice
                      for group, kinds in read_map(elf.with_suffix(".map")).items()}
        images[name] = section_sizes(elf)
    groups: dict[str, dict[str, int]] = {}
    for sign, name in ((1, "probe"), (-1, "baseline")):
        for group, kinds in maps[name].items():
            into = groups.setdefault(group, dict.fromkeys(("text", "rodata", "data", "bss"), 0))
            for kind, size in kinds.items():
                into[kind] += sign * size
    groups = {g: k for g, k in groups.items() if any(k.values())}
    total = {kind: sum(k[kind] for k in groups.values()) for kind in ("text", "rodata", "data", "bss")}
    probe, baseline = images["probe"], images["baseline"]
    return {"flash": probe["text"] + probe["data"] - baseline["text"] - baseline["data"],
            "ram_static": probe["data"] + probe["bss"] - baseline["data"] - baseline["bss"],
            "total": total, "groups": groups, "probe": probe, "baseline": baseline}


# --- the map file ------------------------------------------------------------------------------------------------

_INPUT_SECTION = re.compile(r"^ (\S+)\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)\s+(\S.*)$")
_NAME_ONLY = re.compile(r"^ (\S+)$")
_ADDRESS_ONLY = re.compile(r"^\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)\s+(\S.*)$")


def read_map(path) -> dict[str, dict[str, int]]:
    """Bytes per group of input files (an object's name without .o; libgcc, libm, libc, crt for the toolchain's) and
    kind (text, rodata, data, bss) in the image, from a GNU ld map file (sections --gc-sections dropped are not
    listed there)."""
    lines = Path(path).read_text().splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("Linker script and memory map")), None)
    if start is None:
        raise HeartSightError(f"{path} is not a GNU ld map file")
    sizes: dict[str, dict[str, int]] = {}
    pending = None
    for line in lines[start:]:
        section = size = source = None
        if match := _INPUT_SECTION.match(line):
            section, size, source = match.group(1), int(match.group(3), 16), match.group(4)
        elif pending and (match := _ADDRESS_ONLY.match(line)):
            section, size, source = pending, int(match.group(2), 16), match.group(3)
        pending = match.group(1) if (match := _NAME_ONLY.match(line)) else None
        kind = _kind(section) if section else None
        if kind is None or size == 0:
            continue
        group = _group(source)
        sizes.setdefault(group, dict.fromkeys(("text", "rodata", "data", "bss"), 0))[kind] += size
    return sizes


def _kind(section: str) -> str | None:
    if section.startswith((".text", ".vectors", ".ARM.exidx", ".glue_7", ".vfp11_veneer", ".v4_bx", ".iplt")):
        return "text"
    if section.startswith(".rodata"):
        return "rodata"
    if section.startswith(".data"):
        return "data"
    if section.startswith((".bss", "COMMON")):
        return "bss"
    return None


def _group(source: str) -> str:
    """/…/obj/hs_rpeak.o -> hs_rpeak; /…/libm.a(libm_a-s_exp.o) -> libm; crt files -> crt."""
    archive = re.search(r"lib(\w+?)(?:_nano)?\.a\(", source)
    if archive:
        return "lib" + archive.group(1)
    name = Path(source.split()[0]).name
    return "crt" if name.startswith("crt") else name.removesuffix(".o")


# --- helpers -----------------------------------------------------------------------------------------------------

def _samples(signal, fs, seconds) -> np.ndarray:
    x = np.asarray(signal)
    if x.ndim != 1 or x.dtype.kind not in "iuf":
        raise HeartSightError(f"signal must be a 1-D array of samples in mV, got {x.ndim}-D {x.dtype}")
    if not (isinstance(fs, numbers.Real) and math.isfinite(fs) and fs > 0):
        raise HeartSightError(f"fs must be a positive sampling rate in Hz, got {fs!r}")
    if seconds is not None:
        if not (isinstance(seconds, numbers.Real) and seconds > 0):
            raise HeartSightError(f"seconds must be positive, got {seconds!r}")
        x = x[: int(round(seconds * fs))]
    if len(x) == 0:
        raise HeartSightError("no samples to run: pass a non-empty signal")
    return x.astype(np.float32)


def _check_rate(fs, size_flags) -> None:
    """A rate above the build's HS_MONITOR_MAX_FS would only fail inside the firmware: say it here."""
    limit = 500  # hs_monitor.h's default
    for flag in size_flags:
        if match := re.fullmatch(r"-DHS_MONITOR_MAX_FS=(\d+)", flag):
            limit = int(match.group(1))
    if float(fs) > limit:
        raise HeartSightError(f"this build holds sensor rates up to {limit} Hz, not {fs:g} Hz: pass "
                              f"size_flags with -DHS_MONITOR_MAX_FS={int(math.ceil(fs))}")


def _rate_name(fs) -> str:
    return f"{float(fs):g}".replace(".", "_")


def _write_if_changed(path: Path, text: str) -> None:
    """Unchanged sources keep their time stamps, so make rebuilds nothing."""
    if not path.exists() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def _write_prefixed_if_changed(export_dir: Path, out: Path) -> None:
    with tempfile.TemporaryDirectory() as fresh:
        for written in write_prefixed(export_dir, "af_", fresh):
            _write_if_changed(out / written.name, written.read_text())


@contextmanager
def _work_directory(work_dir):
    """The caller's directory, or a temporary one removed afterwards."""
    if work_dir is not None:
        path = Path(work_dir).resolve()
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="heartsight-monitor-") as temporary:
        yield Path(temporary).resolve()


def _run(command: list[str], timeout_s: float, what: str, cwd=None) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL,
                              cwd=cwd)
    except subprocess.TimeoutExpired:
        raise HeartSightError(f"{what} did not finish within {timeout_s:g} s (the firmware may hang): run "
                              f"`{' '.join(command)}` by hand{f' in {cwd}' if cwd else ''} to watch it, or raise "
                              "timeout_s") from None


def _parse(run: subprocess.CompletedProcess, command: list[str]) -> dict:
    """One JSON object a line; exit status 0 (all well) or 1 (something lost: the summary says what) with a summary
    is a finished run, anything else (an error line, a fault: status 2) an error."""
    result: dict = {"events": [], "beats": [], "quality": [], "alerts": [], "af": None, "summary": None}
    errors, other = [], []
    for line in run.stdout.splitlines():
        if not line.startswith("{"):
            other.append(line)
            continue
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            other.append(line)
            continue
        kind = event.pop("event", None)
        if kind in ("beat", "quality", "alert"):
            result["events"].append((kind, event))  # in the order the monitor delivered them
            result[{"beat": "beats", "quality": "quality", "alert": "alerts"}[kind]].append(event)
        elif kind in ("af", "summary"):
            result[kind] = event
        else:
            errors.append(event)
    summary = result["summary"]
    if errors or other or summary is None or summary.get("status") != "ok" or run.returncode not in (0, 1):
        what = errors[0] if errors else (other[0] if other else f"exit status {run.returncode}")
        raise HeartSightError(f"the device path did not finish under QEMU ({what}): run `{' '.join(command)}` in the "
                              "run directory to see it\n" + output_tail(run.stdout + run.stderr))
    return result


def _instructions(summary: dict, shift: int) -> dict:
    """Ticks to instructions, checked against the firmware's calibration loop."""
    calibration = summary["calibration"]
    per_tick = instructions_per_tick(calibration["instructions"], calibration["ticks"], shift)
    counts = {stage: summary["ticks"][stage] * per_tick for stage in STAGES}
    counts["path"] = sum(value for stage, value in counts.items() if stage != "harness")
    return counts
