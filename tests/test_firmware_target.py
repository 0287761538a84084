"""examples/firmware builds for the Cortex-M4, runs under QEMU and reports bit-exactness per vector.

The model here is a small fake library with the exported API and a numpy twin, so these tests check
the harness, not the code generator.
"""

import shutil
import subprocess

import numpy as np
import pytest

from firmware_export.codegen import RUNTIME, RUNTIME_FILES
from firmware_export.target import FIRMWARE_DIR, instructions_per_tick, run_on_qemu, toolchain_missing, write_vectors_c
from sdk.errors import HeartSightError

MISSING_TOOLCHAIN = toolchain_missing()
needs_toolchain = pytest.mark.skipif(MISSING_TOOLCHAIN is not None, reason=str(MISSING_TOOLCHAIN))

CHANNELS, LENGTH, CLASSES = 3, 64, 4

FAKE_MODEL = {
    "heartsight_model.h": """\
#ifndef HEARTSIGHT_MODEL_H
#define HEARTSIGHT_MODEL_H
#include <stdint.h>
#define HS_INPUT_CHANNELS {channels}
#define HS_INPUT_LENGTH {length}
#define HS_NUM_CLASSES {classes}
void hs_quantize_input(const float *x, int8_t *q);
int hs_infer(const int8_t *input, int8_t *logits);
void hs_explain(int class_index, int16_t *trace);
#endif
""",
    "hs_kernels.h": """\
#ifndef HS_KERNELS_H
#define HS_KERNELS_H
#include <stdint.h>
int32_t hs_weighted_sum(const int8_t *x, int n, int32_t seed);
int8_t hs_saturate_int8(int32_t value);
#endif
""",
    "hs_kernels.c": """\
#include "hs_kernels.h"
int32_t hs_weighted_sum(const int8_t *x, int n, int32_t seed)
{{
    int32_t acc = 0;
    for (int t = 0; t < n; t++) {{
        acc += x[t] * ((seed * (t + 1)) % 7 - 3);
    }}
    return acc;
}}
int8_t hs_saturate_int8(int32_t value)
{{
    return (int8_t)(value > 127 ? 127 : value < -128 ? -128 : value);
}}
""",
    "heartsight_model.c": """\
#include "heartsight_model.h"
#include "hs_kernels.h"
static int16_t activation[HS_INPUT_LENGTH];
void hs_quantize_input(const float *x, int8_t *q)
{{
    for (int i = 0; i < HS_INPUT_CHANNELS * HS_INPUT_LENGTH; i++) {{
        float v = x[i] * 32.0f;
        v = v > 127.0f ? 127.0f : v < -128.0f ? -128.0f : v;
        q[i] = (int8_t)(v < 0.0f ? v - 0.5f : v + 0.5f);
    }}
}}
int hs_infer(const int8_t *input, int8_t *logits)
{{
    int best = 0;
    for (int t = 0; t < HS_INPUT_LENGTH; t++) {{
        int32_t sum = 0;
        for (int c = 0; c < HS_INPUT_CHANNELS; c++) {{
            sum += input[c * HS_INPUT_LENGTH + t] * (c + 1);
        }}
        activation[t] = (int16_t)sum;
    }}
    for (int k = 0; k < HS_NUM_CLASSES; k++) {{
        int32_t acc = 0;
        for (int c = 0; c < HS_INPUT_CHANNELS; c++) {{
            acc += hs_weighted_sum(input + c * HS_INPUT_LENGTH, HS_INPUT_LENGTH, k * HS_INPUT_CHANNELS + c + 1);
        }}
        logits[k] = hs_saturate_int8(acc >> 6);
        if (logits[k] > logits[best]) {{
            best = k;
        }}
    }}
    return best;
}}
void hs_explain(int class_index, int16_t *trace)
{{
    for (int t = 0; t < HS_INPUT_LENGTH; t++) {{
        trace[t] = (int16_t)(activation[t] * (class_index + 1));
    }}
}}
""",
}


def write_fake_model(directory, channels=CHANNELS, length=LENGTH, classes=CLASSES):
    directory.mkdir(parents=True, exist_ok=True)
    for name, source in FAKE_MODEL.items():
        (directory / name).write_text(source.format(channels=channels, length=length, classes=classes))
    for name in set(RUNTIME_FILES) - set(FAKE_MODEL):  # the head-update runtime, as every export ships it
        shutil.copyfile(RUNTIME / name, directory / name)
    return directory


def fake_reference(inputs, classes=CLASSES):
    """The fake library's arithmetic in numpy: expected logits and the trace of the arg-max class."""
    x = inputs.astype(np.int64)
    _, channels, length = x.shape
    activation = (x * np.arange(1, channels + 1)[None, :, None]).sum(axis=1)
    steps = np.arange(1, length + 1)
    logits = np.empty((len(x), classes), dtype=np.int64)
    for k in range(classes):
        seeds = k * channels + np.arange(1, channels + 1)
        weights = (seeds[:, None] * steps[None, :]) % 7 - 3
        logits[:, k] = np.clip((x * weights).sum(axis=(1, 2)) >> 6, -128, 127)
    predicted = logits.argmax(axis=1)  # the first maximum, as in the C loop
    return logits.astype(np.int8), (activation * (predicted + 1)[:, None]).astype(np.int16)


def random_inputs(n, seed=0):
    return np.random.default_rng(seed).integers(-128, 128, size=(n, CHANNELS, LENGTH), dtype=np.int8)


@needs_toolchain
def test_correct_vectors_all_match_and_exit_with_success(tmp_path):
    inputs = random_inputs(5)
    logits, traces = fake_reference(inputs)
    result = run_on_qemu(write_fake_model(tmp_path / "model"), inputs, logits, traces, tmp_path / "work", timeout_s=120)
    assert result["n"] == result["exact"] == 5
    assert result["exit_status"] == 0
    assert [v["class"] for v in result["per_vector"]] == logits.astype(int).argmax(axis=1).tolist()
    assert all(v["logits_equal"] and v["trace_equal"] for v in result["per_vector"])
    assert result["text"] > 0 and result["bss"] > 0


@needs_toolchain
def test_instructions_per_inference_are_counted_and_grow_with_the_work(tmp_path):
    """SysTick under -icount counts instructions (the calibration loop is checked inside run_on_qemu), to a tick (40
    instructions) either side: the fake model's loops run over the window, so every window of one length costs the
    same and a window twice as long costs twice the instructions."""
    tick = 40
    counts = {}
    for length in (LENGTH, 2 * LENGTH):
        inputs = np.random.default_rng(3).integers(-128, 128, size=(3, CHANNELS, length), dtype=np.int8)
        model = write_fake_model(tmp_path / f"model{length}", length=length)
        result = run_on_qemu(model, inputs, *fake_reference(inputs), tmp_path / f"work{length}", timeout_s=120)
        assert result["exact"] == 3
        counts[length] = np.array([(v["instructions_infer"], v["instructions_explain"]) for v in result["per_vector"]])
    for length, per_vector in counts.items():
        assert (per_vector.max(axis=0) - per_vector.min(axis=0) <= 2 * tick).all() and per_vector.min() > length
    short, long = counts[LENGTH].mean(axis=0), counts[2 * LENGTH].mean(axis=0)
    assert np.abs(long - 2 * short).max() <= 0.05 * long.max() + 4 * tick


def test_a_clock_that_does_not_count_instructions_is_refused():
    assert instructions_per_tick(200_000, 5_000, 0) == 40 and instructions_per_tick(200_000, 20_001, 2) == 10
    with pytest.raises(HeartSightError, match="did not count instructions.*-icount"):
        instructions_per_tick(200_000, 4_517, 0)  # host time, as without -icount


@needs_toolchain
def test_a_wrong_expected_value_is_reported_for_that_vector_only(tmp_path):
    inputs = random_inputs(4, seed=1)
    logits, traces = fake_reference(inputs)
    traces[1, LENGTH - 1] += 1
    logits[2, 0] = logits[2, 0] ^ 1
    result = run_on_qemu(write_fake_model(tmp_path / "model"), inputs, logits, traces, tmp_path / "work", timeout_s=120)
    flags = [(v["logits_equal"], v["trace_equal"]) for v in result["per_vector"]]
    assert flags == [(True, True), (True, False), (False, True), (True, True)]
    assert result["exact"] == 2
    assert result["exit_status"] == 1


@needs_toolchain
def test_a_compile_error_names_the_failing_line(tmp_path):
    model = write_fake_model(tmp_path / "model")
    (model / "hs_kernels.c").write_text((model / "hs_kernels.c").read_text() + "int unused_and_unterminated\n")
    inputs = random_inputs(1)
    with pytest.raises(HeartSightError, match=r"(?s)firmware build failed.*hs_kernels\.c"):
        run_on_qemu(model, inputs, *fake_reference(inputs), tmp_path / "work", timeout_s=120)


@needs_toolchain
def test_vectors_for_another_model_shape_do_not_compile(tmp_path):
    inputs = random_inputs(1)
    model = write_fake_model(tmp_path / "model", length=LENGTH * 2)
    with pytest.raises(HeartSightError, match="regenerate them for this model"):
        run_on_qemu(model, inputs, *fake_reference(inputs), tmp_path / "work", timeout_s=120)


@needs_toolchain
def test_make_without_vectors_says_how_to_get_them(tmp_path):
    model = write_fake_model(tmp_path / "model")
    work = shutil.copytree(FIRMWARE_DIR, tmp_path / "work")
    build = subprocess.run(
        ["make", "-C", str(work), f"MODEL_DIR={model}", f"VECTORS={tmp_path / 'absent.c'}", "build/app.elf"],
        capture_output=True,
        text=True,
    )
    assert build.returncode != 0
    assert "write_vectors_c" in build.stderr


def test_out_of_range_expected_values_are_refused(tmp_path):
    inputs = random_inputs(1)
    logits, traces = fake_reference(inputs)
    with pytest.raises(HeartSightError, match="outside"):
        write_vectors_c(tmp_path / "vectors.c", inputs, logits.astype(np.int32) + 200, traces)
