"""The integer reference: the specification every backend must match bit for bit (numpy, integers only).

Convolutions are evaluated as float64 matrix products of integers: every product and sum stays below
2**53, so the result is the exact integer (and fast, through BLAS). Rounding follows TensorFlow Lite's
reference kernels (SaturatingRoundingDoublingHighMul, then RoundingDivideByPOT).
"""

from __future__ import annotations

import numpy as np

from firmware_export.quantize import QuantizedConv, QuantizedModel

INT8_MIN, INT8_MAX = -128, 127
INT16_MAX = 32767
BATCH = 256  # windows per block of work: keeps the intermediate arrays in cache


def saturating_rounding_doubling_high_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(a * b * 2 + 2**31) >> 32 with the nudge and truncation of gemmlowp; int32 in, int32 out."""
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    product = a * b
    nudge = np.where(product >= 0, 1 << 30, 1 - (1 << 30))
    total = product + nudge
    high = np.where(total >= 0, total >> 31, -((-total) >> 31))  # C's division truncates toward zero
    overflow = (a == -(1 << 31)) & (b == -(1 << 31))
    return np.where(overflow, (1 << 31) - 1, high)


def rounding_divide_by_pot(x: np.ndarray, exponent: np.ndarray) -> np.ndarray:
    """x / 2**exponent rounded to nearest, ties away from zero (gemmlowp's RoundingDivideByPOT)."""
    x, exponent = np.asarray(x, np.int64), np.asarray(exponent, np.int64)
    mask = (np.int64(1) << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> exponent) + (remainder > threshold)


def requantize(acc: np.ndarray, multiplier: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """acc * real multiplier, as MultiplyByQuantizedMultiplier: left shift, high multiply, rounding right shift."""
    shift = np.asarray(shift, np.int64)
    left = np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    shifted = np.clip(np.asarray(acc, np.int64) << left, -(1 << 31), (1 << 31) - 1)
    return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(shifted, multiplier), right)


def quantize_input(model: QuantizedModel, x: np.ndarray) -> np.ndarray:
    """float (N, C, L) -> int8, exactly as hs_quantize_input: float32 x * (1/scale), round half away, + zero point."""
    inverse = np.float32(1.0 / model.input_scale)
    with np.errstate(over="ignore"):  # huge inputs overflow to inf, as in C, and are clamped next
        v = np.nan_to_num(np.asarray(x, np.float32), nan=0.0) * inverse
    v = np.clip(v, np.float32(-256.0), np.float32(256.0))
    whole = np.trunc(v)
    fraction = v - whole  # exact in float32
    rounded = whole.astype(np.int64) + (fraction >= 0.5) - (fraction <= -0.5)
    return np.clip(rounded + model.input_zero_point, INT8_MIN, INT8_MAX).astype(np.int8)


def conv_block(layer: QuantizedConv, x: np.ndarray) -> np.ndarray:
    """int8 (N, C, L) -> int8 (N, O, L): 'same' convolution, bias, requantize, fused ReLU; max-pool 2 if the block has one."""
    n, channels, length = x.shape
    out_channels, _, kernel = layer.weight.shape
    pad = kernel // 2
    centred = np.zeros((n, channels, length + 2 * pad), np.float64)  # padding is the zero point: (x - z) = 0
    centred[:, :, pad: pad + length] = x.astype(np.float64) - layer.input_zero_point
    weight = layer.weight.astype(np.float64)
    acc = np.zeros((n, out_channels, length), np.float64)
    for tap in range(kernel):  # exact integers: every partial sum stays far below 2**53
        acc += np.matmul(weight[:, :, tap], centred[:, :, tap: tap + length])
    acc = np.rint(acc).astype(np.int64) + layer.bias[None, :, None]
    scaled = requantize(acc, layer.multiplier[None, :, None], layer.shift[None, :, None])
    out = np.clip(scaled + layer.output_zero_point, max(INT8_MIN, layer.output_zero_point), INT8_MAX).astype(np.int8)
    if layer.pool_after:
        out = out[:, :, : (length // 2) * 2].reshape(n, out_channels, length // 2, 2).max(axis=-1)
    return out


def _features(model: QuantizedModel, x_q: np.ndarray) -> np.ndarray:
    for layer in model.convs:
        x_q = conv_block(layer, x_q)
    return x_q


def infer(model: QuantizedModel, x_q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(int8 logits (N, classes), the last block's int8 activations (N, K, T)) for int8 inputs (N, C, L)."""
    h = np.concatenate([_features(model, part) for part in np.array_split(np.asarray(x_q, np.int8),
                                                                           max(1, len(x_q) // BATCH))])
    sums = (h.astype(np.int64) - model.last.output_zero_point).sum(axis=-1)  # (N, K)
    acc = sums @ model.head_weight.astype(np.int64).T + model.last_length * model.head_bias.astype(np.int64)[None, :]
    logits = requantize(acc, model.head_multiplier[None, :], model.head_shift[None, :]) + model.logit_zero_point
    return np.clip(logits, INT8_MIN, INT8_MAX).astype(np.int8), h


def infer_and_explain(model: QuantizedModel, x_q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(int8 logits, int16 trace of each window's predicted class): what hs_infer then hs_explain(predicted) give."""
    logits, last = infer(model, x_q)
    return logits, explain(model, last, logits.argmax(axis=1))


def explain(model: QuantizedModel, last: np.ndarray, class_index: np.ndarray) -> np.ndarray:
    """int16 (N, L) traces: the class activation map in integers, ReLU, >> trace_shift, linearly upsampled to L.

    Upsampling follows torch's linear interpolation with align_corners=False, in integer arithmetic:
    source position (2 d + 1) T / (2 L) - 1/2, clamped at 0, rounded half up.
    """
    class_index = np.asarray(class_index, np.int64)
    centred = last.astype(np.int64) - model.last.output_zero_point  # (N, K, T)
    cam = np.einsum("nk,nkt->nt", model.head_weight.astype(np.int64)[class_index], centred)
    shift = model.trace_shift.astype(np.int64)[class_index][:, None]
    coarse = np.minimum(rounding_divide_by_pot(np.maximum(cam, 0), shift), INT16_MAX)
    length, t = model.window, model.last_length
    denominator = 2 * length
    numerator = np.maximum((2 * np.arange(length) + 1) * t - length, 0)
    left = numerator // denominator
    fraction = numerator % denominator
    right = np.minimum(left + 1, t - 1)
    upsampled = (coarse[:, left] * (denominator - fraction) + coarse[:, right] * fraction + denominator // 2) // denominator
    return upsampled.astype(np.int16)


def dequantize_logits(model: QuantizedModel, logits: np.ndarray) -> np.ndarray:
    return (logits.astype(np.float64) - model.logit_zero_point) * model.logit_scale


def pooled_embeddings(model: QuantizedModel, x_q: np.ndarray) -> np.ndarray:
    """(N, K) float: the last block's activations averaged over time, in real units: what the head reads (and a
    refitted head is fitted on), computed exactly as every int8 backend computes it."""
    parts = [(infer(model, x_q[i: i + BATCH])[1].astype(np.int64) - model.last.output_zero_point).sum(axis=-1)
             for i in range(0, len(x_q), BATCH)]
    return embeddings_of_sums(model, np.concatenate(parts) if parts else np.zeros((0, model.last.weight.shape[0])))


def embeddings_of_sums(model: QuantizedModel, sums: np.ndarray) -> np.ndarray:
    """Pooled embeddings in real units from the last block's activations summed over time (hs_last_sums)."""
    return sums * model.last.output_scale / model.last_length
