/* HeartSight int8 kernels: plain C99, integer arithmetic only, no allocation.
 * Tensors are channel-major: x[channel * length + t]. Rounding follows TensorFlow Lite's reference kernels,
 * and firmware_export/reference.py is the specification these functions match bit for bit. */
#ifndef HS_KERNELS_H
#define HS_KERNELS_H

#include <stdint.h>

/* acc * multiplier * 2^(shift - 31), rounded as TFLite's MultiplyByQuantizedMultiplier. */
int32_t hs_requantize(int32_t acc, int32_t multiplier, int32_t shift);

/* 'same' 1D convolution (stride 1, zero padding at the input's zero point), int32 bias, per-output-channel
 * requantization, ReLU fused as the clamp at the output zero point. weight: [out][in][kernel]. */
void hs_conv1d_relu(const int8_t *input, int in_channels, int length, int32_t input_zero_point,
                    const int8_t *weight, const int32_t *bias, const int32_t *multiplier, const int32_t *shift,
                    int out_channels, int kernel, int32_t output_zero_point, int8_t *output);

/* Max pooling by 2 along time (an odd last sample is dropped); the scale is unchanged. */
void hs_maxpool2(const int8_t *input, int channels, int length, int8_t *output);

/* Sum over time of (x - zero_point) per channel: the global average pool without its 1/T. */
void hs_channel_sums(const int8_t *input, int channels, int length, int32_t zero_point, int32_t *sums);

/* Logits from the channel sums: sum_k w[c][k] * sums[k] + length * bias[c], requantized per class.
 * Returns the arg-max class (the first one on ties). */
int hs_linear_from_sums(const int32_t *sums, int channels, int length, const int8_t *weight, const int32_t *bias,
                        const int32_t *multiplier, const int32_t *shift, int classes, int32_t output_zero_point,
                        int8_t *logits);

/* Class activation map of one class: ReLU(sum_k w[k] * (a[k][t] - z)) >> trace_shift, saturated to int16,
 * linearly upsampled from `length` to `out_length` samples (torch's align_corners=False positions).
 * coarse: scratch of `length` values for the map before upsampling. */
void hs_cam(const int8_t *activations, int channels, int length, int32_t zero_point, const int8_t *class_weight,
            int32_t trace_shift, int16_t *coarse, int out_length, int16_t *trace);

#endif
