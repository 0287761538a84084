"""A per-patient head for an exported model: re-quantized on the untouched int8 backbone, and sent to the device as
a small signed blob that replaces the head it runs, without reflashing (hs_set_head in C, Monitor.set_head).

The blob, little-endian, for a model of C classes on a last block of K channels:

    magic "HSH1" | classes u16 | channels u16 | version u32 | backbone sha256 (32 bytes) | logit scale f32 |
    logit zero point i32 | weight int8 [C*K] | bias i32 [C] | multiplier i32 [C] | shift i32 [C] |
    trace shift i32 [C] | weight scale f32 [C] | HMAC-SHA256 of everything before it, under the device's key (32)

The signature is an HMAC under a key that only the device and the clinic's signing service hold (provisioned with
the device), so a blob made for one device is refused by every other. The backbone sha256 (`backbone_sha256`) names
the integer backbone the head was fitted on; a device running another backbone refuses it. The version increases
with every update; a device refuses one older than the head it runs, and alerts report the version they were made
with (0 is the head the model was exported with).
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import os
import secrets
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from firmware_export.quantize import QuantizedModel, quantize_head
from sdk.errors import HeartSightError

MAGIC = b"HSH1"
SIGNATURE_BYTES = 32
_PREFIX = struct.Struct("<4sHHI32sfi")
EXPORTED_VERSION = 0
TASKS = ("beat", "rhythm")  # models whose head is a decision layer worth refitting (not heart rate's 384 bins)
# hs_set_head's status codes, in the order of its checks; the Python side refuses with the same reasons.
STATUS = {0: "ok", 1: "not a head update (wrong magic or length)", 2: "shape does not match this model",
          3: "signature does not match this device's key", 4: "fitted on another backbone",
          5: "older than the head in use", 6: "values out of range"}


class HeadRefused(HeartSightError):
    """A head update the device will not apply; `status` is hs_set_head's code for the reason."""

    def __init__(self, status: int, detail: str):
        super().__init__(f"head update refused: {STATUS[status]} ({detail}); the device keeps its last good head")
        self.status = status


@dataclass(frozen=True)
class HeadUpdate:
    """One head for one backbone: the integer fields hs_infer and hs_explain read, and its version."""

    version: int
    backbone_sha256: str
    fields: dict  # the QuantizedModel fields firmware_export.quantize.HEAD_FIELDS names

    def applied_to(self, model: QuantizedModel) -> QuantizedModel:
        """The integer model with this head in place of its own (the backbone must be the one it was fitted on)."""
        _check_backbone(self.backbone_sha256, model)
        if self.fields["head_weight"].shape != model.head_weight.shape:
            raise HeadRefused(2, f"weight {self.fields['head_weight'].shape}, model {model.head_weight.shape}")
        return dataclasses.replace(model, **self.fields)


def backbone_sha256(model: QuantizedModel) -> str:
    """sha256 of everything in the integer model but its head: the input quantization and the convolution blocks."""
    def plain(value):
        return value.tolist() if isinstance(value, np.ndarray) else value
    backbone = {"input_scale": model.input_scale, "input_zero_point": model.input_zero_point,
                "window": model.window, "input_channels": list(model.input_channels),
                "convs": [{k: plain(v) for k, v in dataclasses.asdict(c).items() if v is not None} for c in model.convs]}
    return hashlib.sha256(json.dumps(backbone, sort_keys=True).encode()).hexdigest()


def _check_backbone(fitted_on: str, model: QuantizedModel) -> None:
    own = backbone_sha256(model)
    if fitted_on != own:
        raise HeadRefused(4, f"fitted on {fitted_on[:12]}…, this model's is {own[:12]}…")


def float_head(model: QuantizedModel) -> tuple[np.ndarray, np.ndarray]:
    """(weight, bias) in real units of the integer model's head, on the pooled embeddings."""
    weight = model.head_weight * model.head_weight_scale[:, None]
    return weight, model.head_bias * model.last.output_scale * model.head_weight_scale


def requantized_head(model: QuantizedModel, weight: np.ndarray, bias: np.ndarray, embeddings: np.ndarray,
                     version: int) -> HeadUpdate:
    """A float head (on the pooled embeddings, real units) quantized for this backbone; its logit range is calibrated
    on the embeddings it was fitted on. Scales are float32, as the blob carries them."""
    if version <= EXPORTED_VERSION:
        raise HeartSightError(f"a head update's version must be above {EXPORTED_VERSION} (the exported head's)")
    logits = np.asarray(embeddings, np.float64) @ np.asarray(weight).T + np.asarray(bias)
    fields = quantize_head(weight, bias, model.last.output_scale, model.last_length,
                           (float(logits.min(initial=0.0)), float(logits.max(initial=0.0))))
    fields["head_weight_scale"] = fields["head_weight_scale"].astype(np.float32).astype(np.float64)
    fields["logit_scale"] = float(np.float32(fields["logit_scale"]))
    return HeadUpdate(int(version), backbone_sha256(model), fields)


def encode(update: HeadUpdate, key: bytes) -> bytes:
    """The signed blob of a head update for the device holding `key`."""
    f = update.fields
    classes, channels = f["head_weight"].shape
    body = b"".join([
        _PREFIX.pack(MAGIC, classes, channels, update.version, bytes.fromhex(update.backbone_sha256),
                     f["logit_scale"], f["logit_zero_point"]),
        f["head_weight"].astype(np.int8).tobytes(),
        *(np.asarray(f[name], "<i4").tobytes() for name in ("head_bias", "head_multiplier", "head_shift", "trace_shift")),
        np.asarray(f["head_weight_scale"], "<f4").tobytes()])
    return body + hmac.new(_checked_key(key), body, hashlib.sha256).digest()


def decode(blob: bytes, key: bytes, model: QuantizedModel, current_version: int = EXPORTED_VERSION) -> HeadUpdate:
    """The head update in a blob, checked as hs_set_head checks it (same order, same status codes)."""
    classes, channels = model.head_weight.shape
    if len(blob) < _PREFIX.size + SIGNATURE_BYTES or blob[:4] != MAGIC:
        raise HeadRefused(1, f"{len(blob)} bytes starting {bytes(blob[:4])!r}")
    _, blob_classes, blob_channels, version, backbone, logit_scale, logit_zero_point = _PREFIX.unpack_from(blob)
    if (blob_classes, blob_channels) != (classes, channels) or len(blob) != blob_bytes(classes, channels):
        raise HeadRefused(2, f"{blob_classes} classes x {blob_channels} channels in {len(blob)} bytes; this model has "
                             f"{classes} x {channels} in {blob_bytes(classes, channels)}")
    body, signature = blob[:-SIGNATURE_BYTES], blob[-SIGNATURE_BYTES:]
    if not hmac.compare_digest(hmac.new(_checked_key(key), body, hashlib.sha256).digest(), signature):
        raise HeadRefused(3, "HMAC-SHA256 differs")
    _check_backbone(backbone.hex(), model)
    if version < current_version:
        raise HeadRefused(5, f"version {version}, the device runs {current_version}")
    offset = _PREFIX.size
    weight = np.frombuffer(body, np.int8, classes * channels, offset).reshape(classes, channels)
    offset += classes * channels
    arrays = {}
    for name in ("head_bias", "head_multiplier", "head_shift", "trace_shift"):
        arrays[name] = np.frombuffer(body, "<i4", classes, offset).astype(np.int32)
        offset += 4 * classes
    weight_scale = np.frombuffer(body, "<f4", classes, offset).astype(np.float64)
    if not (np.isfinite(logit_scale) and logit_scale > 0 and -128 <= logit_zero_point <= 127
            and np.all(arrays["head_multiplier"] >= 0) and np.all(np.abs(arrays["head_shift"]) <= 31)
            and np.all((arrays["trace_shift"] >= 0) & (arrays["trace_shift"] <= 31))
            and np.all(np.isfinite(weight_scale)) and np.all(weight_scale > 0)):
        raise HeadRefused(6, "a scale, shift or multiplier no integer head can have")
    fields = {"head_weight": weight.copy(), **arrays, "head_weight_scale": weight_scale,
              "logit_scale": float(logit_scale), "logit_zero_point": int(logit_zero_point)}
    return HeadUpdate(int(version), backbone.hex(), fields)


def blob_bytes(classes: int, channels: int) -> int:
    return _PREFIX.size + classes * channels + 20 * classes + SIGNATURE_BYTES


def _checked_key(key: bytes) -> bytes:
    if not isinstance(key, (bytes, bytearray)) or len(key) < 16:
        raise HeartSightError("a device's head-signing key must be at least 16 bytes; make one with "
                              "`heartsight clinician key --device D --out FILE` and provision it with the device")
    return bytes(key)


def write_key(path: str | os.PathLike) -> bytes:
    """A new random device key, written as hex to path (readable by its owner only); refuses to overwrite one."""
    path = Path(path)
    key = secrets.token_bytes(32)
    try:
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as out:
            out.write(key.hex() + "\n")
    except FileExistsError:
        raise HeartSightError(f"{path} already holds a key; a device keeps its key (delete the file to replace it, "
                              "and provision the device again)") from None
    except OSError as error:
        raise HeartSightError(f"cannot write the key to {path}: {error.strerror or error}") from None
    return key


def read_key(path: str | os.PathLike) -> bytes:
    """A device key from its file (hex, as write_key writes it)."""
    try:
        text = Path(path).read_text().strip()
    except OSError as error:
        raise HeartSightError(f"cannot read the head key {path}: {error.strerror or error}; make one with "
                              "`heartsight clinician key --device D --out FILE`") from None
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise HeartSightError(f"{path} is not a head key: it must hold the key as hex digits "
                              "(`heartsight clinician key` writes one)") from None
    return _checked_key(key)
