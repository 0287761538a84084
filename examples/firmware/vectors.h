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

#endif
