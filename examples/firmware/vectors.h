/* Test vectors written by firmware_export.target.write_vectors_c: inputs and the outputs the
 * Python integer reference produced for them. */
#ifndef VECTORS_H
#define VECTORS_H

#include <stdint.h>
#include "heartsight_model.h"

extern const int hs_test_count;
extern const int8_t hs_test_inputs[][HS_INPUT_CHANNELS * HS_INPUT_LENGTH];
extern const int8_t hs_test_logits[][HS_NUM_CLASSES];
extern const int16_t hs_test_traces[][HS_INPUT_LENGTH]; /* for the expected arg-max class */
/* A head update to apply (hs_set_head; size 0: none), the device key it is signed with, and the outputs the
 * reference gives for the same inputs with that head. */
extern const uint32_t hs_test_head_size;
extern const uint8_t hs_test_head_blob[];
extern const uint8_t hs_test_head_key[32];
extern const int8_t hs_test_head_logits[][HS_NUM_CLASSES];
extern const int16_t hs_test_head_traces[][HS_INPUT_LENGTH];

#endif
