"""Firmware export: int8 quantization, the integer reference, C99 code with an on-device explainer, ONNX, verification.

`export` quantizes a zoo, compressed or QAT model once and writes its int8 artifact: the integer model, the
self-contained C library and the exact int8 ONNX graph generated from it (firmware_export.artifact); `verify`
checks that the library computes exactly what the integer reference computes, on this computer and on an
emulated Cortex-M4.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from firmware_export import reference
from firmware_export.artifact import check_writable, load_artifact, write_artifact
from firmware_export.codegen import check_kernels, format_report, static_report, write_c_library
from firmware_export.head_update import TASKS as HEAD_UPDATE_TASKS
from firmware_export.quantize import CALIBRATIONS, QuantizedModel, quantize_model
from models.registry import load_fold, load_model
from sdk.data.datasets import CALIBRATION_WINDOWS, calibration_description, sample_windows
from sdk.errors import HeartSightError

CMSIS_NN_SUBDIRECTORY = "cmsis_nn"  # where --kernels cmsis-nn writes the C library on CMSIS-NN
TEST_WINDOWS = 256  # held-out windows the ONNX graphs are checked on at export


class DoesNotFit(HeartSightError):
    """The export exceeds --max-flash or --max-ram; the message carries the report."""


def export(model: str | os.PathLike, out_dir: str | os.PathLike, data_root=None, calibration: str = "minmax",
           max_flash: int | None = None, max_ram: int | None = None, head_updates: bool = True,
           kernels: str = "portable") -> dict:
    """Quantize once and write the int8 artifact (firmware_export.artifact) to out_dir; returns its report.

    head_updates: a beat or rhythm model's library can replace its head at run time (hs_set_head), for ~2.2 KB of
    code and its head in RAM; without, the head is const in flash. kernels "cmsis-nn": also out_dir/cmsis_nn, the
    same library with its layers on Arm's CMSIS-NN (the portable one stays: the host runs and scores it).

    Refuses (DoesNotFit) an export over the flash or RAM budget before writing anything. A cross-validated
    model's fold models are exported beside it (out_dir/folds), quantized with the same calibration windows.
    """
    if calibration not in CALIBRATIONS:
        raise HeartSightError(f"unknown calibration {calibration!r}; choose {' or '.join(CALIBRATIONS)}")
    check_writable(out_dir)
    zoo = load_model(model)
    spec = zoo.spec
    calibration_x = sample_windows(spec, "calibration", data_root, CALIBRATION_WINDOWS)
    source = calibration_description(spec)
    quantized = quantize_model(zoo, calibration_x, calibration, source)
    head_updates = head_updates and spec.task in HEAD_UPDATE_TASKS
    check_kernels(quantized, kernels)  # before anything is written
    report = static_report(quantized, head_updates)
    over = [f"{what} {report[key]:,} bytes > {limit:,}" for what, key, limit in
            (("flash", "flash_bytes", max_flash), ("RAM", "ram_bytes", max_ram)) if limit is not None and report[key] > limit]
    if over:
        raise DoesNotFit(f"{zoo.card.get('name', spec.name)} does not fit: {'; '.join(over)} (nothing written; "
                         "compress the model first, e.g. `heartsight compress --method qat --ratio 0.5`"
                         + (", or export without head updates, --no-head-updates" if head_updates else "") + ")\n"
                         + format_report(report))
    test_x = sample_windows(spec, "test", data_root, TEST_WINDOWS)
    report = write_artifact(zoo, quantized, out_dir, test_x, head_updates=head_updates)
    if kernels == "cmsis-nn":
        write_c_library(quantized, Path(out_dir) / CMSIS_NN_SUBDIRECTORY, head_updates, report["int8_sha256"],
                        kernels=kernels)
    for k in range(len(zoo.card.get("folds", []))):
        fold_zoo = load_fold(zoo, k)
        write_artifact(fold_zoo, quantize_model(fold_zoo, calibration_x, calibration, source),
                       Path(out_dir) / "folds" / f"fold{k}", test_x, fold=True, head_updates=head_updates)
    return report


def verify(model_dir: str | os.PathLike, n: int = 32, qemu: bool = False, data_root=None) -> dict:
    """Run n real held-out windows through the C library (host, and QEMU when asked) against the integer reference;
    for a model whose head can be replaced, apply a signed head update (hs_set_head) and check them again."""
    from firmware_export.host import CModel, build_shared_library

    if n < 1:
        raise HeartSightError(f"--n must be at least 1, got {n}")
    model_dir = Path(model_dir)
    artifact = load_artifact(model_dir)
    if qemu and (model_dir / CMSIS_NN_SUBDIRECTORY).is_dir():
        from firmware_export.target import cmsis_directories

        cmsis_directories()  # CMSIS-NN missing is said before the minutes of work
    quantized = artifact.quantized
    x = sample_windows(artifact.spec, "test", data_root, n)[:n]
    expected_input = reference.quantize_input(quantized, x)
    logits, traces = reference.infer_and_explain(quantized, expected_input)
    head_updates = artifact.head_updates
    head = _head_check(quantized, expected_input) if head_updates else None
    with tempfile.TemporaryDirectory() as work:
        library = CModel(build_shared_library(model_dir, Path(work) / "libmodel.so"), len(quantized.input_channels),
                         quantized.window, len(quantized.classes))
        host_input = library.quantize_input(x)
        host_logits, host_traces = library.infer(host_input, explain=True)
        if head is not None:
            status = library.set_head(head.blob, head.key)
            head_logits, head_traces = library.infer(expected_input, explain=True)
    exact = [np.array_equal(host_input[i], expected_input[i]) and np.array_equal(host_logits[i], logits[i])
             and np.array_equal(host_traces[i], traces[i]) for i in range(len(x))]
    report = static_report(quantized, head_updates)
    result = {"model": quantized.source.get("model"), "host": {"n": len(x), "exact": int(sum(exact))},
              "flash_bytes": report["flash_bytes"], "ram_bytes": report["ram_bytes"], "macs": report["macs"]}
    if head is not None:
        result["host"]["head"] = {"status": status, "n": len(x), "exact": int(sum(
            np.array_equal(head_logits[i], head.logits[i]) and np.array_equal(head_traces[i], head.traces[i])
            for i in range(len(x))))}
    if qemu:  # the library, and the same model on CMSIS-NN's kernels when the export has it, its head too
        from firmware_export.target import run_on_qemu

        libraries = {"qemu": model_dir, "qemu_cmsis_nn": model_dir / CMSIS_NN_SUBDIRECTORY}
        for key, library in libraries.items():
            if not library.is_dir():
                continue
            with tempfile.TemporaryDirectory() as work:
                target = run_on_qemu(library.resolve(), expected_input, logits, traces, Path(work) / "firmware",
                                     head=head)
            result[key] = {"n": target["n"], "exact": target["exact"], "text": target["text"], "data": target["data"],
                           "bss": target["bss"], **instruction_counts(target["per_vector"], report["macs"])}
            if "head" in target:
                result[key]["head"] = target["head"]
    return result


def instruction_counts(per_vector: list[dict], macs: int) -> dict:
    """What one window costs on the Cortex-M4 (QEMU -icount: instructions, not cycles): hs_infer and hs_explain, the
    mean over the windows and their range, per MAC, the explainer's share, and the latency at 64 MHz with one cycle
    per instruction (a lower bound)."""
    infer = np.array([v["instructions_infer"] for v in per_vector], np.float64)
    explain = np.array([v["instructions_explain"] for v in per_vector], np.float64)
    return {"instructions_infer": round(float(infer.mean())), "instructions_explain": round(float(explain.mean())),
            "instructions_infer_range": [int(infer.min()), int(infer.max())],
            "instructions_per_mac": round(float(infer.mean()) / macs, 3),
            "explain_share": round(float(explain.mean() / infer.mean()), 5),
            "latency_ms_at_64mhz": round(float(infer.mean() + explain.mean()) / 64e3, 3)}


def _head_check(quantized: QuantizedModel, x_q: np.ndarray):
    """A head update unlike the exported head (its weights perturbed, seeded), signed with a test key, and what the
    integer reference computes with it: what verification applies with hs_set_head."""
    from firmware_export.head_update import encode, float_head, requantized_head
    from firmware_export.target import HeadCheck

    weight, bias = float_head(quantized)
    weight = weight + np.random.default_rng(0).normal(0, 0.5 * weight.std(), weight.shape)
    update = requantized_head(quantized, weight, bias, reference.pooled_embeddings(quantized, x_q), version=1)
    key = bytes(range(32))
    logits, traces = reference.infer_and_explain(update.applied_to(quantized), x_q)
    return HeadCheck(encode(update, key), key, logits, traces)
