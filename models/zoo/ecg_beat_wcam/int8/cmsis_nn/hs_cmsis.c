/* HeartSight's layers on CMSIS-NN; see hs_cmsis.h. */
#include "hs_cmsis.h"
#include <string.h>
#include "arm_nnfunctions.h"
#include "arm_nnsupportfunctions.h"

void hs_transpose(const int8_t *x, int rows, int cols, int8_t *y)
{
    int r, c;
    for (r = 0; r < rows; r++) {
        for (c = 0; c < cols; c++) {
            y[c * rows + r] = x[r * cols + c];
        }
    }
}

static cmsis_nn_dims dims(int32_t n, int32_t w, int32_t c)
{
    cmsis_nn_dims d;
    d.n = n;
    d.h = 1;
    d.w = w;
    d.c = c;
    return d;
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

int hs_cmsis_maxpool2(const int8_t *input, int length, int channels, int8_t *output)
{
    cmsis_nn_context none;
    cmsis_nn_pool_params pool;
    const cmsis_nn_dims in = dims(1, length, channels), filter = dims(1, 2, 1), out = dims(1, length / 2, channels);
    none.buf = 0;
    none.size = 0;
    pool.stride.w = 2;
    pool.stride.h = 1;
    pool.padding.w = 0;
    pool.padding.h = 0;
    pool.activation.min = -128;
    pool.activation.max = 127;
    return arm_max_pool_s8(&none, &pool, &in, input, &filter, &out, output) == ARM_CMSIS_NN_SUCCESS ? 0 : -1;
}
