/* HeartSight int8 kernels; see hs_kernels.h. */
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

/* One output sample where some taps fall in the padding: only the taps inside the signal contribute. */
static int32_t conv_at_edge(const int8_t *input, int in_channels, int length, int32_t input_zero_point,
                            const int8_t *w_out, int kernel, int t)
{
    const int pad = kernel / 2;
    const int first = t - pad < 0 ? pad - t : 0;
    const int last = t - pad + kernel > length ? length - t + pad : kernel;
    int32_t acc = 0;
    int i, k;
    for (i = 0; i < in_channels; i++) {
        const int8_t *x = input + i * length + t - pad;
        const int8_t *w = w_out + i * kernel;
        for (k = first; k < last; k++) {
            acc += (int32_t)w[k] * ((int32_t)x[k] - input_zero_point);
        }
    }
    return acc;
}

void hs_conv1d_relu(const int8_t *input, int in_channels, int length, int32_t input_zero_point,
                    const int8_t *weight, const int32_t *bias, const int32_t *multiplier, const int32_t *shift,
                    int out_channels, int kernel, int32_t output_zero_point, int8_t *output)
{
    const int pad = kernel / 2;
    const int32_t low = output_zero_point > HS_INT8_MIN ? output_zero_point : HS_INT8_MIN;
    /* Interior samples [pad, interior_end) see every tap; the samples outside it are the edges. */
    const int interior_end = length - (kernel - 1 - pad) > pad ? length - (kernel - 1 - pad) : pad;
    int o, t, i, k, j;
    for (o = 0; o < out_channels; o++) {
        const int8_t *w_out = weight + o * in_channels * kernel;
        int8_t *out = output + o * length;
        int32_t weight_sum = 0;
        int32_t interior_bias;
        for (k = 0; k < in_channels * kernel; k++) {
            weight_sum += w_out[k];
        }
        /* sum w * (x - z) = sum w * x - z * sum w: the zero point leaves the inner loop */
        interior_bias = bias[o] - input_zero_point * weight_sum;
        for (t = 0; t < length; t++) {  /* the edges, sample by sample */
            if (t >= pad && t < interior_end) {
                t = interior_end - 1;
                continue;
            }
            out[t] = clamp_int8(hs_requantize(bias[o] + conv_at_edge(input, in_channels, length, input_zero_point,
                                                                      w_out, kernel, t),
                                              multiplier[o], shift[o]) + output_zero_point, low);
        }
        /* The interior in blocks of HS_TIME_BLOCK outputs that accumulate together: each weight is loaded once
         * per block, and the innermost loop runs along time over contiguous samples, which compilers vectorize. */
        for (t = pad; t < interior_end; t += HS_TIME_BLOCK) {
            const int block = interior_end - t < HS_TIME_BLOCK ? interior_end - t : HS_TIME_BLOCK;
            int32_t acc[HS_TIME_BLOCK];
            for (j = 0; j < HS_TIME_BLOCK; j++) {
                acc[j] = interior_bias;
            }
            for (i = 0; i < in_channels; i++) {
                const int8_t *x_row = input + i * length + t - pad;
                const int8_t *w = w_out + i * kernel;
                for (k = 0; k < kernel; k++) {
                    const int32_t w_k = w[k];
                    const int8_t *x = x_row + k;
                    if (block == HS_TIME_BLOCK) {
                        for (j = 0; j < HS_TIME_BLOCK; j++) {
                            acc[j] += w_k * (int32_t)x[j];
                        }
                    } else {
                        for (j = 0; j < block; j++) {
                            acc[j] += w_k * (int32_t)x[j];
                        }
                    }
                }
            }
            for (j = 0; j < block; j++) {
                out[t + j] = clamp_int8(hs_requantize(acc[j], multiplier[o], shift[o]) + output_zero_point, low);
            }
        }
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

void hs_cam(const int8_t *activations, int channels, int length, int32_t zero_point, const int8_t *class_weight,
            int32_t trace_shift, int16_t *coarse, int out_length, int16_t *trace)
{
    const int32_t denominator = 2 * out_length;
    int t, k, d;
    for (t = 0; t < length; t++) {
        int32_t cam = 0;
        int32_t value;
        for (k = 0; k < channels; k++) {
            cam += (int32_t)class_weight[k] * ((int32_t)activations[k * length + t] - zero_point);
        }
        value = rounding_divide_by_pot(cam > 0 ? cam : 0, trace_shift);
        coarse[t] = (int16_t)(value > HS_INT16_MAX ? HS_INT16_MAX : value);
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
