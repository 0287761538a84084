"""Every zoo model's shipped int8 export: flash, RAM, MACs, bit-exactness on the host and on a Cortex-M4 (QEMU),
and the int8 model scored by the model's own protocol on the C library and on onnxruntime, next to the float model.

Writes benchmarks/results/firmware.md and .json. Usage: python -m benchmarks.firmware [DATA_DIR]
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

from benchmarks import machine
from firmware_export import CMSIS_NN_SUBDIRECTORY, verify
from firmware_export.artifact import ZOO_SUBDIRECTORY, load_artifact
from firmware_export.codegen import write_c_library
from models.registry import ZOO_DIR
from sdk.device.backends import evaluate

RESULTS = Path(__file__).resolve().parent / "results"
VERIFY_WINDOWS = 64


def _headline(result: dict) -> dict:
    if "per_class" in result:
        return {"accuracy": result["accuracy"], **{f"{k} F1": v["f1"] for k, v in result["per_class"].items()}}
    pooled = result["pooled"]
    return {k: pooled[k] for k in ("accuracy", "f1", "mae_bpm", "rmse_bpm") if k in pooled}


def _with_cmsis_nn(exported: Path, work: Path) -> Path:
    """The export as shipped if it ships a CMSIS-NN library, else a copy with one written for this run (every zoo model
    is dense), so that every model has its portable and CMSIS-NN figures."""
    if (exported / CMSIS_NN_SUBDIRECTORY).is_dir():
        return exported
    copy = work / exported.parent.name
    shutil.copytree(exported, copy)
    artifact = load_artifact(copy)
    write_c_library(artifact.quantized, copy / CMSIS_NN_SUBDIRECTORY, artifact.head_updates,
                    int8_sha256=artifact.sha256, kernels="cmsis-nn")
    return copy


def main(argv: list[str]) -> None:
    data_root = argv[0] if argv else None
    rows = []
    for card in sorted(ZOO_DIR.glob("*/card.json")):
        name = card.parent.name
        exported = card.parent / ZOO_SUBDIRECTORY
        report = json.loads((exported / "report.json").read_text())
        with tempfile.TemporaryDirectory() as work:
            check = verify(_with_cmsis_nn(exported, Path(work)), VERIFY_WINDOWS, qemu=True, data_root=data_root)
        rows.append({"model": name, "quantization": report["quantization"], "flash_bytes": report["flash_bytes"],
                     "weights_bytes": report["flash"]["weights"], "ram_bytes": report["ram_bytes"],
                     "arena_bytes": report["ram"]["arena"], "macs": report["macs"], "host": check["host"],
                     "qemu": check["qemu"], "qemu_cmsis_nn": check["qemu_cmsis_nn"],
                     "cmsis_nn_shipped": (exported / CMSIS_NN_SUBDIRECTORY).is_dir(),
                     "int8_sha256": report["int8_sha256"],
                     "float": _headline(evaluate(name, "torch", data_root=data_root)),
                     "int8_c": _headline(evaluate(name, "c", data_root=data_root)),
                     "int8_onnxruntime": _headline(evaluate(name, "onnxruntime", data_root=data_root))})
        (RESULTS / "firmware.json").write_text(json.dumps(rows, indent=1) + "\n")
    (RESULTS / "firmware.md").write_text(markdown(rows))


def _head_check(r: dict) -> str:
    """A signed head update applied with hs_set_head: windows exact with the new head, host and Cortex-M4."""
    if "head" not in r["host"]:
        return "— (not replaceable)"
    host, target = r["host"]["head"], r["qemu"]["head"]
    refused = ", tampered refused" if target["refused_tampered"] else ", TAMPERED ACCEPTED"
    return f"{host['exact']}/{host['n']} / {target['exact']}/{target['n']}{refused}"


def markdown(rows: list[dict]) -> str:
    lines = ["# Firmware export: every zoo model's shipped int8 export", "", f"Machine: {machine.describe()}.", "",
             f"Flash and RAM from the static report (code and stack estimated); bit-exactness on {VERIFY_WINDOWS} "
             "held-out windows against the integer reference, built with the host gcc and for a Cortex-M4 "
             "(arm-none-eabi-gcc, QEMU mps2-an386); QEMU image sizes include the test vectors and the harness. "
             "Scores by each model's protocol (ecg_beat: DS2; ecg_af, ppg_hr: held-out folds, each fold's own export), "
             "float torch vs the int8 export on the C library and on onnxruntime (the exact integer graph: the two "
             "int8 columns are equal by construction, measured here).", "",
             "| model | quantization | flash | weights | RAM | arena | MACs | host exact | Cortex-M4 exact | "
             "head update: host / Cortex-M4 exact | float | int8 C | int8 onnxruntime |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        scores = [", ".join(f"{k} {v:.3f}" for k, v in r[key].items()) for key in ("float", "int8_c", "int8_onnxruntime")]
        lines.append(f"| {r['model']} | {r['quantization']} | {r['flash_bytes']:,} | {r['weights_bytes']:,} | "
                     f"{r['ram_bytes']:,} | {r['arena_bytes']:,} | {r['macs']:,} | {r['host']['exact']}/{r['host']['n']} | "
                     f"{r['qemu']['exact']}/{r['qemu']['n']} | {_head_check(r)} | {scores[0]} | {scores[1]} | "
                     f"{scores[2]} |")
    lines += ["", "## Instructions per window on the Cortex-M4", "",
              "Counted under QEMU `-icount shift=0` (one instruction advances the virtual clock 1 ns) with SysTick "
              "(mps2-an386's 25 MHz processor clock: 40 instructions a tick), read before and after `hs_infer` and "
              "`hs_explain` for every window (examples/firmware/instruction_count.c); each run first times a "
              "`subs`/`bne` loop of 200,000 instructions and is refused unless it reads 5,000 ticks. Means over the "
              f"{VERIFY_WINDOWS} windows (every window within 1% of it). Latency at 64 MHz takes an instruction as a "
              "cycle: a lower bound (loads, multiplies and branches take more on a Cortex-M4). Portable: the generated "
              "C (hs_kernels.c; its explainer sums with SMLAD where the target has the DSP extension); CMSIS-NN: "
              "`--kernels cmsis-nn`, each convolution one `arm_nn_mat_mult_nt_t_s8` of the unmodified CMSIS-NN "
              "(its DSP-extension path, -mcpu=cortex-m4) over overlapping rows of the padded input, the pooling "
              "HeartSight's with SSUB8/SEL; bit-exact with the same reference. Only ecg_beat_wcam, the device model, "
              "ships a CMSIS-NN library; the others get one written for the run from the same integer model "
              "(made for this run).", "",
              "| model | MACs | portable: hs_infer | per MAC | hs_explain | explain share | ms at 64 MHz | "
              "CMSIS-NN: hs_infer | per MAC | exact | ms at 64 MHz | CMSIS-NN / portable |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|"]
    for r in rows:
        q, c = r["qemu"], r["qemu_cmsis_nn"]
        cmsis = (f"{c['instructions_infer']:,}{'' if r['cmsis_nn_shipped'] else ' (made for this run)'} | "
                 f"{c['instructions_per_mac']:.2f} | {c['exact']}/{c['n']} | "
                 f"{c['latency_ms_at_64mhz']:.1f} | {c['instructions_infer'] / q['instructions_infer']:.2f} |")
        lines.append(f"| {r['model']} | {r['macs']:,} | {q['instructions_infer']:,} | {q['instructions_per_mac']:.2f} | "
                     f"{q['instructions_explain']:,} | {100 * q['explain_share']:.2f}% | "
                     f"{q['latency_ms_at_64mhz']:.1f} | {cmsis}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main(sys.argv[1:])
