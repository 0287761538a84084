"""Seed methods 2-4 (unify, mpd, kernel-codebook): their trained structure, their C kernels against the dense
integer reference (host and Cortex-M4), their packed sizes, and the options they refuse."""

import ctypes
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import TOY
from firmware_export import reference
from firmware_export.codegen import (
    CODEBOOK_TIME_BLOCK,
    RUNTIME,
    conv_storage,
    pack_bits,
    static_report,
    write_c_library,
)
from firmware_export.host import HOST_OPTIMISATION, STRICT_FLAGS, CModel, build_shared_library
from firmware_export.quantize import QuantizedConv, quantize_model
from firmware_export.target import run_on_qemu, toolchain_missing
from models.architectures import GapCnn, convolutions, fold_batch_norm, predict
from models.quantization import calibrate, prepare_qat
from models.registry import ZooModel, get_spec, load_model
from models.structured import (
    GroupMask,
    KernelCodebook,
    UnifiedBlocks,
    parametrization,
    replace_weight_form,
    structure_of,
)
from sdk.compress import structured
from sdk.compress.methods import Plan, run
from sdk.errors import HeartSightError
from sdk.training.recipes import write_model



PLANS = {"kernel-codebook": Plan("kernel-codebook", 0.0, epochs=3, bits=3),
         "unify": Plan("unify", 0.0, epochs=3, block="channels:4", block_ratio=0.5),
         "unify-taps": Plan("unify", 0.0, epochs=3, block="taps:7", block_ratio=0.25),
         "mpd": Plan("mpd", 0.0, epochs=3, groups=2)}


@pytest.mark.parametrize("name", PLANS)
def test_each_method_trains_its_structure_classifies_and_reloads_from_its_card(toy, tmp_path, name):
    teacher, train, held_out = toy
    plan = PLANS[name]
    model, spec, history, _ = run(plan, TOY, teacher, train, held_out, progress=False)
    assert np.mean(predict(model, held_out.x).argmax(1) == held_out.y) > 0.9
    convs = convolutions(model)
    if plan.method == "kernel-codebook":
        assert [h["phase"] for h in history[:len(convs) - 1]] == [f"codebook layer {i}" for i in range(len(convs) - 1)]
        for conv in convs:
            form = parametrization(conv, KernelCodebook)
            codewords = torch.round(form.codewords(conv.parametrizations.weight.original) * 31)
            assert len(codewords) == 2 ** plan.bits and codewords.abs().max() <= 31
            assert torch.allclose(conv.weight, form.scale[:, None, None] / 31 * codewords[form.index], atol=1e-6)
    elif plan.method == "unify":
        axis, size = structured.parse_block(plan.block)
        assert [h["phase"] for h in history[:3]] == ["admm"] * 3
        assert parametrization(convs[0], UnifiedBlocks) is None  # the signal channels stay dense
        for conv in convs[1:]:
            form = parametrization(conv, UnifiedBlocks)
            weight = conv.weight.detach()
            blocks = weight.reshape(weight.shape[0], -1, size, weight.shape[2]).transpose(2, 3) if axis == "channels" \
                else weight.reshape(*weight.shape[:2], -1, size)
            magnitude = blocks.abs().amax(dim=-1, keepdim=True)
            assert torch.allclose(blocks.abs(), magnitude.expand_as(blocks))  # one magnitude per block
            pruned = float((magnitude == 0).float().mean())
            assert pruned >= plan.block_ratio - 0.02 and torch.equal(~form.alive, magnitude[..., 0] == 0)
    else:
        assert parametrization(convs[0], GroupMask) is None  # the signal channels stay dense
        for conv in convs[1:]:
            form = parametrization(conv, GroupMask)
            outside = form.out_group[:, None] != form.in_group[None, :]
            assert not conv.weight[outside].any()
            assert float((conv.weight != 0).float().mean()) <= 1 / plan.groups + 1e-6
    card = {"name": f"toy_{name}", "architecture": "ecg_beat", "widths": list(spec.widths),
            "quantization": {"method": "qat"}, "structure": structure_of(model)}
    write_model(tmp_path, model, card)
    reloaded = load_model(tmp_path).model
    x = torch.from_numpy(held_out.x[:16])
    assert torch.equal(reloaded(x), model(x))


def test_admm_pulls_the_weights_onto_the_unified_structure(toy):
    """With only the proximal term to minimise, the W-step moves W to Z - U and the rounds close the gap."""
    teacher, train, _ = toy
    model = prepare_qat(fold_batch_norm(teacher))
    admm = structured.Admm(model, "channels", 4, 0.5)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    distances = []
    for _ in range(4):
        for _ in range(100):
            optimizer.zero_grad()
            admm.penalty().backward()
            optimizer.step()
        distances.append(admm.update())
    assert distances[-1] < distances[0] / 10 and distances[-1] < 1e-3


# ---------------------------------------------------------------------------------------------------------- C kernels


@pytest.fixture(scope="module")
def kernels(tmp_path_factory):
    library = tmp_path_factory.mktemp("kernels") / "libkernels.so"
    subprocess.run(["gcc", *STRICT_FLAGS, *HOST_OPTIMISATION, "-shared", "-fPIC", "-o", str(library),
                    str(RUNTIME / "hs_kernels.c")], check=True)
    return ctypes.CDLL(str(library))


def _structured_layer(kind: str, kernel: int, rng: np.random.Generator) -> QuantizedConv:
    """A random convolution of 8 inputs and 6 outputs in one structure, its dense weight derived from the structure."""
    out, inputs = 6, 8
    if kind == "codebook":
        codebook = rng.integers(-31, 32, (8, kernel))
        index = rng.integers(0, 8, (out, inputs))
        weight, structure = codebook[index], {"kind": "codebook", "codebook": codebook.tolist(), "index": index.tolist()}
    elif kind in ("unify-channels", "unify-taps"):
        axis, size = ("channels", 4) if kind == "unify-channels" else ("taps", kernel)
        shape = (out, inputs // size, kernel) if axis == "channels" else (out, inputs, 1)
        magnitude = rng.integers(0, 128, shape) * (rng.random(shape) > 0.4)
        signs = rng.choice([-1, 1], (out, inputs, kernel))
        weight = torch.from_numpy(magnitude).repeat_interleave(size, dim=1 if axis == "channels" else 2).numpy() * signs
        structure = {"kind": "unify", "axis": axis, "size": size}
    else:
        groups = 2
        order = rng.permutation(inputs)
        weight = rng.integers(-127, 128, (out, inputs, kernel))
        group_of_input = np.empty(inputs, int)
        group_of_input[order] = np.arange(inputs) // (inputs // groups)
        weight[(np.arange(out)[:, None] // (out // groups)) != group_of_input[None, :]] = 0
        structure = {"kind": "grouped", "groups": groups, "input_order": order.tolist()}
    return QuantizedConv(weight=np.asarray(weight, np.int8), bias=rng.integers(-20000, 20000, out).astype(np.int32),
                         multiplier=rng.integers(2 ** 30, 2 ** 31, out).astype(np.int32),
                         shift=rng.integers(-12, -6, out).astype(np.int8), input_zero_point=int(rng.integers(-128, 128)),
                         output_scale=1.0, output_zero_point=int(rng.integers(-128, 0)),
                         pool_after=kind == "grouped-pooled", weight_scale=np.ones(out), structure=structure)


def _run_kernel(kernels, layer: QuantizedConv, x: np.ndarray) -> np.ndarray:
    out_channels, in_channels, kernel = layer.weight.shape
    length = x.shape[-1]
    out = np.zeros((out_channels, length // 2 if layer.pool_after else length), np.int8)
    arrays = {k: np.ascontiguousarray(v, dtype={"int8_t": np.int8, "uint8_t": np.uint8}[t])
              for k, (t, v) in conv_storage(layer).items()}
    common = [x.ctypes.data_as(ctypes.c_void_p), in_channels, length, layer.input_zero_point]
    tail = [layer.bias.ctypes.data_as(ctypes.c_void_p), layer.multiplier.ctypes.data_as(ctypes.c_void_p),
            layer.shift.ctypes.data_as(ctypes.c_void_p), out_channels, kernel, layer.output_zero_point,
            out.ctypes.data_as(ctypes.c_void_p)]
    kind = layer.structure["kind"]
    if kind == "codebook":
        codes = len(layer.structure["codebook"])
        scratch = np.zeros((out_channels + codes) * CODEBOOK_TIME_BLOCK, np.int32)
        window = np.zeros(CODEBOOK_TIME_BLOCK + kernel - 1, np.int16)
        kernels.hs_conv1d_codebook_relu(*common, arrays["codebook"].ctypes.data_as(ctypes.c_void_p), codes,
                                        arrays["index"].ctypes.data_as(ctypes.c_void_p), int(np.log2(codes)), *tail,
                                        scratch.ctypes.data_as(ctypes.c_void_p), window.ctypes.data_as(ctypes.c_void_p))
    elif kind == "unify":
        kernels.hs_conv1d_unified_relu(*common, arrays["magnitude"].ctypes.data_as(ctypes.c_void_p),
                                       arrays["signs"].ctypes.data_as(ctypes.c_void_p),
                                       int(layer.structure["axis"] == "taps"), layer.structure["size"], *tail)
    else:
        kernels.hs_conv1d_grouped_relu(*common, arrays["weight"].ctypes.data_as(ctypes.c_void_p),
                                       arrays["inputs"].ctypes.data_as(ctypes.c_void_p), layer.structure["groups"],
                                       *tail[:-1], int(layer.pool_after), tail[-1])
    return out


@pytest.mark.parametrize("kind", ["codebook", "unify-channels", "unify-taps", "grouped", "grouped-pooled"])
@pytest.mark.parametrize("kernel", [1, 3, 7])
@pytest.mark.parametrize("length", [1, 5, 16, 17, 70, 131])
def test_each_structured_kernel_equals_the_dense_reference_at_edges_and_partial_blocks(kernels, kind, kernel, length):
    rng = np.random.default_rng(kernel * 1000 + length)
    layer = _structured_layer(kind, kernel, rng)
    x = rng.integers(-128, 128, (1, layer.weight.shape[1], length)).astype(np.int8)
    assert np.array_equal(_run_kernel(kernels, layer, x[0]), reference.conv_block(layer, x)[0])


def test_packed_storage_counts_what_is_stored():
    rng = np.random.default_rng(0)
    assert pack_bits(np.array([1, 2, 3, 0, 7]), 3).tolist() == [0b11010001, 0b01110000]  # LSB first, 15 bits
    codebook = _structured_layer("codebook", 7, rng)
    stored = conv_storage(codebook)
    assert stored["index"][1].size == int(np.ceil(6 * 8 * 3 / 8)) and stored["codebook"][1].size == 8 * 7
    unified = _structured_layer("unify-channels", 7, rng)
    magnitude = conv_storage(unified)["magnitude"][1]
    assert magnitude.size == 6 * 2 * 7  # one byte per block
    assert conv_storage(unified)["signs"][1].size == int(np.ceil(np.count_nonzero(magnitude) * 4 / 8))
    grouped = _structured_layer("grouped", 7, rng)
    assert conv_storage(grouped)["weight"][1].size == 6 * 4 * 7 and conv_storage(grouped)["inputs"][1].size == 8
    with pytest.raises(AssertionError, match="codewords"):
        conv_storage(replace(codebook, weight=codebook.weight + np.int8(1)))


# ----------------------------------------------------------------------------------------- a model of every structure


def _model_of_every_structure() -> tuple[ZooModel, np.ndarray]:
    """A QAT GapCnn whose first layer is a kernel codebook, second unified and third grouped (MPD)."""
    spec = replace(get_spec("ecg_beat"), window=96, widths=(8, 8, 12))
    torch.manual_seed(0)
    model = prepare_qat(fold_batch_norm(GapCnn(4, spec.widths, 7, 4).eval()))
    model.head.parametrizations.weight.original.data.uniform_(-0.5, 1.0)
    x = np.random.default_rng(0).normal(0, 1, (48, 4, 96)).astype(np.float32)
    calibrate(model, [torch.from_numpy(x)])
    first, second, third = convolutions(model)
    with torch.no_grad():
        weight = first.weight.detach()
        codebook = torch.linspace(-1, 1, 8)[:, None] * torch.linspace(0.2, 1, 7)[None, :]
        index = torch.randint(0, 8, weight.shape[:2])
        replace_weight_form(model, first, KernelCodebook(index, weight.abs().amax(dim=(1, 2)), codebook))
        _, signs, alive, magnitude = structured.project_unified(second.weight.detach(), "channels", 4, 0.3)
        replace_weight_form(model, second, UnifiedBlocks("channels", 4, signs, alive, magnitude))
        replace_weight_form(model, third, GroupMask(torch.tensor([1, 0] * 6), torch.tensor([0, 1, 1, 0] * 2)))
    calibrate(model, [torch.from_numpy(x)])
    return ZooModel(spec, model.eval(), {"name": "every_structure", "version": "0", "sha256": "ab" * 32}, Path(".")), x


def test_a_model_of_every_structure_is_bit_exact_on_the_host_and_follows_its_float_model(tmp_path):
    zoo, x = _model_of_every_structure()
    quantized = quantize_model(zoo, x[:32])
    assert [c.structure["kind"] for c in quantized.convs] == ["codebook", "unify", "grouped"]
    report = write_c_library(quantized, tmp_path, head_updates=True)
    c_model = CModel(build_shared_library(tmp_path), 4, 96, 4)
    x_q = reference.quantize_input(quantized, x)
    logits, traces = c_model.infer(x_q, explain=True)
    expected, last = reference.infer(quantized, x_q)
    assert np.array_equal(logits, expected)
    assert np.array_equal(traces, reference.explain(quantized, last, expected.argmax(1)))
    with torch.no_grad():
        float_logits = zoo.model(torch.from_numpy(x)).numpy()
    assert np.mean(expected.argmax(1) == float_logits.argmax(1)) > 0.9
    assert report["conv_weights"]["kernels"] == ["codebook", "grouped", "unify"]
    assert report["conv_weights"]["stored_bytes"] == sum(
        values.size for c in quantized.convs for _, values in conv_storage(c).values())
    assert report["conv_weights"]["bits_per_weight"] < 8
    source = (tmp_path / "heartsight_model.c").read_text()
    assert "hs_conv1d_codebook_relu" in source and "hs_conv1d_unified_relu" in source
    assert "hs_conv1d_grouped_relu" in source and "hs_conv1d_relu(" not in source


@pytest.mark.skipif(toolchain_missing() is not None, reason=str(toolchain_missing()))
def test_a_model_of_every_structure_is_bit_exact_on_a_cortex_m4(tmp_path):
    zoo, x = _model_of_every_structure()
    quantized = quantize_model(zoo, x[:32])
    write_c_library(quantized, tmp_path / "model", head_updates=False)
    x_q = reference.quantize_input(quantized, x[:8])
    logits, last = reference.infer(quantized, x_q)
    result = run_on_qemu(tmp_path / "model", x_q, logits, reference.explain(quantized, last, logits.argmax(1)),
                         tmp_path / "firmware")
    assert result["n"] == result["exact"] == 8


def test_the_report_counts_the_kernels_a_model_links():
    zoo, x = _model_of_every_structure()
    quantized = quantize_model(zoo, x[:32])
    dense = replace(quantized, convs=[replace(c, structure=None) for c in quantized.convs])
    structured_report, dense_report = static_report(quantized, False), static_report(dense, False)
    assert structured_report["flash"]["weights"] < dense_report["flash"]["weights"]
    assert dense_report["conv_weights"] == {**dense_report["conv_weights"], "bits_per_weight": 8.0, "kernels": ["dense"]}
    assert structured_report["ram"]["scratch"] > dense_report["ram"]["scratch"]  # the codebook kernel's scratch


# --------------------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("plan, message", [
    (Plan("unify", 0.5, block="rows:4"), "--block must be"),
    (Plan("unify", 0.5, block="channels:0"), "--block must be"),
    (Plan("unify", 0.5, block_ratio=1.0), "--block-ratio"),
    (Plan("mpd", 0.5, groups=1), "--groups must be at least 2"),
    (Plan("kernel-codebook", 0.5, bits=9), "--bits"),
    (Plan("kernel-codebook", 1.0), "--ratio"),
])
def test_bad_structured_plans_are_refused(plan, message):
    with pytest.raises(HeartSightError, match=message):
        plan.check()


@pytest.mark.parametrize("plan, message", [
    (Plan("unify", 0.5, block="channels:3"), "does not divide the layer: conv 1 has 16 output channels, 8 input"),
    (Plan("unify", 0.5, block="taps:2"), "does not divide the layer.*7 taps"),
    (Plan("mpd", 0.5, groups=64), "cannot split the layer into equal groups: conv 1"),
    (Plan("mpd", 0.0, groups=3), "cannot split the layer into equal groups"),
    (Plan("kernel-codebook", 0.5, bits=6), "64 codewords but conv 0 has .*32 kernels; choose --bits 5"),
])
def test_options_the_layers_cannot_honour_are_refused_with_the_layer(plan, message):
    with pytest.raises(HeartSightError, match=message):
        plan.check_fits(get_spec("ecg_beat"))


def test_the_command_line_refuses_them_before_reading_data(tmp_path, heartsight_main):
    run = heartsight_main("compress", "--method", "kernel-codebook", "--bits", 8, "--out", tmp_path / "x",
                          "--data-dir", tmp_path / "nowhere")
    assert run.returncode == 2 and "256 codewords" in run.stderr and "Traceback" not in run.stderr
    assert not (tmp_path / "x").exists()


@pytest.mark.skipif(toolchain_missing() is not None, reason=str(toolchain_missing()))
def test_the_code_and_stack_tables_of_the_report_are_what_the_cortex_m4_compiler_gives(tmp_path):
    """The static report's per-kernel code bytes and stack, measured again (another gcc may differ a little)."""
    from firmware_export.codegen import CODE_BYTES_BY_KERNEL, SHARED_CONV_CODE_BYTES, STACK_BYTES_BY_KERNEL
    from firmware_export.target import ARCH_FLAGS

    subprocess.run(["arm-none-eabi-gcc", "-std=c99", "-O2", *ARCH_FLAGS, "-ffunction-sections", "-fstack-usage", "-c",
                    str(RUNTIME / "hs_kernels.c"), "-o", str(tmp_path / "kernels.o")], check=True, cwd=tmp_path)
    symbols = subprocess.run(["arm-none-eabi-nm", "-S", str(tmp_path / "kernels.o")], capture_output=True, text=True,
                             check=True).stdout.split("\n")
    size = {line.split()[3]: int(line.split()[1], 16) for line in symbols if len(line.split()) == 4}
    stack = {line.split("\t")[0].rsplit(":", 1)[-1]: int(line.split("\t")[1])
             for line in (tmp_path / "kernels.su").read_text().splitlines()}
    functions = {"dense": "hs_conv1d_relu", "grouped": "hs_conv1d_grouped_relu", "codebook": "hs_conv1d_codebook_relu",
                 "unify": "hs_conv1d_unified_relu"}
    for kind, function in functions.items():
        assert size[function] == pytest.approx(CODE_BYTES_BY_KERNEL[kind], rel=0.15), kind
        own = stack[function] + (stack["conv1d_channel"] if kind in ("dense", "grouped") else 0)
        assert own == pytest.approx(STACK_BYTES_BY_KERNEL[kind], rel=0.15), kind
    assert size["conv1d_channel"] == pytest.approx(SHARED_CONV_CODE_BYTES["conv1d_channel"], rel=0.15)
