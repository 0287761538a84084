"""Per-patient heads: re-quantized on the shipped int8 backbone, signed, and applied by the C library (hs_set_head)
bit-exactly with the integer reference; every malformed, foreign or stale update is refused and the head kept."""

import dataclasses
import hashlib
import hmac
import struct

import numpy as np
import pytest

from firmware_export import reference
from firmware_export.artifact import artifact_of
from firmware_export.head_update import (
    STATUS,
    HeadRefused,
    backbone_sha256,
    blob_bytes,
    decode,
    encode,
    float_head,
    requantized_head,
)
from firmware_export.codegen import HEAD_UPDATE_CODE_BYTES, write_c_library
from firmware_export.host import CModel, build_shared_library
from models.registry import load_model
from sdk.errors import HeartSightError

KEY = bytes(range(32))


@pytest.fixture(scope="module")
def wcam():
    """The shipped device model's integer form, its C library, and some int8 windows of its input shape."""
    artifact = artifact_of(load_model("ecg_beat_wcam"))
    quantized = artifact.quantized
    library = build_shared_library(artifact.directory)
    rng = np.random.default_rng(0)
    x_q = rng.integers(-128, 128, (6, len(quantized.input_channels), quantized.window)).astype(np.int8)
    return quantized, library, x_q


def _c_model(quantized, library) -> CModel:
    return CModel(library, len(quantized.input_channels), quantized.window, len(quantized.classes))


def _refitted(quantized, x_q, version=1, seed=1):
    """A head unlike the exported one (random weights), quantized on embeddings of these windows."""
    embeddings = reference.pooled_embeddings(quantized, x_q)
    rng = np.random.default_rng(seed)
    weight = rng.normal(size=quantized.head_weight.shape)
    return requantized_head(quantized, weight, rng.normal(size=len(quantized.classes)), embeddings, version)


def _resigned(blob: bytes, key: bytes = KEY) -> bytes:
    body = blob[:-32]
    return body + hmac.new(key, body, hashlib.sha256).digest()


def test_a_blob_round_trips_and_has_the_documented_size(wcam):
    quantized, _, x_q = wcam
    update = _refitted(quantized, x_q)
    blob = encode(update, KEY)
    assert len(blob) == blob_bytes(*quantized.head_weight.shape)
    back = decode(blob, KEY, quantized)
    assert back.version == 1 and back.backbone_sha256 == backbone_sha256(quantized)
    for name, value in update.fields.items():
        np.testing.assert_array_equal(back.fields[name], value)


def test_the_c_library_applies_a_head_bit_exactly_with_the_reference(wcam):
    quantized, library, x_q = wcam
    update = _refitted(quantized, x_q, version=3)
    device = _c_model(quantized, library)
    assert device.head_version == 0
    assert device.set_head(encode(update, KEY), KEY) == 0
    assert device.head_version == 3
    expected = update.applied_to(quantized)
    logits, last = reference.infer(expected, x_q)
    traces = reference.explain(expected, last, logits.argmax(1))
    device_logits, device_traces = device.infer(x_q, explain=True)
    np.testing.assert_array_equal(device_logits, logits)
    np.testing.assert_array_equal(device_traces, traces)
    original, _ = reference.infer(quantized, x_q)
    assert not np.array_equal(logits, original)  # the head really changed
    # another instance of the same library still runs the exported head
    np.testing.assert_array_equal(_c_model(quantized, library).infer(x_q)[0], original)


def _bad_blobs(quantized, x_q) -> dict[int, bytes]:
    update = _refitted(quantized, x_q, version=5)
    good = encode(update, KEY)
    wider = np.pad(update.fields["head_weight"], ((0, 0), (0, 1)))
    wrong_shape = dataclasses.replace(update, fields={**update.fields, "head_weight": wider})
    other_backbone = dataclasses.replace(quantized, input_zero_point=quantized.input_zero_point + 1)
    out_of_range = _refitted(quantized, x_q, version=6)
    out_of_range.fields["head_shift"][0] = 40
    return {
        1: b"HSH0" + good[4:],
        2: encode(wrong_shape, KEY),
        3: good[:-1] + bytes([good[-1] ^ 1]),
        4: encode(_refitted(other_backbone, x_q), KEY),
        5: _resigned(good[:8] + struct.pack("<I", 2) + good[12:]),
        6: encode(out_of_range, KEY),
    }


def test_every_bad_update_is_refused_for_its_reason_and_the_last_good_head_kept(wcam):
    quantized, library, x_q = wcam
    device = _c_model(quantized, library)
    good = encode(_refitted(quantized, x_q, version=4), KEY)
    assert device.set_head(good, KEY) == 0
    before = device.infer(x_q, explain=True)
    for status, blob in _bad_blobs(quantized, x_q).items():
        assert device.set_head(blob, KEY) == status, STATUS[status]
        with pytest.raises(HeadRefused) as refused:
            decode(blob, KEY, quantized, current_version=4)
        assert refused.value.status == status
        assert "keeps its last good head" in str(refused.value)
        assert device.head_version == 4
        for kept, was in zip(device.infer(x_q, explain=True), before):
            np.testing.assert_array_equal(kept, was)
    assert device.set_head(good, b"another device's key!!") == 3
    assert device.set_head(good[:-1], KEY) == 2


def test_a_head_needs_a_version_and_a_real_key(wcam):
    quantized, _, x_q = wcam
    with pytest.raises(HeartSightError, match="version must be above 0"):
        _refitted(quantized, x_q, version=0)
    with pytest.raises(HeartSightError, match="at least 16 bytes"):
        encode(_refitted(quantized, x_q), b"short")


def test_a_library_exported_without_head_updates_keeps_its_head_in_flash_and_says_so(wcam, tmp_path):
    quantized, _, x_q = wcam
    with_updates = write_c_library(quantized, tmp_path / "updates", head_updates=True)
    without = write_c_library(quantized, tmp_path / "fixed", head_updates=False)
    assert "#define HS_HEAD_UPDATES 0" in (tmp_path / "fixed" / "heartsight_model.h").read_text()
    assert "static const hs_head_t hs_head" in (tmp_path / "fixed" / "heartsight_model.c").read_text()
    assert without["ram"]["head"] == 0 and with_updates["ram"]["head"] == quantized.head_weight.size + 20 * 4 + 12
    assert with_updates["flash_bytes"] - without["flash_bytes"] == HEAD_UPDATE_CODE_BYTES
    device = _c_model(quantized, build_shared_library(tmp_path / "fixed"))
    np.testing.assert_array_equal(device.infer(x_q)[0], reference.infer(quantized, x_q)[0])
    with pytest.raises(HeartSightError, match="not replaceable"):
        device.set_head(encode(_refitted(quantized, x_q), KEY), KEY)


def test_the_monitor_applies_a_head_mid_stream_and_its_alerts_say_which(wcam):
    from sdk.data import synthetic
    from sdk.device.alerts import Alert
    from sdk.device.monitor import AlertEvent, Monitor

    quantized, _, x_q = wcam
    ecg = synthetic.synthetic_ecg(120, 360.0, heart_rate=75, ectopic={"V": 0.2}, seed=3).signal
    monitor = Monitor("ecg_beat_wcam", fs=360.0, backend="onnxruntime")
    before: list[Alert] = []
    after: list[Alert] = []
    # the exported head itself, refitted as version 2: the beats keep their labels, so alerts go on after the update
    weight, bias = float_head(quantized)
    embeddings = reference.pooled_embeddings(quantized, x_q)
    blob = encode(requantized_head(quantized, weight, bias, embeddings, version=2), KEY)
    for start in range(0, len(ecg), 360):
        if start == 60 * 360:
            with pytest.raises(HeadRefused, match="signature"):
                monitor.set_head(blob, b"not this device's key")
            assert monitor.set_head(blob, KEY).version == 2
        raised = [e.alert for e in monitor.feed(ecg[start: start + 360]) if isinstance(e, AlertEvent)]
        (before if start < 60 * 360 else after).extend(raised)
    after += [e.alert for e in monitor.finish() if isinstance(e, AlertEvent)]
    assert before and after  # alerts raised before the update carry the exported head, those after the new one
    assert {a.model["head_version"] for a in before} == {0} and {a.model["head_version"] for a in after} == {2}
    with pytest.raises(HeartSightError, match="run ecg_beat_wcam on the c or onnxruntime backend"):
        Monitor("ecg_beat_wcam", fs=360.0, backend="torch").set_head(b"HSH1", KEY)
