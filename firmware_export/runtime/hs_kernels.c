/* HeartSight int8 kernels; see hs_kernels.h. */
#include "hs_kernels.h"

#define HS_INT8_MIN (-128)
#define HS_INT8_MAX 127
#define HS_INT16_MAX 32767

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

void hs_conv1d_relu(const int8_t *input, int in_channels, int length, int32_t input_zero_point,
                    const int8_t *weight, const int32_t *bias, const int32_t *multiplier, const int32_t *shift,
                    int out_channels, int kernel, int32_t output_zero_point, int8_t *output)
{
    const int pad = kernel / 2;
    const int32_t low = output_zero_point > HS_INT8_MIN ? output_zero_point : HS_INT8_MIN;
    int o, t, i, k;
    for (o = 0; o < out_channels; o++) {
        const int8_t *w_out = weight + o * in_channels * kernel;
        for (t = 0; t < length; t++) {
            int32_t acc = bias[o];
            /* taps whose input sample lies inside the signal; the padding contributes (z - z) = 0 */
            const int first = t - pad < 0 ? pad - t : 0;
            const int last = t - pad + kernel > length ? length - t + pad : kernel;
            for (i = 0; i < in_channels; i++) {
                const int8_t *x = input + i * length;
                const int8_t *w = w_out + i * kernel;
                for (k = first; k < last; k++) {
                    acc += (int32_t)w[k] * ((int32_t)x[t - pad + k] - input_zero_point);
                }
            }
            output[o * length + t] = clamp_int8(hs_requantize(acc, multiplier[o], shift[o]) + output_zero_point, low);
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
