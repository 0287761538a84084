"""Firmware export: int8 quantization, the integer reference, C99 code with an on-device explainer, verification.

`export` writes a self-contained C library (and the integer model it implements) for a zoo, compressed or
QAT model; `verify` checks that the library computes exactly what the integer reference computes, on this
computer and on an emulated Cortex-M4.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from firmware_export import reference
from firmware_export.codegen import format_report, static_report, write_c_library
from firmware_export.quantize import CALIBRATIONS, QuantizedModel, load_quantized, quantize_model, save_quantized
from models.registry import ModelSpec, get_spec, load_model
from sdk.data import mitdb, wrist
from sdk.errors import HeartSightError

CALIBRATION_WINDOWS = 2048
AF_CALIBRATION_RECORDS = ("201", "203", "106", "119")  # two AF and two non-AF DS1 records
AF_TEST_RECORDS = ("202", "219", "221", "100")  # DS2


class DoesNotFit(HeartSightError):
    """The export exceeds --max-flash or --max-ram; the message carries the report."""


def real_windows(spec: ModelSpec, purpose: str, data_root, n: int, seed: int = 0) -> np.ndarray:
    """Model inputs from the databases: training windows for calibration, held-out (DS2) ones for tests."""
    from sdk.training.datasets import af_dataset, beat_dataset, ppg_dataset

    if spec.task == "beat":
        dataset = beat_dataset(spec, mitdb.DS1 if purpose == "calibration" else mitdb.DS2, data_root)
    elif spec.task == "rhythm":
        dataset = af_dataset(spec, AF_CALIBRATION_RECORDS if purpose == "calibration" else AF_TEST_RECORDS, data_root)
    else:
        sessions = wrist.session_names(data_root)
        dataset = ppg_dataset(spec, sessions[: len(sessions) // 2] if purpose == "calibration" else sessions[len(sessions) // 2:],
                              data_root)
    rng = np.random.default_rng(seed)
    if spec.is_classifier:  # every class represented, the rare ones fully when they are few
        classes = np.unique(dataset.y)
        chosen = np.concatenate([rng.permutation(np.flatnonzero(dataset.y == k))[: max(1, n // len(classes))] for k in classes])
    else:
        chosen = rng.permutation(len(dataset.y))[:n]
    return dataset.x[np.sort(chosen)]


def export(model: str | os.PathLike, out_dir: str | os.PathLike, data_root=None, calibration: str = "minmax",
           max_flash: int | None = None, max_ram: int | None = None) -> dict:
    """Quantize and write the C library to out_dir; returns the static report. Refuses (DoesNotFit) an
    export over the flash or RAM budget before writing anything."""
    if calibration not in CALIBRATIONS:
        raise HeartSightError(f"unknown calibration {calibration!r}; choose {' or '.join(CALIBRATIONS)}")
    zoo = load_model(model)
    quantized = quantize_model(zoo, real_windows(zoo.spec, "calibration", data_root, CALIBRATION_WINDOWS), calibration)
    report = static_report(quantized)
    over = [f"{what} {report[key]:,} bytes > {limit:,}" for what, key, limit in
            (("flash", "flash_bytes", max_flash), ("RAM", "ram_bytes", max_ram)) if limit is not None and report[key] > limit]
    if over:
        raise DoesNotFit(f"{zoo.card.get('name', zoo.spec.name)} does not fit: {'; '.join(over)} (nothing written; "
                         "compress the model first, e.g. `heartsight compress --method qat --ratio 0.5`)\n" + format_report(report))
    report = write_c_library(quantized, out_dir)
    save_quantized(quantized, out_dir)
    return report


def _expected(quantized: QuantizedModel, x_q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    logits, last = reference.infer(quantized, x_q)
    return logits, reference.explain(quantized, last, logits.argmax(axis=1))


def verify(model_dir: str | os.PathLike, n: int = 32, qemu: bool = False, data_root=None) -> dict:
    """Run n real held-out windows through the C library (host, and QEMU when asked) against the integer reference."""
    from firmware_export.host import CModel, build_shared_library

    if n < 1:
        raise HeartSightError(f"--n must be at least 1, got {n}")
    model_dir = Path(model_dir)
    quantized = load_quantized(model_dir)
    spec = get_spec(quantized.source["architecture"])
    x = real_windows(spec, "test", data_root, n)[:n]
    expected_input = reference.quantize_input(quantized, x)
    logits, traces = _expected(quantized, expected_input)
    with tempfile.TemporaryDirectory() as work:
        library = CModel(build_shared_library(model_dir, Path(work) / "libmodel.so"), len(quantized.input_channels),
                         quantized.window, len(quantized.classes))
        host_input = library.quantize_input(x)
        host_logits, host_traces = library.infer(host_input, explain=True)
    exact = [np.array_equal(host_input[i], expected_input[i]) and np.array_equal(host_logits[i], logits[i])
             and np.array_equal(host_traces[i], traces[i]) for i in range(len(x))]
    report = static_report(quantized)
    result = {"model": quantized.source.get("model"), "host": {"n": len(x), "exact": int(sum(exact))},
              "flash_bytes": report["flash_bytes"], "ram_bytes": report["ram_bytes"], "macs": report["macs"]}
    if qemu:
        from firmware_export.target import run_on_qemu

        with tempfile.TemporaryDirectory() as work:
            target = run_on_qemu(model_dir.resolve(), expected_input, logits, traces, Path(work) / "firmware")
        result["qemu"] = {"n": target["n"], "exact": target["exact"], "text": target["text"], "data": target["data"],
                          "bss": target["bss"]}
    return result
