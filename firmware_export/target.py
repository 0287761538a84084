"""Verify an exported C model on an emulated Cortex-M4: build examples/firmware with it, run it under
QEMU and compare every logit and explanation value with the Python integer reference.

Bit-exactness on the real instruction set (not the host compiler) is what shows that the firmware
computes what was validated in Python.
"""

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from firmware_export.codegen import C_FILES
from sdk.errors import HeartSightError

FIRMWARE_DIR = Path(__file__).resolve().parents[1] / "examples" / "firmware"
MODEL_FILES = C_FILES
APT_COMMAND = (
    "apt-get install -y --no-install-recommends gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm make"
)
# Must match the `run` target of examples/firmware/Makefile; QEMU is started directly so that a
# timeout kills QEMU itself rather than a make process that would leave it running.
QEMU_COMMAND = ["qemu-system-arm", "-M", "mps2-an386", "-nographic", "-semihosting-config", "enable=on,target=native"]
# -icount shift=0: QEMU's clock advances 1 ns per executed instruction, and SysTick (mps2-an386's 25 MHz processor
# clock, 40 ns a tick) counts it, so ticks count instructions (examples/firmware/instruction_count.h).
ICOUNT_SHIFT = 0
TICK_NS = 40
CALIBRATION_TOLERANCE_TICKS = 2  # the loop's own reads of the counter may fall either side of a tick
ARCH_FLAGS = ["-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"]

_VECTOR_LINE = re.compile(r"^vector (\d+) class (-?\d+) logits_equal ([01]) trace_equal ([01]) "
                          r"ticks_infer (\d+) ticks_explain (\d+)$")
_CALIBRATION_LINE = re.compile(r"^calibration instructions (\d+) ticks (\d+)$")
_SUMMARY_LINE = re.compile(r"^summary n (\d+) exact (\d+)$")
_HEAD_LINE = re.compile(r"^head status (\d+) refused_tampered ([01]) version (\d+)$")
_HEAD_SUMMARY_LINE = re.compile(r"^head_summary n (\d+) exact (\d+)$")


@dataclass(frozen=True)
class HeadCheck:
    """A head update for the firmware to apply (firmware_export.head_update), the key it is signed with, and the
    logits (n, classes) and traces (n, length) the reference gives for the test inputs with that head."""

    blob: bytes
    key: bytes
    logits: np.ndarray
    traces: np.ndarray
_VALUES_PER_LINE = 24


def toolchain_missing() -> str | None:
    """Say what to install before building for the target, or None if everything is there."""
    missing = [tool for tool in ("arm-none-eabi-gcc", "arm-none-eabi-size", "qemu-system-arm", "make") if not shutil.which(tool)]
    if "arm-none-eabi-gcc" not in missing and not _has_newlib():
        missing.append("newlib for arm-none-eabi (libc_nano.a)")
    if not missing:
        return None
    return f"the Cortex-M4 toolchain is incomplete, missing: {', '.join(missing)}; install it with `{APT_COMMAND}`"


def _has_newlib() -> bool:
    """gcc-arm-none-eabi installs without its C library, and then every build fails on <stdint.h>."""
    found = subprocess.run(
        ["arm-none-eabi-gcc", *ARCH_FLAGS, "-print-file-name=libc_nano.a"], capture_output=True, text=True
    ).stdout.strip()
    return Path(found).is_absolute() and Path(found).exists()


def write_vectors_c(path, inputs, logits, traces, head: HeadCheck | None = None) -> None:
    """Write the test vectors that examples/firmware/main.c checks the model against.

    inputs (n, channels, length) int8, logits (n, classes) int8, traces (n, length) int16 (the trace of
    the expected arg-max class); head: an update to apply and what to expect after it. The file refuses to
    compile against a model of other dimensions.
    """
    inputs = _integer_array("inputs", inputs, 3, np.int8)
    logits = _integer_array("logits", logits, 2, np.int8)
    traces = _integer_array("traces", traces, 2, np.int16)
    n, channels, length = inputs.shape
    classes = logits.shape[1]
    if n == 0:
        raise HeartSightError("no test vectors: pass at least one input")
    if logits.shape[0] != n or traces.shape != (n, length):
        raise HeartSightError(
            f"test vector shapes disagree: inputs {inputs.shape}, logits {logits.shape}, traces {traces.shape}; "
            f"expected logits (n, classes) and traces ({n}, {length})"
        )
    parts = [
        "/* Test vectors for examples/firmware, written by firmware_export.target.write_vectors_c. */\n",
        "#include <stdint.h>\n#include \"heartsight_model.h\"\n#include \"vectors.h\"\n\n",
        f"#if HS_INPUT_CHANNELS != {channels} || HS_INPUT_LENGTH != {length} || HS_NUM_CLASSES != {classes}\n",
        f'#error "these test vectors are for {channels} channels x {length} samples and {classes} classes: '
        'regenerate them for this model"\n#endif\n\n',
        f"const int hs_test_count = {n};\n\n",
        _c_array("const int8_t hs_test_inputs", "HS_INPUT_CHANNELS * HS_INPUT_LENGTH", inputs.reshape(n, -1)),
        _c_array("const int8_t hs_test_logits", "HS_NUM_CLASSES", logits),
        _c_array("const int16_t hs_test_traces", "HS_INPUT_LENGTH", traces),
    ]
    if head is None:  # C has no empty arrays: one unused row each
        blob, key = b"\0", bytes(32)
        head_logits, head_traces = np.zeros((1, classes), np.int8), np.zeros((1, length), np.int16)
    else:
        blob, key = head.blob, head.key
        head_logits = _integer_array("head logits", head.logits, 2, np.int8)
        head_traces = _integer_array("head traces", head.traces, 2, np.int16)
        if len(key) != 32 or head_logits.shape != logits.shape or head_traces.shape != traces.shape:
            raise HeartSightError("the head check needs a 32-byte key and logits and traces shaped like the vectors'")
    parts += [f"const uint32_t hs_test_head_size = {0 if head is None else len(blob)};\n",
              _c_bytes("hs_test_head_blob", blob), _c_bytes("hs_test_head_key", key),
              _c_array("const int8_t hs_test_head_logits", "HS_NUM_CLASSES", head_logits),
              _c_array("const int16_t hs_test_head_traces", "HS_INPUT_LENGTH", head_traces)]
    Path(path).write_text("".join(parts))


def _c_bytes(name: str, data: bytes) -> str:
    values = list(data)
    lines = [", ".join(map(str, values[i: i + _VALUES_PER_LINE])) for i in range(0, len(values), _VALUES_PER_LINE)]
    return f"const uint8_t {name}[{len(values)}] = {{\n    " + ",\n    ".join(lines) + "\n};\n\n"


def _integer_array(name: str, values, ndim: int, dtype) -> np.ndarray:
    """Integer arrays of any width are accepted, but a value that does not fit is an error, not wrapped."""
    array = np.asarray(values)
    if array.ndim != ndim or not np.issubdtype(array.dtype, np.integer):
        raise HeartSightError(f"{name} must be a {ndim}-D integer array, got {array.ndim}-D {array.dtype}")
    limits = np.iinfo(dtype)
    if array.size and (array.min() < limits.min or array.max() > limits.max):
        raise HeartSightError(f"{name} has values outside [{limits.min}, {limits.max}] of {np.dtype(dtype).name}")
    return array.astype(dtype)


def _c_array(declaration: str, row_size: str, rows: np.ndarray) -> str:
    lines = [f"{declaration}[{len(rows)}][{row_size}] = {{\n"]
    for row in rows.tolist():
        lines.append("    {\n")
        for start in range(0, len(row), _VALUES_PER_LINE):
            lines.append("        " + ", ".join(map(str, row[start : start + _VALUES_PER_LINE])) + ",\n")
        lines.append("    },\n")
    lines.append("};\n\n")
    return "".join(lines)


def run_on_qemu(model_dir, inputs, logits, traces, work_dir, timeout_s: float = 600,
                head: HeadCheck | None = None) -> dict:
    """Build examples/firmware with the model in model_dir and these vectors, run it under QEMU.

    Returns {"n", "exact", "per_vector", "exit_status", "text", "data", "bss"}: exact counts the vectors
    whose logits and trace all matched; text + data is the flash image, data + bss the static RAM
    (both include the test vectors and newlib's printf, not only the model). With a head check, also "head":
    hs_set_head's status, whether a tampered copy was refused, the version, and n / exact after the update.
    """
    problem = toolchain_missing()
    if problem:
        raise HeartSightError(problem)
    model_dir = Path(model_dir).resolve()
    absent = [name for name in MODEL_FILES if not (model_dir / name).is_file()]
    if absent:
        raise HeartSightError(f"{model_dir} is not an exported model library: missing {', '.join(absent)}")

    work_dir = Path(work_dir).resolve()
    if " " in str(model_dir) + str(work_dir):
        raise HeartSightError(f"make cannot handle spaces in paths: move {model_dir} and {work_dir} to paths without spaces")
    shutil.copytree(FIRMWARE_DIR, work_dir, dirs_exist_ok=True, ignore=shutil.ignore_patterns("build"))
    shutil.rmtree(work_dir / "build", ignore_errors=True)  # never test a stale image
    write_vectors_c(work_dir / "vectors.c", inputs, logits, traces, head)

    build = _run(
        ["make", "-C", str(work_dir), "-j", f"MODEL_DIR={model_dir}", "VECTORS=vectors.c",
         *cmsis_make_variables(model_dir), "build/app.elf"],
        timeout_s,
        "the firmware build",
    )
    if build.returncode != 0:
        raise HeartSightError(
            f"the firmware build failed in {work_dir}: fix the C errors below (model in {model_dir})\n"
            + output_tail(build.stdout + build.stderr)
        )
    elf = work_dir / "build" / "app.elf"
    qemu = [*QEMU_COMMAND, "-icount", f"shift={ICOUNT_SHIFT}", "-kernel", str(elf)]
    result = _parse_output(_run(qemu, timeout_s, "QEMU"), qemu)
    result.update(section_sizes(elf))
    return result


def cmsis_directories() -> dict[str, Path]:
    """The firmware's own CMSIS-NN and CMSIS-Core, from the environment (CMSIS_NN_DIR, CMSIS_CORE_DIR), for exports
    made with --kernels cmsis-nn."""
    found = {name: Path(os.environ.get(name, "")) for name in ("CMSIS_NN_DIR", "CMSIS_CORE_DIR")}
    checks = {"CMSIS_NN_DIR": "Include/arm_nnfunctions.h", "CMSIS_CORE_DIR": "CMSIS/Core/Include/cmsis_compiler.h"}
    for name, path in found.items():
        if not os.environ.get(name) or not (path / checks[name]).is_file():
            raise HeartSightError(f"this export runs on CMSIS-NN: set {name} to your copy of "
                                  f"{'CMSIS-NN' if name == 'CMSIS_NN_DIR' else 'CMSIS-Core'} (the directory holding "
                                  f"{checks[name]}; got {os.environ.get(name) or 'nothing'})")
    return {name: path.resolve() for name, path in found.items()}


def cmsis_make_variables(model_dir: Path) -> list[str]:
    """make's CMSIS_NN_DIR=... CMSIS_CORE_DIR=... for a model library on CMSIS-NN (it holds hs_cmsis.c), else none."""
    if not (Path(model_dir) / "hs_cmsis.c").exists():
        return []
    return [f"{name}={path}" for name, path in cmsis_directories().items()]


def _run(command: list[str], timeout_s: float, what: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise HeartSightError(
            f"{what} did not finish within {timeout_s:g} s (the firmware may hang): "
            f"run `{' '.join(command)}` by hand to watch it, or raise timeout_s"
        ) from None


def _parse_output(run: subprocess.CompletedProcess, command: list[str]) -> dict:
    """Exit status 0 or 1 with a summary is a finished run; anything else (a fault: 2) is an error."""
    per_vector, summary, head, calibration = [], None, {}, None
    for line in run.stdout.splitlines():
        if match := _HEAD_LINE.match(line.strip()):
            status, refused, version = map(int, match.groups())
            head.update(status=status, refused_tampered=bool(refused), version=version)
        elif match := _HEAD_SUMMARY_LINE.match(line.strip()):
            head.update(zip(("n", "exact"), map(int, match.groups())))
        elif match := _CALIBRATION_LINE.match(line.strip()):
            calibration = tuple(map(int, match.groups()))
        if match := _VECTOR_LINE.match(line.strip()):
            index, predicted, logits_equal, trace_equal, infer, explain = map(int, match.groups())
            per_vector.append({"index": index, "class": predicted, "logits_equal": bool(logits_equal),
                               "trace_equal": bool(trace_equal), "ticks_infer": infer, "ticks_explain": explain})
        elif match := _SUMMARY_LINE.match(line.strip()):
            summary = tuple(map(int, match.groups()))
    if summary is None or calibration is None or run.returncode not in (0, 1) or len(per_vector) != summary[0]:
        raise HeartSightError(
            f"the firmware did not finish its checks under QEMU (exit status {run.returncode}, "
            f"{len(per_vector)} vectors reported): run `{' '.join(command)}` to see it\n"
            + output_tail(run.stdout + run.stderr)
        )
    per_tick = instructions_per_tick(*calibration, ICOUNT_SHIFT)
    for vector in per_vector:
        vector["instructions_infer"] = round(vector.pop("ticks_infer") * per_tick)
        vector["instructions_explain"] = round(vector.pop("ticks_explain") * per_tick)
    n, exact = summary
    result = {"n": n, "exact": exact, "per_vector": per_vector, "exit_status": run.returncode}
    if head:
        result["head"] = head
    return result


def instructions_per_tick(instructions: int, ticks: int, shift: int) -> float:
    """Instructions per SysTick tick under -icount shift (TICK_NS / 2^shift), checked against the firmware's
    calibration loop of a known number of instructions."""
    per_tick = TICK_NS / 2 ** shift
    if abs(ticks - instructions / per_tick) > CALIBRATION_TOLERANCE_TICKS:
        raise HeartSightError(f"SysTick did not count instructions: {ticks} ticks for {instructions} instructions, "
                              f"expected {instructions / per_tick:g} at -icount shift={shift} (mps2-an386's SysTick "
                              "at 25 MHz); is this QEMU's mps2-an386 run with -icount?")
    return per_tick


def section_sizes(elf: Path) -> dict:
    """arm-none-eabi-size prints a header line, then `text data bss dec hex filename`."""
    sizes = subprocess.run(["arm-none-eabi-size", str(elf)], capture_output=True, text=True, check=True)
    text, data, bss = sizes.stdout.splitlines()[1].split()[:3]
    return {"text": int(text), "data": int(data), "bss": int(bss)}


def output_tail(output: str, lines: int = 20) -> str:
    return "\n".join(output.strip().splitlines()[-lines:])
