/* HeartSight int8 kernels: plain C99, integer arithmetic only, no allocation.
 * Tensors are channel-major: x[channel * length + t]. Rounding follows TensorFlow Lite's reference kernels,
 * and firmware_export/reference.py is the specification these functions match bit for bit. */
#ifndef HS_KERNELS_H
#define HS_KERNELS_H

#include <stdint.h>

/* acc * multiplier * 2^(shift - 31), rounded as TFLite's MultiplyByQuantizedMultiplier. */
int32_t hs_requantize(int32_t acc, int32_t multiplier, int32_t shift);

/* 'same' 1D convolution (stride 1, zero padding at the input's zero point), int32 bias, per-output-channel
 * requantization, ReLU fused as the clamp at the output zero point. weight: [out][in][kernel].
 * pool 1: followed by hs_maxpool2 in the same pass, output [out][length / 2] (the full-length output never exists,
 * which halves the arena's largest pair); pool 0: output [out][length]. */
void hs_conv1d_relu(const int8_t *input, int in_channels, int length, int32_t input_zero_point,
                    const int8_t *weight, const int32_t *bias, const int32_t *multiplier, const int8_t *shift,
                    int out_channels, int kernel, int32_t output_zero_point, int pool, int8_t *output);

/* The same convolution with its channels in groups (MPDCompress): output channel o belongs to group
 * o / (out_channels / groups) and reads that group's in_channels / groups inputs, listed in input_order (group 0's
 * first). weight: [out][in / groups][kernel]. */
void hs_conv1d_grouped_relu(const int8_t *input, int in_channels, int length, int32_t input_zero_point,
                            const int8_t *weight, const uint8_t *input_order, int groups, const int32_t *bias,
                            const int32_t *multiplier, const int8_t *shift, int out_channels, int kernel,
                            int32_t output_zero_point, int pool, int8_t *output);

/* Output samples a kernel-codebook convolution computes together; its scratch holds
 * HS_CODEBOOK_SCRATCH(out_channels, codes) int32 and its window HS_CODEBOOK_WINDOW(kernel) int16. */
#define HS_CODEBOOK_TIME_BLOCK 16
#define HS_CODEBOOK_SCRATCH(out_channels, codes) (((out_channels) + (codes)) * HS_CODEBOOK_TIME_BLOCK)
#define HS_CODEBOOK_WINDOW(kernel) (HS_CODEBOOK_TIME_BLOCK + (kernel) - 1)

/* The same convolution with every kernel w[o][i] = codebook[index of (o, i)] (kernel quantization): each input
 * channel is convolved with every codeword once, and each output channel gathers the responses its indices name.
 * codebook: [codes][kernel] int8; index: bits-bit codes packed LSB first, input-major (position i * out + o). */
void hs_conv1d_codebook_relu(const int8_t *input, int in_channels, int length, int32_t input_zero_point,
                             const int8_t *codebook, int codes, const uint8_t *index, int bits,
                             const int32_t *bias, const int32_t *multiplier, const int8_t *shift,
                             int out_channels, int kernel, int32_t output_zero_point, int8_t *output,
                             int32_t *scratch, int16_t *window);

/* The same convolution with unified weights (micro-structured unification): blocks of `size` weights, along the
 * input channels at one tap (along_taps 0: block b is channels (b / kernel) * size + e at tap b % kernel) or along
 * the taps of one kernel (along_taps 1: channel b / (kernel / size), taps (b % (kernel / size)) * size + e), share
 * one magnitude; per block the inputs are added or subtracted by sign, then multiplied once.
 * magnitude: [out][blocks] uint8 (0: pruned); signs: one bit per weight of the live blocks only, in block order,
 * LSB first, 1 = negative. */
void hs_conv1d_unified_relu(const int8_t *input, int in_channels, int length, int32_t input_zero_point,
                            const uint8_t *magnitude, const uint8_t *signs, int along_taps, int size,
                            const int32_t *bias, const int32_t *multiplier, const int8_t *shift,
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
