/* Head update checks; see hs_head.h. */
#include <string.h>
#include "hs_head.h"
#include "hs_sha256.h"

uint32_t hs_read_u32le(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

float hs_read_f32le(const uint8_t *p)
{
    const uint32_t bits = hs_read_u32le(p);
    float value;
    memcpy(&value, &bits, sizeof(value));
    return value;
}

static int finite_positive(float value)
{
    return value == value && value > 0.0f && value <= 3.4e38f;
}

int hs_head_check(const uint8_t *blob, uint32_t size, int classes, int channels, const uint8_t backbone_sha256[32],
                  uint32_t current_version, const uint8_t *key, uint32_t key_size)
{
    const uint32_t expected = (uint32_t)HS_HEAD_BLOB_SIZE(classes, channels);
    const uint8_t *arrays;
    uint8_t mac[HS_SHA256_BYTES];
    int32_t zero_point;
    int c;
    if (blob == 0 || size < HS_HEAD_PREFIX_BYTES + HS_SHA256_BYTES || memcmp(blob, "HSH1", 4) != 0) {
        return HS_HEAD_BAD_FORMAT;
    }
    if ((blob[4] | (blob[5] << 8)) != classes || (blob[6] | (blob[7] << 8)) != channels || size != expected) {
        return HS_HEAD_BAD_SHAPE;
    }
    hs_hmac_sha256(key, key_size, blob, size - HS_SHA256_BYTES, mac);
    if (!hs_digest_equal(mac, blob + size - HS_SHA256_BYTES)) {
        return HS_HEAD_BAD_SIGNATURE;
    }
    if (memcmp(blob + 12, backbone_sha256, 32) != 0) {
        return HS_HEAD_BAD_BACKBONE;
    }
    if (hs_read_u32le(blob + 8) < current_version) {
        return HS_HEAD_STALE;
    }
    zero_point = (int32_t)hs_read_u32le(blob + 48);
    if (!finite_positive(hs_read_f32le(blob + 44)) || zero_point < -128 || zero_point > 127) {
        return HS_HEAD_BAD_VALUES;
    }
    arrays = blob + HS_HEAD_PREFIX_BYTES + classes * channels;  /* bias, multiplier, shift, trace shift, scale */
    for (c = 0; c < classes; c++) {
        const int32_t multiplier = (int32_t)hs_read_u32le(arrays + 4 * (classes + c));
        const int32_t shift = (int32_t)hs_read_u32le(arrays + 4 * (2 * classes + c));
        const int32_t trace_shift = (int32_t)hs_read_u32le(arrays + 4 * (3 * classes + c));
        if (multiplier < 0 || shift < -31 || shift > 31 || trace_shift < 0 || trace_shift > 31
            || !finite_positive(hs_read_f32le(arrays + 4 * (4 * classes + c)))) {
            return HS_HEAD_BAD_VALUES;
        }
    }
    return HS_HEAD_OK;
}
