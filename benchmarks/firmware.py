"""Every zoo model exported to int8 C: flash, RAM, MACs, bit-exactness on the host and on a Cortex-M4 (QEMU),
and the int8 C library scored by the model's own protocol next to the float model.

Writes benchmarks/results/firmware.md and .json. Usage: python -m benchmarks.firmware [DATA_DIR]
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from firmware_export import export, verify
from models.registry import ZOO_DIR
from sdk.training.recipes import evaluate

RESULTS = Path(__file__).resolve().parent / "results"
VERIFY_WINDOWS = 64


def _headline(result: dict) -> dict:
    if "per_class" in result:
        return {"accuracy": result["accuracy"], **{f"{k} F1": v["f1"] for k, v in result["per_class"].items()}}
    pooled = result["pooled"]
    return {k: pooled[k] for k in ("accuracy", "f1", "mae_bpm", "rmse_bpm") if k in pooled}


def main(argv: list[str]) -> None:
    data_root = argv[0] if argv else None
    rows = []
    for card in sorted(ZOO_DIR.glob("*/card.json")):
        name = card.parent.name
        with tempfile.TemporaryDirectory() as out:
            report = export(name, out, data_root)
            check = verify(out, VERIFY_WINDOWS, qemu=True, data_root=data_root)
        rows.append({"model": name, "quantization": report["quantization"], "flash_bytes": report["flash_bytes"],
                     "weights_bytes": report["flash"]["weights"], "ram_bytes": report["ram_bytes"],
                     "arena_bytes": report["ram"]["arena"], "macs": report["macs"], "host": check["host"],
                     "qemu": check["qemu"], "float": _headline(evaluate(name, data_root=data_root, progress=False)),
                     "int8_c": _headline(evaluate(name, data_root=data_root, progress=False, backend="c"))})
        (RESULTS / "firmware.json").write_text(json.dumps(rows, indent=1) + "\n")
    lines = ["# Firmware export: every zoo model as int8 C", "",
             f"Flash and RAM from the static report (code and stack estimated); bit-exactness on {VERIFY_WINDOWS} "
             "held-out windows against the integer reference, built with the host gcc and for a Cortex-M4 "
             "(arm-none-eabi-gcc, QEMU mps2-an386); QEMU image sizes include the test vectors and the harness. "
             "Scores by each model's protocol (ecg_beat: DS2; ecg_af, ppg_hr: held-out folds), float torch vs the "
             "int8 C library.", "",
             "| model | quantization | flash | weights | RAM | arena | MACs | host exact | Cortex-M4 exact | float | int8 C |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        scores = [", ".join(f"{k} {v:.3f}" for k, v in r[key].items()) for key in ("float", "int8_c")]
        lines.append(f"| {r['model']} | {r['quantization']} | {r['flash_bytes']:,} | {r['weights_bytes']:,} | "
                     f"{r['ram_bytes']:,} | {r['arena_bytes']:,} | {r['macs']:,} | {r['host']['exact']}/{r['host']['n']} | "
                     f"{r['qemu']['exact']}/{r['qemu']['n']} | {scores[0]} | {scores[1]} |")
    (RESULTS / "firmware.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
