/* SHA-256 and HMAC-SHA256; see hs_sha256.h. */
#include <string.h>
#include "hs_sha256.h"

static const uint32_t round_constants[64] = {
    0x428a2f98u, 0x71374491u, 0xb5c0fbcfu, 0xe9b5dba5u, 0x3956c25bu, 0x59f111f1u, 0x923f82a4u, 0xab1c5ed5u,
    0xd807aa98u, 0x12835b01u, 0x243185beu, 0x550c7dc3u, 0x72be5d74u, 0x80deb1feu, 0x9bdc06a7u, 0xc19bf174u,
    0xe49b69c1u, 0xefbe4786u, 0x0fc19dc6u, 0x240ca1ccu, 0x2de92c6fu, 0x4a7484aau, 0x5cb0a9dcu, 0x76f988dau,
    0x983e5152u, 0xa831c66du, 0xb00327c8u, 0xbf597fc7u, 0xc6e00bf3u, 0xd5a79147u, 0x06ca6351u, 0x14292967u,
    0x27b70a85u, 0x2e1b2138u, 0x4d2c6dfcu, 0x53380d13u, 0x650a7354u, 0x766a0abbu, 0x81c2c92eu, 0x92722c85u,
    0xa2bfe8a1u, 0xa81a664bu, 0xc24b8b70u, 0xc76c51a3u, 0xd192e819u, 0xd6990624u, 0xf40e3585u, 0x106aa070u,
    0x19a4c116u, 0x1e376c08u, 0x2748774cu, 0x34b0bcb5u, 0x391c0cb3u, 0x4ed8aa4au, 0x5b9cca4fu, 0x682e6ff3u,
    0x748f82eeu, 0x78a5636fu, 0x84c87814u, 0x8cc70208u, 0x90befffau, 0xa4506cebu, 0xbef9a3f7u, 0xc67178f2u};

static uint32_t rotate_right(uint32_t x, int n)
{
    return (x >> n) | (x << (32 - n));
}

/* The message schedule is kept as a ring of 16 words (w[i] for i >= 16 overwrites w[i - 16]): 64 bytes of stack
 * instead of 256, for microcontrollers. */
static void compress(uint32_t state[8], const uint8_t block[64])
{
    uint32_t w[16];
    uint32_t a, b, c, d, e, f, g, h;
    int i;
    for (i = 0; i < 16; i++) {
        w[i] = ((uint32_t)block[4 * i] << 24) | ((uint32_t)block[4 * i + 1] << 16) | ((uint32_t)block[4 * i + 2] << 8)
               | (uint32_t)block[4 * i + 3];
    }
    a = state[0]; b = state[1]; c = state[2]; d = state[3];
    e = state[4]; f = state[5]; g = state[6]; h = state[7];
    for (i = 0; i < 64; i++) {
        uint32_t t1;
        if (i >= 16) {
            const uint32_t w15 = w[(i - 15) & 15], w2 = w[(i - 2) & 15];
            const uint32_t s0 = rotate_right(w15, 7) ^ rotate_right(w15, 18) ^ (w15 >> 3);
            const uint32_t s1 = rotate_right(w2, 17) ^ rotate_right(w2, 19) ^ (w2 >> 10);
            w[i & 15] += s0 + w[(i - 7) & 15] + s1;
        }
        t1 = h + (rotate_right(e, 6) ^ rotate_right(e, 11) ^ rotate_right(e, 25)) + ((e & f) ^ (~e & g))
             + round_constants[i] + w[i & 15];
        const uint32_t t2 = (rotate_right(a, 2) ^ rotate_right(a, 13) ^ rotate_right(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        h = g; g = f; f = e; e = d + t1;
        d = c; c = b; b = a; a = t1 + t2;
    }
    state[0] += a; state[1] += b; state[2] += c; state[3] += d;
    state[4] += e; state[5] += f; state[6] += g; state[7] += h;
}

void hs_sha256_init(hs_sha256_t *ctx)
{
    static const uint32_t initial[8] = {0x6a09e667u, 0xbb67ae85u, 0x3c6ef372u, 0xa54ff53au,
                                        0x510e527fu, 0x9b05688cu, 0x1f83d9abu, 0x5be0cd19u};
    memcpy(ctx->state, initial, sizeof(initial));
    ctx->length = 0;
    ctx->used = 0;
}

void hs_sha256_update(hs_sha256_t *ctx, const uint8_t *data, uint32_t size)
{
    uint32_t i;
    for (i = 0; i < size; i++) {
        ctx->block[ctx->used++] = data[i];
        if (ctx->used == 64) {
            compress(ctx->state, ctx->block);
            ctx->used = 0;
        }
    }
    ctx->length += size;
}

void hs_sha256_final(hs_sha256_t *ctx, uint8_t digest[HS_SHA256_BYTES])
{
    static const uint8_t end_mark = 0x80, zero = 0;
    uint8_t length[8];
    const uint64_t bits = ctx->length * 8u;
    int i;
    for (i = 0; i < 8; i++) {
        length[i] = (uint8_t)(bits >> (56 - 8 * i));
    }
    /* 0x80, zeros up to 56 bytes into a block, then the length: every compression happens in update */
    hs_sha256_update(ctx, &end_mark, 1);
    while (ctx->used != 56) {
        hs_sha256_update(ctx, &zero, 1);
    }
    hs_sha256_update(ctx, length, 8);
    for (i = 0; i < 8; i++) {
        digest[4 * i] = (uint8_t)(ctx->state[i] >> 24);
        digest[4 * i + 1] = (uint8_t)(ctx->state[i] >> 16);
        digest[4 * i + 2] = (uint8_t)(ctx->state[i] >> 8);
        digest[4 * i + 3] = (uint8_t)ctx->state[i];
    }
}

void hs_hmac_sha256(const uint8_t *key, uint32_t key_size, const uint8_t *data, uint32_t size,
                    uint8_t mac[HS_SHA256_BYTES])
{
    /* pass 0: the inner hash of (key ^ ipad, data); pass 1: the outer hash of (key ^ opad, inner hash). One loop, so
     * the hash calls appear once in the code (flash matters on the device). */
    static const uint8_t pad_flip[2] = {0x36, 0x36 ^ 0x5c};
    uint8_t padded[64];
    uint8_t inner[HS_SHA256_BYTES];
    hs_sha256_t ctx;
    int i, pass;
    memset(padded, 0, sizeof(padded));
    if (key_size > 64) {  /* a long key is hashed first */
        hs_sha256_init(&ctx);
        hs_sha256_update(&ctx, key, key_size);
        hs_sha256_final(&ctx, padded);
    } else if (key_size > 0) {
        memcpy(padded, key, key_size);
    }
    for (pass = 0; pass < 2; pass++) {
        for (i = 0; i < 64; i++) {
            padded[i] ^= pad_flip[pass];
        }
        hs_sha256_init(&ctx);
        hs_sha256_update(&ctx, padded, 64);
        hs_sha256_update(&ctx, pass == 0 ? data : inner, pass == 0 ? size : HS_SHA256_BYTES);
        hs_sha256_final(&ctx, pass == 0 ? inner : mac);
    }
}

int hs_digest_equal(const uint8_t a[HS_SHA256_BYTES], const uint8_t b[HS_SHA256_BYTES])
{
    uint8_t difference = 0;
    int i;
    for (i = 0; i < HS_SHA256_BYTES; i++) {
        difference |= (uint8_t)(a[i] ^ b[i]);
    }
    return difference == 0;
}
