"""What the whole device path in C costs on a Cortex-M4, and that it computes what the Python Monitor computes there.

examples/firmware_monitor (hs_monitor with the ecg_beat_wcam int8 export, ecg_af linked next to it under the prefix
af_) runs under QEMU (mps2-an386) on the first minutes of MIT-BIH records, lead MLII at its own 360 Hz, in one-second
chunks, built for 360 Hz only (-DHS_MONITOR_MAX_FS=360):
- equality: every beat (sample, window start, label, probability), quality event and alert (type, sample, label,
  confidence within 1e-6, details, excerpt start and length) against the Python Monitor (backend c) fed the same chunks;
- instructions per second of signal under `-icount shift=0` (SysTick counts executed instructions: 40 a tick), for the
  whole path and, in a second build whose calls into the parts are wrapped (PROFILE=1), for each stage; the CPU load
  at 64 MHz taking one instruction as one cycle, a lower bound (a Cortex-M4 takes 1 to several cycles each);
- flash and RAM of the path alone (size_probe.c minus an empty program, per object from the linker map), the monitor's
  state by member, and the peak stack of the run, for that build and for one with the obvious -D reductions.

    python -m benchmarks.device_path_cost [--data-dir DIR] [--seconds 300]
    # writes benchmarks/results/device_path_cost.{md,json}
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from benchmarks.machine import describe
from firmware_export.host import CModel, build_shared_library
from firmware_export.monitor_target import (AF_EXPORT, SIZE_FLAGS, STAGES, build_monitor_firmware, measure_path_size,
                                            read_map, run_monitor_qemu)
from firmware_export.target import ARCH_FLAGS, toolchain_missing
from models.registry import ZOO_DIR
from sdk.data.records import data_dir, database_path, fetch_command, read_database_record
from sdk.device import monitor as monitor_module
from sdk.device.monitor import AlertEvent, BeatEvent, Monitor
from sdk.device.quality import QualityEvent
from sdk.errors import HeartSightError

RESULTS = Path(__file__).resolve().parent / "results"
RUNTIME = Path(__file__).resolve().parents[1] / "firmware_export" / "runtime"
EXPORT = ZOO_DIR / "ecg_beat_wcam" / "int8"
RECORDS = ("100", "233")
SECONDS = 300.0
CLOCK_HZ = 64e6
TARGETS = {"flash": 24 * 1024, "ram": 16 * 1024, "load": 0.25}
# hs_monitor.h's sizes cut to what a 360 Hz sensor and this beat model need: the gate's rate to the sensor's, the beats
# the channels keep to 64 (MIT-BIH peaks at 31), the embedding to the model's 32 channels, the signal kept to 10 s
# (Python keeps ~7-8 s on MIT-BIH) and the longest run excerpt to 8 s (longer runs are cut, flagged and counted as
# overflows).
REDUCED_FLAGS = ("-DHS_MONITOR_MAX_FS=360", "-DHS_QUALITY_MAX_FS=360", "-DHS_CHANNELS_MAX_BEATS=64",
                 "-DHS_MONITOR_MAX_EMBEDDING=32", "-DHS_MONITOR_KEPT_S=10", "-DHS_MONITOR_EXCERPT_S=8")
STATE_MEMBERS = ("raw", "run_signal", "run_trace", "scratch", "rpeak", "quality", "filtered", "channels", "quantized",
                 "model_trace", "labels", "marks", "chunk", "resampler", "peaks", "policy", "resampled", "decisions")
STAGE_TITLES = {
    "preprocess": "preprocessing (quality gate, resampler 360→128 Hz, band-pass)",
    "rpeak": "R-peak detection",
    "windows": "window building (hs_channels)",
    "model": "model (quantize, infer, last sums)",
    "explainer": "explainer (explain, softmax, trace interpolation to 360 Hz)",
    "policy": "alert policy",
    "glue": "monitor glue (kept signal, readiness, excerpts, beat marks)",
}
GROUPS = {  # probe map groups -> what they are
    "heartsight_model": "model: weights, requantization, layers", "hs_kernels": "model: convolution kernels",
    "hs_head": "model: head", "hs_sha256": "model: sha256", "monitor_tables": "sensor tables (360 Hz) + model table",
    "hs_monitor": "hs_monitor", "hs_dsp": "hs_dsp (resampler, band-pass)", "hs_rpeak": "hs_rpeak",
    "hs_channels": "hs_channels", "hs_quality": "hs_quality", "hs_policy": "hs_policy",
    "libgcc": "libgcc (soft double: the M4F has a single-precision FPU)", "libm": "libm (exp, rint, floor, fma...)",
    "libc": "libc (memcpy, memmove, memset, strcmp)", "size_probe": "hs_monitor_t state, the model's context, one input chunk",
}


# --- the Python Monitor and the comparison ---------------------------------------------------------------------------

@contextmanager
def _recorded_probabilities(into: list):
    """The unrounded probability of every classified beat (BeatEvent.p is rounded to 4 places)."""
    label = monitor_module._label

    def recording_label(spec, output):
        name, p = label(spec, output)
        into.append(p)
        return name, p
    monitor_module._label = recording_label
    try:
        yield
    finally:
        monitor_module._label = label


def python_events(signal: np.ndarray, fs: float, chunk: int, export=EXPORT) -> dict:
    """The Python Monitor (backend c) fed the signal in chunks of `chunk` samples, then finished."""
    probabilities: list[float] = []
    x = np.asarray(signal, np.float32)
    with _recorded_probabilities(probabilities):
        monitor = Monitor(model=export, backend="c", fs=fs)
        events = []
        for start in range(0, len(x), chunk):
            events += monitor.feed(x[start: start + chunk])
        events += monitor.finish()
    return {"events": events, "probabilities": probabilities}


def compare(qemu: dict, python: dict) -> dict:
    """Event by event, in order. Returns counts, the largest differences and the first difference (None: equal)."""
    seen = {"beats": 0, "classified": 0, "quality": 0, "alerts": 0, "max_p_difference": 0.0,
            "max_confidence_difference": 0.0, "max_embedding_relative": 0.0, "first_difference": None}
    got, expected = qemu["events"], python["events"]
    p_values = iter(python["probabilities"])

    def differs(index, what):
        if seen["first_difference"] is None:
            seen["first_difference"] = f"event {index}: {what}"

    if len(got) != len(expected):
        differs(min(len(got), len(expected)), f"{len(got)} events from QEMU, {len(expected)} from Python")
    for index, ((kind, c), e) in enumerate(zip(got, expected)):
        if kind == "beat" and isinstance(e, BeatEvent):
            seen["beats"] += 1
            if (c["sample"], c["window_start"], c["label"], c["quality"]) != (e.sample, e.window_start, e.label,
                                                                              e.quality):
                differs(index, f"beat {c} vs {e.sample, e.window_start, e.label, e.quality}")
            elif e.label is not None:
                seen["classified"] += 1
                p = next(p_values)
                seen["max_p_difference"] = max(seen["max_p_difference"], abs(c["p_raw"] - p))
                if c["p"] != e.p or abs(c["p_raw"] - p) > 1e-6:
                    differs(index, f"beat at {e.sample}: p {c['p']} ({c['p_raw']}) vs {e.p} ({p})")
        elif kind == "quality" and isinstance(e, QualityEvent):
            seen["quality"] += 1
            if (c["problem"], c["start"], c["end"]) != (e.kind, e.start, e.end):
                differs(index, f"quality {c} vs {e}")
        elif kind == "alert" and isinstance(e, AlertEvent):
            seen["alerts"] += 1
            _compare_alert(index, c, e.alert, seen, differs)
        else:
            differs(index, f"{kind} from QEMU, {type(e).__name__} from Python")
    seen["equal"] = seen["first_difference"] is None
    return seen


def _compare_alert(index: int, c: dict, alert, seen: dict, differs) -> None:
    details = json.loads(json.dumps(alert.details))  # tuples as lists, as JSON has them
    c_details = dict(c["details"])
    embedding, c_embedding = details.pop("embedding", None), c_details.pop("embedding", None)
    confidence = abs(c["confidence"] - alert.confidence)
    seen["max_confidence_difference"] = max(seen["max_confidence_difference"], confidence)
    if (c["type"], c["sample_index"], c["label"], c_details) != (alert.type, alert.sample_index, alert.label, details):
        differs(index, f"alert {c['type'], c['sample_index'], c['label'], c_details} vs "
                       f"{alert.type, alert.sample_index, alert.label, details}")
    elif confidence > 1e-6:
        differs(index, f"alert at {alert.sample_index}: confidence {c['confidence']} vs {alert.confidence}")
    elif (c["signal"]["start_sample"], c["signal"]["length"]) != (alert.excerpt.start, len(alert.excerpt.signal)) \
            or c["signal"]["truncated"]:
        differs(index, f"alert at {alert.sample_index}: excerpt {c['signal']} vs start {alert.excerpt.start}, "
                       f"length {len(alert.excerpt.signal)}")
    elif c["model"] != alert.model:
        differs(index, f"alert at {alert.sample_index}: model {c['model']} vs {alert.model}")
    elif (embedding is None) != (c_embedding is None):
        differs(index, f"alert at {alert.sample_index}: embedding {'missing' if c_embedding is None else 'extra'}")
    elif embedding is not None:
        relative = float(np.abs(np.subtract(c_embedding, embedding)).max()) / max(float(np.abs(embedding).max()), 1e-12)
        seen["max_embedding_relative"] = max(seen["max_embedding_relative"], relative)
        if relative > 1e-6:
            differs(index, f"alert at {alert.sample_index}: embedding differs by {relative:.2g} (relative)")


# --- memory ----------------------------------------------------------------------------------------------------------

def state_members(flags, work: Path) -> dict:
    """sizeof(hs_monitor_t) and of its largest members as arm-none-eabi-gcc lays them out with these flags."""
    source = work / "state_members.c"
    names = ("total", *STATE_MEMBERS)
    values = ", ".join(["(uint32_t)sizeof(hs_monitor_t)"] + [f"(uint32_t)sizeof(((hs_monitor_t *)0)->{m})"
                                                               for m in STATE_MEMBERS])
    source.write_text(f'#include <stdint.h>\n#include "hs_monitor.h"\nconst uint32_t hs_sizes[] = {{{values}}};\n')
    obj, raw = work / "state_members.o", work / "state_members.bin"
    subprocess.run(["arm-none-eabi-gcc", *ARCH_FLAGS, "-std=c99", "-O2", "-I", str(RUNTIME), *flags, "-c",
                    str(source), "-o", str(obj)], check=True, capture_output=True)
    subprocess.run(["arm-none-eabi-objcopy", "-O", "binary", "-j", ".rodata", str(obj), str(raw)], check=True)
    sizes = dict(zip(names, np.frombuffer(raw.read_bytes(), "<u4").tolist()))
    sizes["other"] = sizes["total"] - sum(sizes[m] for m in STATE_MEMBERS)
    return sizes


def memory(flags, work: Path, stack_bytes: int, optimisation: str = "-O2") -> dict:
    size = measure_path_size(EXPORT, 360.0, work, size_flags=flags, optimisation=optimisation)
    state = state_members(flags, work)
    return {"flags": list(flags), "optimisation": optimisation, "flash": size["flash"],
            "ram_static": size["ram_static"], "stack": stack_bytes,
            "ram": size["ram_static"] + stack_bytes, "total": size["total"], "groups": size["groups"],
            "state": state}


# --- the runs --------------------------------------------------------------------------------------------------------

def evaluate(record: str, seconds: float, data_root, work: Path) -> dict:
    recording = read_database_record("mitdb", record, data_root)
    fs = float(recording.fs)
    x = recording.channel("MLII")[: int(round(seconds * fs))].astype(np.float32)
    chunk = int(fs)  # one second
    started = time.perf_counter()
    python = python_events(x, fs, chunk)
    python_s = time.perf_counter() - started
    plain = run_monitor_qemu(EXPORT, x, fs, work_dir=work)
    counted = run_monitor_qemu(EXPORT, x, fs, work_dir=work, icount_shift=0)
    profiled = run_monitor_qemu(EXPORT, x, fs, work_dir=work, icount_shift=0, profile=True)
    reduced = run_monitor_qemu(EXPORT, x, fs, work_dir=work, size_flags=REDUCED_FLAGS)
    small = run_monitor_qemu(EXPORT, x, fs, work_dir=work, size_flags=REDUCED_FLAGS, optimisation="-Os",
                             icount_shift=0)
    signal_s = len(x) / fs
    cmsis = None  # the same path with the model on CMSIS-NN (the export's cmsis_nn/), where CMSIS-NN is at hand
    if (EXPORT / "cmsis_nn").is_dir() and os.environ.get("CMSIS_NN_DIR") and os.environ.get("CMSIS_CORE_DIR"):
        run = run_monitor_qemu(EXPORT / "cmsis_nn", x, fs, work_dir=work, icount_shift=0)
        cmsis = {"equality": compare(run, python), "instructions_per_s": run["instructions"]["path"] / signal_s}
    per_second = {stage: profiled["instructions"][stage] / signal_s for stage in STAGES}
    per_second["path"] = profiled["instructions"]["path"] / signal_s
    classified = plain["summary"]["classified"]
    return {
        "record": record, "fs": fs, "seconds": signal_s, "chunk": chunk,
        "equality": compare(plain, python), "equality_icount": compare(counted, python),
        "equality_profiled": compare(profiled, python), "equality_reduced": compare(reduced, python),
        "equality_reduced_os": compare(small, python),
        "overflows": plain["summary"]["overflows"], "overflows_reduced": reduced["summary"]["overflows"],
        "overflows_reduced_os": small["summary"]["overflows"],
        "path_instructions_per_s_reduced_os": small["instructions"]["path"] / signal_s,
        "qemu_s": round(plain["qemu_s"], 2), "qemu_icount_s": round(counted["qemu_s"], 2),
        "qemu_profiled_s": round(profiled["qemu_s"], 2), "python_s": round(python_s, 2),
        "path_instructions_per_s": counted["instructions"]["path"] / signal_s,
        "profiled_instructions_per_s": per_second,
        "profile_overhead_per_s": (profiled["instructions"]["path"] - counted["instructions"]["path"]) / signal_s,
        "switches": profiled["summary"]["switches"],
        "per_classified_beat": {stage: profiled["instructions"][stage] / max(classified, 1)
                                for stage in ("model", "explainer")},
        "beats": plain["summary"]["beats"], "classified": classified, "alerts": plain["summary"]["alerts"],
        "stack_bytes": plain["summary"]["stack_bytes"],  # the profiled build's wrappers add their own frames
        "stack_bytes_reduced": reduced["summary"]["stack_bytes"],
        "stack_bytes_reduced_os": small["summary"]["stack_bytes"],
        "state_bytes": plain["summary"]["state_bytes"], "state_bytes_reduced": reduced["summary"]["state_bytes"],
        "af": plain["af"], "image": plain["sizes"], "cmsis_nn": cmsis,
    }


def second_model(work: Path) -> dict:
    """Flash and RAM the af_ model adds to the reference image (its four objects in the app's map)."""
    elf = build_monitor_firmware(EXPORT, 360.0, work)
    groups = read_map(elf.with_suffix(".map"))
    af = [g for g in groups if g.startswith("af_")]
    total = {kind: sum(groups[g][kind] for g in af) for kind in ("text", "rodata", "data", "bss")}
    return {"objects": sorted(af), "flash": total["text"] + total["rodata"] + total["data"],
            "ram": total["data"] + total["bss"], **total}


def af_on_host() -> dict:
    """The ecg_af export's host build on the firmware's all-zero window: logits and the sum of its trace."""
    header = (AF_EXPORT / "heartsight_model.h").read_text()
    value = lambda name: int(re.search(rf"#define HS_{name} (\d+)", header).group(1))  # noqa: E731
    channels, length, classes = value("INPUT_CHANNELS"), value("INPUT_LENGTH"), value("NUM_CLASSES")
    model = CModel(build_shared_library(AF_EXPORT), channels, length, classes)
    logits, traces = model.infer(model.quantize_input(np.zeros((1, channels, length), np.float32)), explain=True)
    return {"logits": logits[0].tolist(), "trace_sum": int(traces[0].astype(np.int64).sum())}


# --- the report ------------------------------------------------------------------------------------------------------

def _kb(n: float) -> str:
    return f"{n / 1024:.1f} KB"


def _m(n: float) -> str:
    return f"{n / 1e6:.2f} M" if n >= 1e5 else f"{n / 1e3:.1f} k"


def _verdict(value: float, limit: float) -> str:
    return "within" if value <= limit else f"**{value / limit:.1f}× over**"


def report(results: dict) -> str:
    rows, mem = results["records"], results["memory"]
    default, reduced = mem["default"], mem["reduced"]
    names = [r["record"] for r in rows]
    lines = [
        "# The whole device path in C on a Cortex-M4 (QEMU): equality, instructions, flash and RAM",
        "",
        "examples/firmware_monitor: hs_monitor with the ecg_beat_wcam int8 export (and ecg_af linked next to it under "
        "the prefix af_), built with `arm-none-eabi-gcc -O2 -std=c99 -Wall -Wextra -Werror -pedantic` for 360 Hz only "
        "(`-DHS_MONITOR_MAX_FS=360`), run under `qemu-system-arm -M mps2-an386` on the first "
        f"{results['seconds']:g} s of MIT-BIH records {', '.join(names)} (lead MLII, 360 Hz) in one-second chunks. "
        "Regenerate with `python -m benchmarks.device_path_cost`.",
        "",
        "## Equality with the Python Monitor",
        "",
        "The Python `Monitor(model=models/zoo/ecg_beat_wcam/int8, backend=\"c\", fs=360)` fed the same chunks; every "
        "event in order: beats (sample, window start, label, probability to 4 places as BeatEvent.p, unrounded within "
        "1e-6), quality events, alerts (type, sample, label, confidence within 1e-6, details with beat marks and the "
        "embedding within 1e-6 relative, excerpt start and length, model identity).",
        "",
        "| record | beats | classified | alerts | equal (plain) | equal (-icount) | equal (profiled) | overflows | "
        "max p difference | max confidence difference | QEMU run | QEMU -icount | Python Monitor |",
        "|---|---:|---:|---:|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    yes = lambda e: "yes" if e["equal"] else f"**NO**: {e['first_difference']}"  # noqa: E731
    for r in rows:
        e = r["equality"]
        lines.append(f"| {r['record']} | {r['beats']} | {r['classified']} | {r['alerts']} | {yes(e)} | "
                     f"{yes(r['equality_icount'])} | {yes(r['equality_profiled'])} | {r['overflows']} | "
                     f"{e['max_p_difference']:.1e} | {e['max_confidence_difference']:.1e} | {r['qemu_s']:.1f} s | "
                     f"{r['qemu_icount_s']:.1f} s | {r['python_s']:.1f} s |")
    host = results["af_host"]
    same = "the same as" if all(r["af"]["logits"] == host["logits"] and r["af"]["trace_sum"] == host["trace_sum"]
                                for r in rows) else "**NOT** what"
    lines += [
        "",
        f"The af_ model on an all-zero window in the same image: {rows[0]['af']['label']} (logits "
        f"{rows[0]['af']['logits']}, trace sum {rows[0]['af']['trace_sum']}), {same} the host build of the ecg_af "
        "export gives. Its real input, rhythm windows, comes with the AF path, not ported yet.",
        "",
        "## Instructions per second of signal",
        "",
        "`-icount shift=0`: SysTick counts executed instructions (40 a tick, checked by a calibration loop in every "
        "run). A build with `PROFILE=1` wraps every call from the monitor into a part (ld `--wrap`, "
        "examples/firmware_monitor/stage_wraps.c) and charges the instructions to its stage; the explainer stage "
        "includes the monitor's softmax (4 exp) and its interpolation of the trace to 360 Hz in double (soft float). "
        "Load = instructions per second / 64 MHz, one cycle per instruction: a **lower bound** (loads, multiplies, "
        "branches and the libgcc double routines take more than one cycle on a Cortex-M4).",
        "",
        "| stage | " + " | ".join(f"{n}: instr/s | load" for n in names) + " |",
        "|---|" + "---:|---:|" * len(rows),
    ]
    for stage in ("preprocess", "rpeak", "windows", "model", "explainer", "policy", "glue"):
        cells = [f"{_m(r['profiled_instructions_per_s'][stage])} | "
                 f"{r['profiled_instructions_per_s'][stage] / CLOCK_HZ:.2%}" for r in rows]
        lines.append(f"| {STAGE_TITLES[stage]} | " + " | ".join(cells) + " |")
    lines.append("| **whole path** (profiled build, sum of stages) | " + " | ".join(
        f"**{_m(r['profiled_instructions_per_s']['path'])}** | "
        f"**{r['profiled_instructions_per_s']['path'] / CLOCK_HZ:.1%}**" for r in rows) + " |")
    lines.append("| whole path (plain build, no wrappers) | " + " | ".join(
        f"{_m(r['path_instructions_per_s'])} | {r['path_instructions_per_s'] / CLOCK_HZ:.1%}" for r in rows) + " |")
    if all(r["cmsis_nn"] for r in rows):
        lines.append("| whole path, the model on CMSIS-NN (`--kernels cmsis-nn`) | " + " | ".join(
            f"{_m(r['cmsis_nn']['instructions_per_s'])} | {r['cmsis_nn']['instructions_per_s'] / CLOCK_HZ:.1%}"
            + ("" if r["cmsis_nn"]["equality"]["equal"] else " (NOT EQUAL)") for r in rows) + " |")
    worst = max(r["path_instructions_per_s"] for r in rows) / CLOCK_HZ
    lines += [
        "",
        f"Target ≤ {TARGETS['load']:.0%} of a 64 MHz M4: {_verdict(worst, TARGETS['load'])} "
        f"(worst record {worst:.1%}, a lower bound). Per classified beat: model "
        + ", ".join(f"{_m(r['per_classified_beat']['model'])} ({r['record']})" for r in rows)
        + f" instructions for {_m(results['macs'])} MACs "
        f"({rows[0]['per_classified_beat']['model'] / results['macs']:.1f} instructions per MAC: plain C kernels, "
        "no SIMD multiply-accumulate); explainer "
        + ", ".join(f"{_m(r['per_classified_beat']['explainer'])}" for r in rows)
        + ". The model and the explainer run once per beat: "
        + ", ".join(f"{r['record']} has {r['classified'] / r['seconds']:.2f} classified beats a second" for r in rows)
        + ", hence the loads. "
        "The wrappers add " + ", ".join(f"{r['profile_overhead_per_s'] / 1e3:.1f} k" for r in rows)
        + " instructions a second (the difference of the two whole-path rows); each stage boundary may misplace up "
        "to one tick (40 instructions) between neighbouring stages, "
        + ", ".join(f"{r['switches']:,}" for r in rows) + " switches in all."
        + ("" if not all(r["cmsis_nn"] for r in rows) else
           " With the model on CMSIS-NN (the export's cmsis_nn/ library: its convolutions on the unmodified "
           "CMSIS-NN at CMSIS_NN_DIR with its DSP-extension path) every event is again equal to the Python "
           "Monitor's and the path takes "
           + ", ".join(f"{r['cmsis_nn']['instructions_per_s'] / CLOCK_HZ:.1%}" for r in rows) + " of the core."),
        "",
        "## Flash and RAM of the path",
        "",
        "The path alone: examples/firmware_monitor/size_probe.c (init, feed, finish; every part and the model "
        "reachable, no harness, no printf, no second model) minus the same startup with an empty main, from "
        "`arm-none-eabi-size` and the linker map. Flash = text + rodata + data; RAM = data + bss (the hs_monitor_t "
        "state, the model's arena) + the peak stack measured in the QEMU runs (stack painted before each call into the "
        "monitor; it includes the model's and the callback's frames). Head updates (hs_set_head, sha256) are not "
        "linked in the probe: the path does not call them.",
        "",
        "| build | flash | RAM | of which hs_monitor_t | peak stack | flash target ≤ 24 KB | RAM target ≤ 16 KB | "
        "equal on both records | overflows |",
        "|---|---:|---:|---:|---:|---|---|---|---:|",
    ]
    for name, m, equal_key, overflow_key in (
            ("default, 360 Hz, -O2", default, "equality", "overflows"),
            ("reduced, -O2", reduced, "equality_reduced", "overflows_reduced"),
            ("reduced, -Os", mem["reduced_os"], "equality_reduced_os", "overflows_reduced_os")):
        equal = all(r[equal_key]["equal"] for r in rows)
        overflows = sum(r[overflow_key] for r in rows)
        lines.append(f"| {name} | {_kb(m['flash'])} | {_kb(m['ram'])} | {_kb(m['state']['total'])} | "
                     f"{m['stack']:,} B | {_verdict(m['flash'], TARGETS['flash'])} | "
                     f"{_verdict(m['ram'], TARGETS['ram'])} | {'yes' if equal else '**NO**'} | {overflows} |")
    lines += [
        "",
        f"Reduced: `{' '.join(REDUCED_FLAGS)}`: the gate's maximum rate cut to 360 Hz, the beats hs_channels keeps "
        "to 64 (its header: MIT-BIH peaks at 31; more would be an overflow), the embedding to the model's 32 "
        "channels, the signal kept to 10 s (`HS_MONITOR_KEPT_S`; the Python Monitor keeps 7-8 s on MIT-BIH) and the "
        "longest ventricular-run excerpt to 8 s (`HS_MONITOR_EXCERPT_S`: a longer run's excerpt is cut, flagged and "
        f"counted as an overflow; {sum(r['overflows_reduced'] for r in rows)} overflows on these records). "
        "-Os trades speed for flash: the whole path then takes "
        + ", ".join(f"{_m(r['path_instructions_per_s_reduced_os'])} ({r['record']})" for r in rows)
        + " instructions a second.",
        "",
        "Flash and static RAM by part (default build; reduced build in brackets where different):",
        "",
        "| part | text | rodata | data | bss |",
        "|---|---:|---:|---:|---:|",
    ]
    for group, k in sorted(default["groups"].items(), key=lambda item: -sum(item[1].values())):
        other = reduced["groups"].get(group, {})
        def cell(kind, k=k, other=other):
            return f"{k[kind]:,}" + (f" ({other.get(kind, 0):,})" if other.get(kind, 0) != k[kind] else "")
        lines.append(f"| {GROUPS.get(group, group)} | {cell('text')} | {cell('rodata')} | {cell('data')} | "
                     f"{cell('bss')} |")
    lines += [
        "",
        "The monitor's state (hs_monitor_t, the largest RAM consumer), by member, as laid out for the Cortex-M4:",
        "",
        "| member | what | default | reduced |",
        "|---|---|---:|---:|",
    ]
    what = {"raw": "raw signal kept for excerpts (KEPT_S at the sensor rate)", "run_signal": "ventricular-run excerpt",
            "run_trace": "its trace", "scratch": "model window (float, 4 × 768) / trace at 360 Hz",
            "rpeak": "R-peak detector state", "quality": "quality gate state", "filtered": "band-passed signal kept",
            "channels": "beat channels state", "quantized": "int8 model input", "model_trace": "int16 trace",
            "labels": "beat labels for marks", "marks": "an alert's beat marks", "chunk": "one chunk, held",
            "resampler": "resampler state", "peaks": "R peaks of a call", "policy": "policy state",
            "resampled": "a chunk at 128 Hz", "decisions": "a call's alerts", "other": "the rest"}
    for member in (*STATE_MEMBERS, "other", "total"):
        lines.append(f"| {member} | {what.get(member, 'hs_monitor_t')} | {default['state'][member]:,} | "
                     f"{reduced['state'][member]:,} |")
    state, groups = default["state"], default["groups"]
    model_flash = sum(sum(groups[g][k] for k in ("text", "rodata", "data")) for g in ("heartsight_model", "hs_kernels")
                      if g in groups)
    runtime_code = sum(groups[g]["text"] for g in ("hs_monitor", "hs_rpeak", "hs_quality", "hs_policy", "hs_channels",
                                                   "hs_dsp") if g in groups)
    helpers = sum(sum(groups[g][k] for k in ("text", "rodata", "data")) for g in ("libgcc", "libm", "libc")
                  if g in groups)
    share = [r["profiled_instructions_per_s"]["model"] / r["profiled_instructions_per_s"]["path"] for r in rows]
    model_ram = json.loads((EXPORT / "report.json").read_text())["ram"]
    context = model_ram["arena"] + model_ram["scratch"]  # sizeof(hs_context_t): the caller's, in size_probe.c
    lines += [
        "",
        "**Biggest consumers.** RAM: the monitor's state, "
        f"{_kb(state['total'])} of {_kb(default['ram'])}: the ventricular-run excerpt and its trace "
        f"({_kb(state['run_signal'] + state['run_trace'])}, float), the raw signal kept for excerpts "
        f"({_kb(state['raw'])}), the R-peak detector ({_kb(state['rpeak'])}), the model's float window "
        f"({_kb(state['scratch'])}), the quality gate ({_kb(state['quality'])}), the filtered signal "
        f"({_kb(state['filtered'])}); then the model's context, its activations and the explainer's scratch "
        f"({_kb(context)}), and its head ({_kb(groups['heartsight_model']['data'])}). "
        f"Flash: the model ({_kb(model_flash)}, {_kb(groups['heartsight_model']['rodata'])} of it weights and "
        f"requantization), the runtime's code ({_kb(runtime_code)}: hs_monitor {_kb(groups['hs_monitor']['text'])}, "
        f"hs_rpeak {_kb(groups['hs_rpeak']['text'])}, hs_quality {_kb(groups['hs_quality']['text'])}), the sensor "
        f"tables ({_kb(groups['monitor_tables']['rodata'])}, mostly the resampler's taps) and the soft-double and "
        f"libc/libm routines ({_kb(helpers)}). CPU: the model's inference is "
        + ", ".join(f"{v:.0%}" for v in share) + " of the path's instructions, the explainer most of the rest. "
        "Not tried, as they change code rather than flags: keeping the excerpts and the raw signal as int16 instead "
        "of float would roughly halve the three largest buffers (the wire format sends them as int16 anyway, but the "
        "excerpts would no longer be bit-equal to Python's); a SIMD (SMLAD) convolution kernel, or the model's "
        "CMSIS-NN build (`--kernels cmsis-nn`, benchmarks/results/firmware.md), would cut the model's instructions "
        "per MAC.",
    ]
    af = results["second_model"]
    lines += [
        "",
        f"The second model (ecg_af under af_) adds {_kb(af['flash'])} of flash and {_kb(af['ram'])} of RAM (its "
        "arena) to the reference image, which with the harness (newlib printf with floats, semihosting) is "
        f"{_kb(rows[0]['image']['text'] + rows[0]['image']['data'])} of flash and "
        f"{_kb(rows[0]['image']['data'] + rows[0]['image']['bss'])} of static RAM (`arm-none-eabi-size` of app.elf).",
        "",
        f"Machine: {results['machine']}; {results['toolchain']}; {results['qemu']}.",
        "",
    ]
    return "\n".join(lines)


def _first_line(command: list[str]) -> str:
    try:
        return subprocess.run(command, capture_output=True, text=True).stdout.splitlines()[0].strip()
    except (OSError, IndexError):
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", help="data directory holding mitdb/ (default $HEARTSIGHT_DATA)")
    parser.add_argument("--seconds", type=float, default=SECONDS, help="signal from each record's start (default 300)")
    args = parser.parse_args(argv)
    problem = toolchain_missing()
    if problem:
        print(f"device_path_cost: error: {problem}", file=sys.stderr)
        return 2
    data_root = data_dir(args.data_dir)
    folder = database_path("mitdb", data_root)
    missing = [r for r in RECORDS if not (folder / f"{r}.hea").exists()]
    if missing:
        print(f"device_path_cost: error: records {' '.join(missing)} missing in {folder}; get them with "
              f"`{fetch_command('mitdb')}`, or point --data-dir (or $HEARTSIGHT_DATA) at the data directory",
              file=sys.stderr)
        return 2
    try:
        with tempfile.TemporaryDirectory(prefix="heartsight-device-path-") as scratch:
            work = Path(scratch)
            rows = [evaluate(record, args.seconds, data_root, work) for record in RECORDS]
            stack = max(r["stack_bytes"] for r in rows)
            stack_reduced = max(r["stack_bytes_reduced"] for r in rows)
            stack_small = max(r["stack_bytes_reduced_os"] for r in rows)
            results = {
                "protocol": {"records": list(RECORDS), "lead": "MLII", "seconds": args.seconds, "chunk_s": 1.0,
                             "build": "arm-none-eabi-gcc -O2 -std=c99, Cortex-M4F hard float",
                             "size_flags": list(SIZE_FLAGS), "reduced_flags": list(REDUCED_FLAGS),
                             "icount": "shift=0 (40 instructions per SysTick tick)",
                             "load": "instructions per second / 64 MHz (one cycle per instruction: a lower bound)"},
                "seconds": args.seconds,
                "targets": {"flash_bytes": TARGETS["flash"], "ram_bytes": TARGETS["ram"],
                            "load_64mhz": TARGETS["load"]},
                "records": rows,
                "memory": {"default": memory(SIZE_FLAGS, work, stack),
                           "reduced": memory(REDUCED_FLAGS, work, stack_reduced),
                           "reduced_os": memory(REDUCED_FLAGS, work, stack_small, "-Os")},
                "second_model": second_model(work),
                "af_host": af_on_host(),
                "macs": json.loads((EXPORT / "report.json").read_text())["macs"],
                "machine": describe(),
                "toolchain": _first_line(["arm-none-eabi-gcc", "--version"]),
                "qemu": _first_line(["qemu-system-arm", "--version"]),
            }
    except HeartSightError as exc:
        print(f"device_path_cost: error: {exc}", file=sys.stderr)
        return 2
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "device_path_cost.json").write_text(json.dumps(results, indent=1) + "\n")
    (RESULTS / "device_path_cost.md").write_text(report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
