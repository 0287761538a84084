/* SHA-256 (FIPS 180-4) and HMAC-SHA256 (RFC 2104), portable C99 without malloc: how the device checks that a head
 * update was signed with its own key before it replaces the head it runs. */
#ifndef HS_SHA256_H
#define HS_SHA256_H

#include <stdint.h>

#define HS_SHA256_BYTES 32

typedef struct {
    uint32_t state[8];
    uint64_t length;  /* bytes hashed so far */
    uint8_t block[64];
    uint32_t used;  /* bytes waiting in block */
} hs_sha256_t;

void hs_sha256_init(hs_sha256_t *ctx);
void hs_sha256_update(hs_sha256_t *ctx, const uint8_t *data, uint32_t size);
void hs_sha256_final(hs_sha256_t *ctx, uint8_t digest[HS_SHA256_BYTES]);
void hs_hmac_sha256(const uint8_t *key, uint32_t key_size, const uint8_t *data, uint32_t size,
                    uint8_t mac[HS_SHA256_BYTES]);
/* 1 when the two digests are equal, in a time that does not depend on where they differ. */
int hs_digest_equal(const uint8_t a[HS_SHA256_BYTES], const uint8_t b[HS_SHA256_BYTES]);

#endif
