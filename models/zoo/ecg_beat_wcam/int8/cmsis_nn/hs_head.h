/* Head updates: checking the signed blob that replaces a model's head at run time (layout in
 * firmware_export/head_update.py). The generated hs_set_head calls hs_head_check, then copies the head in. */
#ifndef HS_HEAD_H
#define HS_HEAD_H

#include <stdint.h>

#define HS_HEAD_OK 0
#define HS_HEAD_BAD_FORMAT 1     /* not a head update: wrong magic or length */
#define HS_HEAD_BAD_SHAPE 2      /* classes or channels differ from this model's */
#define HS_HEAD_BAD_SIGNATURE 3  /* not signed with this device's key */
#define HS_HEAD_BAD_BACKBONE 4   /* fitted on another backbone */
#define HS_HEAD_STALE 5          /* older than the head in use */
#define HS_HEAD_BAD_VALUES 6     /* a scale, shift or multiplier no integer head can have */

#define HS_HEAD_PREFIX_BYTES 52  /* magic, classes, channels, version, backbone sha256, logit scale, zero point */
#define HS_HEAD_BLOB_SIZE(classes, channels) (HS_HEAD_PREFIX_BYTES + (classes) * (channels) + 20 * (classes) + 32)

uint32_t hs_read_u32le(const uint8_t *p);
float hs_read_f32le(const uint8_t *p);
/* HS_HEAD_OK when blob is a well-formed update for a head of classes x channels on this backbone, signed with key
 * (HMAC-SHA256), no older than current_version; otherwise the first failed check's code. Reads blob only. */
int hs_head_check(const uint8_t *blob, uint32_t size, int classes, int channels, const uint8_t backbone_sha256[32],
                  uint32_t current_version, const uint8_t *key, uint32_t key_size);

#endif
