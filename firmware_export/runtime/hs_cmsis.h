/* The layers of an export made with `heartsight export --kernels cmsis-nn`: the convolutions on Arm's CMSIS-NN
 * (arm_nn_mat_mult_nt_t_s8, with its DSP-extension path on a Cortex-M4/M7), the pooling HeartSight's, all on
 * channels-last tensors ([length][channels]); the explainer and the head stay HeartSight's (hs_kernels.h), on
 * channel-major tensors. Its requantization is TensorFlow Lite's, as hs_kernels', so the results are the integer
 * reference's bit for bit (firmware_export/reference.py; checked under QEMU). Build with CMSIS-NN's Include and
 * Source and CMSIS-Core's Include on the paths (CMSIS_NN_DIR in the export's CMakeLists.txt): CMSIS-NN of January
 * 2024 or later, whose arm_nn_mat_mult_nt_t_s8 (V.3.0.0) takes the distance between rows (lhs_cols_offset); an older
 * one fails to compile here with too many arguments. */
#ifndef HS_CMSIS_H
#define HS_CMSIS_H

#include <stdint.h>

/* y[c][r] = x[r][c]: x has rows x cols int8 values, row-major. */
void hs_transpose(const int8_t *x, int rows, int cols, int8_t *y);

/* 'same' 1D convolution with fused ReLU on channels-last tensors (weight [out][kernel][in], output [length][out]),
 * per-output-channel requantization. padded holds rows of in_channels values: kernel / 2 rows of room, the input's
 * length rows, then kernel - 1 - kernel / 2 rows of room; the rows of room are filled here with the input zero point. The convolution is then one matrix product whose rows overlap (each output's receptive field
 * is a contiguous run of input rows), CMSIS-NN's arm_nn_mat_mult_nt_t_s8 with in_channels between rows: what
 * CMSIS-NN's own 1xN convolution does on Cortex-M55, without the int16 im2col copies its Cortex-M4 path makes.
 * Returns 0, or -1 when CMSIS-NN refuses the arguments. */
int hs_cmsis_conv1d_relu(int8_t *padded, int length, int in_channels, int32_t input_zero_point, const int8_t *weight,
                         const int32_t *bias, const int32_t *multiplier, const int32_t *shift, int out_channels,
                         int kernel, int32_t output_zero_point, int8_t *output);

/* Max pooling by 2 along time on a channels-last tensor ([length][channels] -> [length / 2][channels]). HeartSight's,
 * not arm_max_pool_s8: CMSIS-NN's compares byte by byte on a Cortex-M4 (about 24 instructions per output here), where
 * the DSP extension's SSUB8 and SEL take the larger of four pairs in two instructions. */
void hs_maxpool2_channels_last(const int8_t *input, int length, int channels, int8_t *output);

#endif
