/* HeartSight's layers on CMSIS-NN; see hs_cmsis.h. */
#include "hs_cmsis.h"
#include <string.h>
#include "arm_nnsupportfunctions.h"
#if defined(__ARM_FEATURE_SIMD32) && __ARM_FEATURE_SIMD32
#include <arm_acle.h>
#endif

void hs_transpose(const int8_t *x, int rows, int cols, int8_t *y)
{
    int r, c;
    for (r = 0; r < rows; r++) {
        for (c = 0; c < cols; c++) {
            y[c * rows + r] = x[r * cols + c];
        }
    }
}

int hs_cmsis_conv1d_relu(int8_t *padded, int length, int in_channels, int32_t input_zero_point, const int8_t *weight,
                         const int32_t *bias, const int32_t *multiplier, const int32_t *shift, int out_channels,
                         int kernel, int32_t output_zero_point, int8_t *output)
{
    const int before = kernel / 2, after = kernel - 1 - kernel / 2;
    /* The padding rows hold the input's zero point: with the offset -zero_point they add nothing, as 'same' zero
     * padding of the real values. Output t's receptive field is then rows t..t+kernel-1 of padded: a matrix whose
     * rows are kernel * in_channels long and start in_channels apart. */
    memset(padded, (int)input_zero_point, (size_t)(before * in_channels));
    memset(padded + (before + length) * in_channels, (int)input_zero_point, (size_t)(after * in_channels));
    return arm_nn_mat_mult_nt_t_s8(padded, weight, bias, output, multiplier, shift, length, out_channels,
                                   kernel * in_channels, -input_zero_point, output_zero_point,
                                   output_zero_point > -128 ? output_zero_point : -128,  /* the fused ReLU */
                                   127, out_channels, in_channels) == ARM_CMSIS_NN_SUCCESS ? 0 : -1;
}

void hs_maxpool2_channels_last(const int8_t *input, int length, int channels, int8_t *output)
{
    int t, c;
    for (t = 0; t + 1 < length; t += 2) {
        const int8_t *first = input + t * channels, *second = first + channels;
        c = 0;
#if defined(__ARM_FEATURE_SIMD32) && __ARM_FEATURE_SIMD32
        for (; c + 4 <= channels; c += 4) {  /* four channels at once: SSUB8 sets a flag per byte, SEL picks by it */
            uint32_t a, b, larger;
            memcpy(&a, first + c, 4);
            memcpy(&b, second + c, 4);
            (void)__ssub8((int32_t)a, (int32_t)b);
            larger = __sel(a, b);
            memcpy(output + c, &larger, 4);
        }
#endif
        for (; c < channels; c++) {
            output[c] = first[c] > second[c] ? first[c] : second[c];
        }
        output += channels;
    }
}
