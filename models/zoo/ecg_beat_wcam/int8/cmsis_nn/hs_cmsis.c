/* HeartSight's layers on CMSIS-NN; see hs_cmsis.h. */
#include "hs_cmsis.h"
#include "arm_nnfunctions.h"

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

int hs_cmsis_conv1d_relu(int8_t *buffer, int32_t buffer_bytes, const int8_t *input, int length, int in_channels,
                         int32_t input_zero_point, const int8_t *weight, const int32_t *bias, const int32_t *multiplier,
                         const int32_t *shift, int out_channels, int kernel, int32_t output_zero_point, int8_t *output)
{
    cmsis_nn_context scratch;
    cmsis_nn_conv_params conv;
    cmsis_nn_per_channel_quant_params quant;
    const cmsis_nn_dims in = dims(1, length, in_channels), filter = dims(out_channels, kernel, in_channels);
    const cmsis_nn_dims bias_dims = dims(1, 1, out_channels), out = dims(1, length, out_channels);
    scratch.buf = buffer;
    scratch.size = buffer_bytes;
    conv.input_offset = -input_zero_point;
    conv.output_offset = output_zero_point;
    conv.stride.w = 1;
    conv.stride.h = 1;
    conv.padding.w = kernel / 2;  /* as hs_conv1d_relu: kernel / 2 before, the rest after */
    conv.padding.h = 0;
    conv.dilation.w = 1;
    conv.dilation.h = 1;
    conv.activation.min = output_zero_point > -128 ? output_zero_point : -128;  /* the fused ReLU */
    conv.activation.max = 127;
    quant.multiplier = (int32_t *)multiplier;  /* CMSIS-NN reads them only */
    quant.shift = (int32_t *)shift;
    if (arm_convolve_wrapper_s8_get_buffer_size(&conv, &in, &filter, &out) > buffer_bytes) {
        return -1;
    }
    return arm_convolve_wrapper_s8(&scratch, &conv, &quant, &in, input, &filter, weight, &bias_dims, bias, &out,
                                   output) == ARM_CMSIS_NN_SUCCESS ? 0 : -1;
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
