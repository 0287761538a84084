/* HeartSight int8 kernels; see hs_kernels.h. */
#include <string.h>
#include "hs_kernels.h"

#define HS_INT8_MIN (-128)
#define HS_INT8_MAX 127
#define HS_INT16_MAX 32767
#define HS_TIME_BLOCK 64

static int32_t saturating_rounding_doubling_high_mul(int32_t a, int32_t b)
{
    int64_t product;
    int64_t nudge;
    if (a == INT32_MIN && b == INT32_MIN) {
        return INT32_MAX;
    }
    product = (int64_t)a * (int64_t)b;
    nudge = product >= 0 ? (1LL << 30) : (1LL - (1LL << 30));
    return (int32_t)((product + nudge) / (1LL << 31));
}

static int32_t rounding_divide_by_pot(int32_t x, int32_t exponent)
{
    const int32_t mask = (int32_t)((1LL << exponent) - 1);
    const int32_t remainder = x & mask;
    const int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
    return (x >> exponent) + (remainder > threshold ? 1 : 0);
}

int32_t hs_requantize(int32_t acc, int32_t multiplier, int32_t shift)
{
    const int32_t left = shift > 0 ? shift : 0;
    const int32_t right = shift > 0 ? 0 : -shift;
    int64_t shifted = (int64_t)acc * (1LL << left);
    if (shifted > INT32_MAX) {
        shifted = INT32_MAX;
    } else if (shifted < INT32_MIN) {
        shifted = INT32_MIN;
    }
    return rounding_divide_by_pot(saturating_rounding_doubling_high_mul((int32_t)shifted, multiplier), right);
}

static int8_t clamp_int8(int32_t value, int32_t low)
{
    if (value < low) {
        value = low;
    }
    return (int8_t)(value > HS_INT8_MAX ? HS_INT8_MAX : value);
}

/* Input row i of a convolution: rows == NULL reads the channels in order, else rows[i] names the channel. */
static const int8_t *input_row(const int8_t *input, const uint8_t *rows, int i, int length)
{
    return input + (rows != 0 ? rows[i] : i) * length;
}

/* One output sample where some taps fall in the padding: only the taps inside the signal contribute. */
static int32_t conv_at_edge(const int8_t *input, const uint8_t *rows, int in_channels, int length,
                            int32_t input_zero_point, const int8_t *w_out, int kernel, int t)
{
    const int pad = kernel / 2;
    const int first = t - pad < 0 ? pad - t : 0;
    const int last = t - pad + kernel > length ? length - t + pad : kernel;
    int32_t acc = 0;
    int i, k;
    for (i = 0; i < in_channels; i++) {
        const int8_t *x = input_row(input, rows, i, length) + t - pad;
        const int8_t *w = w_out + i * kernel;
        for (k = first; k < last; k++) {
            acc += (int32_t)w[k] * ((int32_t)x[k] - input_zero_point);
        }
    }
    return acc;
}

/* Interior samples [pad, end) see every tap; the samples outside it are the edges. */
static int interior_end(int length, int kernel)
{
    const int pad = kernel / 2;
    return length - (kernel - 1 - pad) > pad ? length - (kernel - 1 - pad) : pad;
}

/* Four neighbouring interior outputs t .. t + 3 of one output channel, without bias: each weight and each sample is
 * loaded once and the four sums stay in registers, over a sliding window of four samples whose roles rotate; four taps
 * bring them back to where they started, so those need no register moves. */
static void conv_four(const int8_t *input, const uint8_t *rows, int in_channels, int length, const int8_t *w_out,
                      int kernel, int t, int32_t *acc)
{
    int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
    int i, k;
    for (i = 0; i < in_channels; i++) {
        const int8_t *x = input_row(input, rows, i, length) + t - kernel / 2;
        const int8_t *w = w_out + i * kernel;
        int32_t x0 = x[0], x1 = x[1], x2 = x[2], x3, w_k;
        for (k = 0; k + 4 <= kernel; k += 4) {
            w_k = w[k];
            x3 = x[k + 3];
            a0 += w_k * x0;
            a1 += w_k * x1;
            a2 += w_k * x2;
            a3 += w_k * x3;
            w_k = w[k + 1];
            x0 = x[k + 4];
            a0 += w_k * x1;
            a1 += w_k * x2;
            a2 += w_k * x3;
            a3 += w_k * x0;
            w_k = w[k + 2];
            x1 = x[k + 5];
            a0 += w_k * x2;
            a1 += w_k * x3;
            a2 += w_k * x0;
            a3 += w_k * x1;
            w_k = w[k + 3];
            x2 = x[k + 6];
            a0 += w_k * x3;
            a1 += w_k * x0;
            a2 += w_k * x1;
            a3 += w_k * x2;
        }
        for (; k < kernel; k++) {  /* the last kernel % 4 taps */
            w_k = w[k];
            x3 = x[k + 3];
            a0 += w_k * x0;
            a1 += w_k * x1;
            a2 += w_k * x2;
            a3 += w_k * x3;
            x0 = x1;
            x1 = x2;
            x2 = x3;
        }
    }
    acc[0] = a0;
    acc[1] = a1;
    acc[2] = a2;
    acc[3] = a3;
}

/* One output channel of a dense convolution over the input rows `rows` (NULL: all in order), max-pooled by 2 when
 * `pool` (requantization is monotone, so pooling the sums or the int8 outputs gives the same; an odd last sample is
 * dropped). Outputs go in blocks of four from t = 0, so that pooled pairs never straddle a block; a block that
 * reaches into the padding is computed sample by sample. */
static void conv1d_channel(const int8_t *input, const uint8_t *rows, int in_channels, int length,
                           int32_t input_zero_point, const int8_t *w_out, int32_t bias, int32_t multiplier,
                           int32_t shift, int kernel, int32_t output_zero_point, int pool, int8_t *out)
{
    const int pad = kernel / 2;
    const int32_t low = output_zero_point > HS_INT8_MIN ? output_zero_point : HS_INT8_MIN;
    const int end = interior_end(length, kernel);
    const int computed = pool ? length - length % 2 : length;
    int32_t weight_sum = 0;
    int32_t interior_bias;
    int32_t acc[4];
    int8_t value[4];
    int t, k, j;
    for (k = 0; k < in_channels * kernel; k++) {
        weight_sum += w_out[k];
    }
    /* sum w * (x - z) = sum w * x - z * sum w: the zero point leaves the inner loop */
    interior_bias = bias - input_zero_point * weight_sum;
    for (t = 0; t < computed; t += 4) {
        const int block = computed - t < 4 ? computed - t : 4;
        if (block == 4 && t >= pad && t + 4 <= end) {
            conv_four(input, rows, in_channels, length, w_out, kernel, t, acc);
            for (j = 0; j < 4; j++) {
                acc[j] += interior_bias;
            }
        } else {
            for (j = 0; j < block; j++) {
                acc[j] = bias + conv_at_edge(input, rows, in_channels, length, input_zero_point, w_out, kernel, t + j);
            }
        }
        for (j = 0; j < block; j++) {
            value[j] = clamp_int8(hs_requantize(acc[j], multiplier, shift) + output_zero_point, low);
        }
        for (j = 0; j < block; j++) {
            if (!pool) {
                out[t + j] = value[j];
            } else if (j % 2 == 1) {
                out[(t + j) / 2] = value[j - 1] > value[j] ? value[j - 1] : value[j];
            }
        }
    }
}

void hs_conv1d_relu(const int8_t *input, int in_channels, int length, int32_t input_zero_point,
                    const int8_t *weight, const int32_t *bias, const int32_t *multiplier, const int8_t *shift,
                    int out_channels, int kernel, int32_t output_zero_point, int pool, int8_t *output)
{
    const int out_length = pool ? length / 2 : length;
    int o;
    for (o = 0; o < out_channels; o++) {
        conv1d_channel(input, 0, in_channels, length, input_zero_point, weight + o * in_channels * kernel, bias[o],
                       multiplier[o], shift[o], kernel, output_zero_point, pool, output + o * out_length);
    }
}

void hs_conv1d_grouped_relu(const int8_t *input, int in_channels, int length, int32_t input_zero_point,
                            const int8_t *weight, const uint8_t *input_order, int groups, const int32_t *bias,
                            const int32_t *multiplier, const int8_t *shift, int out_channels, int kernel,
                            int32_t output_zero_point, int pool, int8_t *output)
{
    const int in_per_group = in_channels / groups;
    const int out_per_group = out_channels / groups;
    const int out_length = pool ? length / 2 : length;
    int o;
    for (o = 0; o < out_channels; o++) {
        conv1d_channel(input, input_order + (o / out_per_group) * in_per_group, in_per_group, length,
                       input_zero_point, weight + o * in_per_group * kernel, bias[o], multiplier[o], shift[o],
                       kernel, output_zero_point, pool, output + o * out_length);
    }
}

static int read_bits(const uint8_t *packed, uint32_t position, int bits)
{
    const uint32_t byte = position >> 3;
    const int offset = (int)(position & 7u);
    uint32_t word = packed[byte];
    if (offset + bits > 8) {
        word |= (uint32_t)packed[byte + 1] << 8;
    }
    return (int)((word >> offset) & ((1u << bits) - 1u));
}

void hs_conv1d_codebook_relu(const int8_t *input, int in_channels, int length, int32_t input_zero_point,
                             const int8_t *codebook, int codes, const uint8_t *index, int bits,
                             const int32_t *bias, const int32_t *multiplier, const int8_t *shift,
                             int out_channels, int kernel, int32_t output_zero_point, int8_t *output,
                             int32_t *scratch, int16_t *window)
{
    const int pad = kernel / 2;
    const int32_t low = output_zero_point > HS_INT8_MIN ? output_zero_point : HS_INT8_MIN;
    int32_t *acc = scratch;                                           /* [out_channels][block] */
    int32_t *response = scratch + out_channels * HS_CODEBOOK_TIME_BLOCK;  /* [codes][block] */
    int t0, i, o, c, j, k;
    for (t0 = 0; t0 < length; t0 += HS_CODEBOOK_TIME_BLOCK) {
        const int block = length - t0 < HS_CODEBOOK_TIME_BLOCK ? length - t0 : HS_CODEBOOK_TIME_BLOCK;
        for (o = 0; o < out_channels; o++) {
            for (j = 0; j < block; j++) {
                acc[o * HS_CODEBOOK_TIME_BLOCK + j] = bias[o];
            }
        }
        for (i = 0; i < in_channels; i++) {
            const int8_t *x = input + i * length;
            /* the centred samples this block's outputs read; the padding is zero */
            for (j = 0; j < block + kernel - 1; j++) {
                const int t = t0 + j - pad;
                window[j] = (int16_t)(t >= 0 && t < length ? (int32_t)x[t] - input_zero_point : 0);
            }
            /* each codeword convolved with this input channel once ... */
            for (c = 0; c < codes; c++) {
                const int8_t *word = codebook + c * kernel;
                for (j = 0; j < block; j++) {
                    int32_t sum = 0;
                    for (k = 0; k < kernel; k++) {
                        sum += (int32_t)word[k] * window[j + k];
                    }
                    response[c * HS_CODEBOOK_TIME_BLOCK + j] = sum;
                }
            }
            /* ... then gathered by every output channel's index */
            for (o = 0; o < out_channels; o++) {
                const int code = read_bits(index, (uint32_t)(i * out_channels + o) * (uint32_t)bits, bits);
                const int32_t *from = response + code * HS_CODEBOOK_TIME_BLOCK;
                int32_t *to = acc + o * HS_CODEBOOK_TIME_BLOCK;
                for (j = 0; j < block; j++) {
                    to[j] += from[j];
                }
            }
        }
        for (o = 0; o < out_channels; o++) {
            for (j = 0; j < block; j++) {
                output[o * length + t0 + j] = clamp_int8(
                    hs_requantize(acc[o * HS_CODEBOOK_TIME_BLOCK + j], multiplier[o], shift[o]) + output_zero_point,
                    low);
            }
        }
    }
}

/* Element e of unified block b: its input channel and tap. */
static void unified_element(int along_taps, int size, int kernel, int b, int e, int *channel, int *tap)
{
    if (along_taps) {
        *channel = b / (kernel / size);
        *tap = (b % (kernel / size)) * size + e;
    } else {
        *channel = (b / kernel) * size + e;
        *tap = b % kernel;
    }
}

void hs_conv1d_unified_relu(const int8_t *input, int in_channels, int length, int32_t input_zero_point,
                            const uint8_t *magnitude, const uint8_t *signs, int along_taps, int size,
                            const int32_t *bias, const int32_t *multiplier, const int8_t *shift,
                            int out_channels, int kernel, int32_t output_zero_point, int8_t *output)
{
    const int pad = kernel / 2;
    const int32_t low = output_zero_point > HS_INT8_MIN ? output_zero_point : HS_INT8_MIN;
    const int blocks = in_channels * kernel / size;
    const int end = interior_end(length, kernel);
    uint32_t first_bit = 0;  /* the output channel's first sign bit: signs are stored for live blocks only */
    int o, b, e, t, j;
    for (o = 0; o < out_channels; o++) {
        const uint8_t *m_out = magnitude + o * blocks;
        int8_t *out = output + o * length;
        int32_t correction = 0;  /* z * sum over blocks of m * (sum of signs): the zero point out of the loop */
        uint32_t bit = first_bit;
        for (b = 0; b < blocks; b++) {
            if (m_out[b] != 0) {
                int32_t sign_sum = 0;
                for (e = 0; e < size; e++, bit++) {
                    sign_sum += (signs[bit >> 3] >> (bit & 7u)) & 1u ? -1 : 1;
                }
                correction += (int32_t)m_out[b] * sign_sum;
            }
        }
        correction *= input_zero_point;
        for (t = 0; t < length; t++) {  /* the edges, sample by sample, on centred samples */
            int32_t acc = bias[o];
            if (t >= pad && t < end) {
                t = end - 1;
                continue;
            }
            bit = first_bit;
            for (b = 0; b < blocks; b++) {
                int32_t sum = 0;
                if (m_out[b] == 0) {
                    continue;
                }
                for (e = 0; e < size; e++, bit++) {
                    int channel, tap, at;
                    unified_element(along_taps, size, kernel, b, e, &channel, &tap);
                    at = t + tap - pad;
                    if (at >= 0 && at < length) {
                        const int32_t v = (int32_t)input[channel * length + at] - input_zero_point;
                        sum += (signs[bit >> 3] >> (bit & 7u)) & 1u ? -v : v;
                    }
                }
                acc += (int32_t)m_out[b] * sum;
            }
            out[t] = clamp_int8(hs_requantize(acc, multiplier[o], shift[o]) + output_zero_point, low);
        }
        /* The interior: per block, the inputs added or subtracted by sign, then one multiply by its magnitude. */
        for (t = pad; t < end; t += HS_TIME_BLOCK) {
            const int block = end - t < HS_TIME_BLOCK ? end - t : HS_TIME_BLOCK;
            int32_t acc[HS_TIME_BLOCK];
            int32_t sum[HS_TIME_BLOCK];
            for (j = 0; j < block; j++) {
                acc[j] = bias[o] - correction;
            }
            bit = first_bit;
            for (b = 0; b < blocks; b++) {
                if (m_out[b] == 0) {
                    continue;
                }
                for (j = 0; j < block; j++) {
                    sum[j] = 0;
                }
                for (e = 0; e < size; e++, bit++) {
                    int channel, tap;
                    const int8_t *x;
                    unified_element(along_taps, size, kernel, b, e, &channel, &tap);
                    x = input + channel * length + t + tap - pad;
                    if ((signs[bit >> 3] >> (bit & 7u)) & 1u) {
                        for (j = 0; j < block; j++) {
                            sum[j] -= x[j];
                        }
                    } else {
                        for (j = 0; j < block; j++) {
                            sum[j] += x[j];
                        }
                    }
                }
                for (j = 0; j < block; j++) {
                    acc[j] += (int32_t)m_out[b] * sum[j];
                }
            }
            for (j = 0; j < block; j++) {
                out[t + j] = clamp_int8(hs_requantize(acc[j], multiplier[o], shift[o]) + output_zero_point, low);
            }
        }
        first_bit = bit;
    }
}

void hs_maxpool2(const int8_t *input, int channels, int length, int8_t *output)
{
    const int half = length / 2;
    int c, t;
    for (c = 0; c < channels; c++) {
        for (t = 0; t < half; t++) {
            const int8_t a = input[c * length + 2 * t];
            const int8_t b = input[c * length + 2 * t + 1];
            output[c * half + t] = a > b ? a : b;
        }
    }
}

void hs_channel_sums(const int8_t *input, int channels, int length, int32_t zero_point, int32_t *sums)
{
    int c, t;
    for (c = 0; c < channels; c++) {
        int32_t sum = 0;
        for (t = 0; t < length; t++) {
            sum += (int32_t)input[c * length + t] - zero_point;
        }
        sums[c] = sum;
    }
}

int hs_linear_from_sums(const int32_t *sums, int channels, int length, const int8_t *weight, const int32_t *bias,
                        const int32_t *multiplier, const int32_t *shift, int classes, int32_t output_zero_point,
                        int8_t *logits)
{
    int best = 0;
    int c, k;
    for (c = 0; c < classes; c++) {
        int32_t acc = length * bias[c];
        for (k = 0; k < channels; k++) {
            acc += (int32_t)weight[c * channels + k] * sums[k];
        }
        logits[c] = clamp_int8(hs_requantize(acc, multiplier[c], shift[c]) + output_zero_point, HS_INT8_MIN);
        if (logits[c] > logits[best]) {
            best = c;
        }
    }
    return best;
}

/* The coarse trace's value from a time step's class activation: ReLU, the class's shift, int16. */
static int16_t coarse_value(int32_t cam, int32_t trace_shift)
{
    const int32_t value = rounding_divide_by_pot(cam > 0 ? cam : 0, trace_shift);
    return (int16_t)(value > HS_INT16_MAX ? HS_INT16_MAX : value);
}

#if defined(__ARM_FEATURE_SIMD32) && __ARM_FEATURE_SIMD32
#include <arm_acle.h>

static uint32_t rotate_right_8(uint32_t x)
{
    return (x >> 8) | (x << 24);  /* one ROR (GCC 12's arm_acle.h has no __ror) */
}

/* The class activation of time steps t..t+3 at once with the DSP extension's dual 16-bit multiply-accumulate
 * (SMLAD): two channels' int8 activations at one time step, sign-extended into the halves of a word (SXTB16 and
 * packing), against the two channels' weights. Returns the sums of weight * activation (no zero point). */
static void cam_four_steps(const int8_t *activations, int channels, int length, const int8_t *class_weight, int t,
                           int32_t *cam)
{
    int32_t acc0 = 0, acc1 = 0, acc2 = 0, acc3 = 0;
    int k;
    for (k = 0; k + 2 <= channels; k += 2) {
        uint32_t row0, row1;
        memcpy(&row0, activations + k * length + t, 4);  /* one unaligned word load */
        memcpy(&row1, activations + (k + 1) * length + t, 4);
        const uint32_t even0 = (uint32_t)__sxtb16(row0), odd0 = (uint32_t)__sxtb16(rotate_right_8(row0));
        const uint32_t even1 = (uint32_t)__sxtb16(row1), odd1 = (uint32_t)__sxtb16(rotate_right_8(row1));
        const int32_t weights = (int32_t)((uint16_t)class_weight[k] | ((uint32_t)(uint16_t)class_weight[k + 1] << 16));
        acc0 = __smlad((int32_t)((even0 & 0xFFFFu) | (even1 << 16)), weights, acc0);
        acc1 = __smlad((int32_t)((odd0 & 0xFFFFu) | (odd1 << 16)), weights, acc1);
        acc2 = __smlad((int32_t)((even0 >> 16) | (even1 & 0xFFFF0000u)), weights, acc2);
        acc3 = __smlad((int32_t)((odd0 >> 16) | (odd1 & 0xFFFF0000u)), weights, acc3);
    }
    for (; k < channels; k++) {
        const int8_t *row = activations + k * length + t;
        acc0 += class_weight[k] * row[0];
        acc1 += class_weight[k] * row[1];
        acc2 += class_weight[k] * row[2];
        acc3 += class_weight[k] * row[3];
    }
    cam[0] = acc0;
    cam[1] = acc1;
    cam[2] = acc2;
    cam[3] = acc3;
}
#endif

void hs_cam(const int8_t *activations, int channels, int length, int32_t zero_point, const int8_t *class_weight,
            int32_t trace_shift, int16_t *coarse, int out_length, int16_t *trace)
{
    const int32_t denominator = 2 * out_length;
    int t = 0, k, d;
#if defined(__ARM_FEATURE_SIMD32) && __ARM_FEATURE_SIMD32
    int32_t zero_point_sum = 0;  /* sum of w * (a - z) = sum of w * a - z * sum of w, exactly */
    for (k = 0; k < channels; k++) {
        zero_point_sum += zero_point * class_weight[k];
    }
    for (; t + 4 <= length; t += 4) {
        int32_t cam[4];
        cam_four_steps(activations, channels, length, class_weight, t, cam);
        for (k = 0; k < 4; k++) {
            coarse[t + k] = coarse_value(cam[k] - zero_point_sum, trace_shift);
        }
    }
#endif
    for (; t < length; t++) {
        int32_t cam = 0;
        for (k = 0; k < channels; k++) {
            cam += (int32_t)class_weight[k] * ((int32_t)activations[k * length + t] - zero_point);
        }
        coarse[t] = coarse_value(cam, trace_shift);
    }
    for (d = 0; d < out_length; d++) {
        int32_t numerator = (2 * d + 1) * length - out_length;
        int32_t left, right, fraction;
        if (numerator < 0) {
            numerator = 0;
        }
        left = numerator / denominator;
        fraction = numerator % denominator;
        right = left + 1 < length ? left + 1 : length - 1;
        trace[d] = (int16_t)(((int32_t)coarse[left] * (denominator - fraction) + (int32_t)coarse[right] * fraction
                              + denominator / 2) / denominator);
    }
}
