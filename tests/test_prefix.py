"""Two exports under prefixes of their own link into one image and compute what the exports compute."""

from __future__ import annotations

import ctypes
import shutil
import subprocess

import numpy as np
import pytest

from firmware_export.host import STRICT_FLAGS, CModel, build_runtime_library, build_shared_library
from firmware_export.prefix import check_prefix, prefixed_source, write_prefixed
from firmware_export.target import ARCH_FLAGS
from sdk.errors import HeartSightError
from models.registry import ZOO_DIR

MODELS = {"beat_": "ecg_beat_wcam", "af_": "ecg_af"}


@pytest.fixture(scope="module")
def prefixed(tmp_path_factory):
    out = tmp_path_factory.mktemp("prefixed")
    return {prefix: write_prefixed(ZOO_DIR / name / "int8", prefix, out / prefix) for prefix, name in MODELS.items()}


def test_renames_every_name_include_and_guard():
    text = '#ifndef HEARTSIGHT_MODEL_H\n#include "hs_head.h"\n#include "heartsight_model.h"\nint hs_infer(void);\n' \
           "#define HS_ARENA_BYTES 9216\nstatic int8_t hs_arena[HS_ARENA_BYTES];\nthis_hs_name stays;\n"
    assert prefixed_source(text, "beat_") == (
        '#ifndef BEAT_MODEL_H\n#include "beat_head.h"\n#include "beat_model.h"\nint beat_infer(void);\n'
        "#define BEAT_ARENA_BYTES 9216\nstatic int8_t beat_arena[BEAT_ARENA_BYTES];\nthis_hs_name stays;\n")
    for bad in ("Beat_", "beat", "_beat_", "be at_", ""):
        with pytest.raises(HeartSightError, match="must be lower-case letters and digits ending in '_'"):
            check_prefix(bad)


def test_two_prefixed_models_in_one_library_match_their_exports(prefixed):
    files = [path for paths in prefixed.values() for path in paths]
    assert not any("hs_" in path.name or "heartsight" in path.name for path in files)
    library = build_runtime_library([], extra_sources=[p for p in files if p.suffix == ".c"])  # duplicates would not link
    rng = np.random.default_rng(0)
    for prefix, name in MODELS.items():
        export = ZOO_DIR / name / "int8"
        reference = CModel(build_shared_library(export), *_shape(export))
        channels, length, classes = _shape(export)
        x = rng.normal(0, 1, (4, channels, length)).astype(np.float32)
        x_q = reference.quantize_input(x)
        logits, traces = reference.infer(x_q, explain=True)
        quantize, infer, explain = (getattr(library, f"{prefix}{name}") for name in ("quantize_input", "infer",
                                                                                     "explain"))
        quantize.argtypes, infer.argtypes = [ctypes.c_void_p] * 2, [ctypes.c_void_p] * 2
        explain.argtypes = [ctypes.c_int, ctypes.c_void_p]
        for i in range(len(x)):
            q = np.zeros((channels, length), np.int8)
            quantize(x[i].ctypes.data, q.ctypes.data)
            out = np.zeros(classes, np.int8)
            predicted = infer(q.ctypes.data, out.ctypes.data)
            trace = np.zeros(length, np.int16)
            explain(predicted, trace.ctypes.data)
            assert np.array_equal(q, x_q[i]) and np.array_equal(out, logits[i]) and np.array_equal(trace, traces[i])


def _shape(export) -> tuple[int, int, int]:
    header = (export / "heartsight_model.h").read_text()
    value = lambda name: int(next(line.split()[2] for line in header.splitlines()  # noqa: E731
                                  if line.startswith(f"#define HS_{name} ")))
    return value("INPUT_CHANNELS"), value("INPUT_LENGTH"), value("NUM_CLASSES")


@pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None, reason="arm-none-eabi-gcc not installed")
def test_two_prefixed_models_link_for_the_cortex_m4(prefixed, tmp_path):
    objects = []
    for prefix, paths in prefixed.items():
        for source in (p for p in paths if p.suffix == ".c"):
            obj = tmp_path / f"{source.stem}.o"
            run = subprocess.run(["arm-none-eabi-gcc", *ARCH_FLAGS, *STRICT_FLAGS, "-O2", "-I", str(source.parent),
                                  "-c", str(source), "-o", str(obj)], capture_output=True, text=True)
            assert run.returncode == 0, run.stderr
            objects.append(str(obj))
    run = subprocess.run(["arm-none-eabi-ld", "-r", "-o", str(tmp_path / "both.o"), *objects], capture_output=True,
                         text=True)
    assert run.returncode == 0, run.stderr  # a symbol defined twice fails here


@pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake not installed (apt-get install -y cmake)")
def test_a_cmake_firmware_adds_two_prefixed_exports_as_subdirectories(prefixed, tmp_path):
    """What a firmware team does: add_subdirectory each export, link its NAME_model target, call its functions."""
    app = tmp_path / "app"
    app.mkdir()
    (app / "CMakeLists.txt").write_text(
        "cmake_minimum_required(VERSION 3.13)\nproject(app C)\n"
        + "".join(f"add_subdirectory({paths[0].parent} {prefix}model)\n" for prefix, paths in prefixed.items())
        + "add_executable(app main.c)\ntarget_compile_options(app PRIVATE -Wall -Wextra -Werror -pedantic)\n"
        + "target_link_libraries(app beat_model af_model)\n")
    (app / "main.c").write_text("""#include <stdio.h>
#include "beat_model.h"
#include "af_model.h"
static float beat_x[BEAT_INPUT_CHANNELS * BEAT_INPUT_LENGTH];
static float af_x[AF_INPUT_CHANNELS * AF_INPUT_LENGTH];
static int8_t beat_q[BEAT_INPUT_CHANNELS * BEAT_INPUT_LENGTH], af_q[AF_INPUT_CHANNELS * AF_INPUT_LENGTH];
int main(void) {
    int8_t beat_logits[BEAT_NUM_CLASSES], af_logits[AF_NUM_CLASSES];
    int i;
    for (i = 0; i < BEAT_INPUT_CHANNELS * BEAT_INPUT_LENGTH; i++) beat_x[i] = (float)(i % 7) * 0.1f;
    for (i = 0; i < AF_INPUT_CHANNELS * AF_INPUT_LENGTH; i++) af_x[i] = (float)(i % 5) * 0.1f;
    beat_quantize_input(beat_x, beat_q);
    af_quantize_input(af_x, af_q);
    printf("%s %d", BEAT_MODEL_NAME, beat_infer(beat_q, beat_logits));
    for (i = 0; i < BEAT_NUM_CLASSES; i++) printf(" %d", beat_logits[i]);
    printf("\\n%s %d", AF_MODEL_NAME, af_infer(af_q, af_logits));
    for (i = 0; i < AF_NUM_CLASSES; i++) printf(" %d", af_logits[i]);
    printf("\\n");
    return 0;
}
""")
    build = tmp_path / "build"
    for command in (["cmake", "-S", str(app), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release"],
                    ["cmake", "--build", str(build)]):
        run = subprocess.run(command, capture_output=True, text=True)
        assert run.returncode == 0, run.stdout + run.stderr
    lines = subprocess.run([str(build / "app")], capture_output=True, text=True, check=True).stdout.splitlines()
    for line, (prefix, name) in zip(lines, MODELS.items()):
        export = ZOO_DIR / name / "int8"
        channels, length, _ = _shape(export)
        x = (np.arange(channels * length) % (7 if prefix == "beat_" else 5) * np.float32(0.1)).astype(np.float32)
        reference = CModel(build_shared_library(export), channels, length, _shape(export)[2])
        logits, _ = reference.infer(reference.quantize_input(x.reshape(1, channels, length)))
        model_name, predicted, *values = line.split()
        assert model_name == name and int(predicted) == int(logits[0].argmax())
        assert [int(v) for v in values] == logits[0].tolist()


def test_each_library_is_a_zephyr_module_of_its_own(prefixed):
    import re

    for prefix, paths in prefixed.items():
        zephyr = paths[0].parent / "zephyr"
        assert (zephyr / "module.yml").read_text() == f"name: {prefix}model\nbuild:\n  cmake: zephyr\n"
        lists = (zephyr / "CMakeLists.txt").read_text()
        assert f"zephyr_library_named({prefix}model)" in lists
        sources = re.findall(r"\$\{CMAKE_CURRENT_LIST_DIR\}/\.\./(\S+?\.c)", lists)
        assert sorted(sources) == sorted(p.name for p in paths if p.suffix == ".c")
