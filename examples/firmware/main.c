/* Runs the exported model on every test vector and checks that the logits and the explanation trace
 * are bit-exact with the Python integer reference. Prints one line per vector with the SysTick ticks hs_infer and
 * hs_explain took (instructions under `qemu -icount`, see instruction_count.h), a calibration line, then a summary;
 * then, when the
 * vectors hold a head update and the model takes one, checks that a tampered copy is refused, applies it and
 * checks every vector again against the reference with the new head. Exits with status 0 if every value
 * matched, else 1. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include "heartsight_model.h"
#include "instruction_count.h"
#include "vectors.h"

#define CALIBRATION_LOOPS 100000u  /* 200,000 instructions: 5,000 ticks at -icount shift=0 */

static int8_t logits[HS_NUM_CLASSES];
static int16_t trace[HS_INPUT_LENGTH];

/* Every vector against the expected logits and traces; prints one line each (prefix "vector" or "head_vector")
 * and returns how many matched exactly. */
static int check_vectors(const char *prefix, const int8_t (*expected_logits)[HS_NUM_CLASSES],
                         const int16_t (*expected_traces)[HS_INPUT_LENGTH])
{
    int exact = 0;
    for (int i = 0; i < hs_test_count; i++) {
        uint32_t start = instruction_count_read();
        int predicted = hs_infer(hs_test_inputs[i], logits);
        uint32_t inferred = instruction_count_read();
        hs_explain(predicted, trace);
        uint32_t explained = instruction_count_read();
        int logits_equal = memcmp(logits, expected_logits[i], sizeof logits) == 0;
        int trace_equal = memcmp(trace, expected_traces[i], sizeof trace) == 0;
        printf("%s %d class %d logits_equal %d trace_equal %d ticks_infer %lu ticks_explain %lu\n", prefix, i,
               predicted, logits_equal, trace_equal, (unsigned long)instruction_count_between(start, inferred),
               (unsigned long)instruction_count_between(inferred, explained));
        exact += logits_equal && trace_equal;
    }
    return exact;
}

int main(void)
{
    /* Unbuffered, so every line printed so far reaches the console even if a later vector faults. */
    setvbuf(stdout, NULL, _IONBF, 0);
    instruction_count_start();
    printf("calibration instructions %lu ticks %lu\n", (unsigned long)(2u * CALIBRATION_LOOPS),
           (unsigned long)instruction_count_calibrate(CALIBRATION_LOOPS));
    int exact = check_vectors("vector", hs_test_logits, hs_test_traces);
    printf("summary n %d exact %d\n", hs_test_count, exact);
    int head_ok = 1;
#if defined(HS_HEAD_UPDATES) && HS_HEAD_UPDATES
    if (hs_test_head_size > 0) {
        static uint8_t tampered[HS_HEAD_BLOB_BYTES];
        memcpy(tampered, hs_test_head_blob, sizeof tampered);
        tampered[HS_HEAD_PREFIX_BYTES] ^= 1;  /* one weight changed after signing */
        int refused = hs_set_head(tampered, sizeof tampered, hs_test_head_key, 32) == HS_HEAD_BAD_SIGNATURE;
        int status = hs_set_head(hs_test_head_blob, hs_test_head_size, hs_test_head_key, 32);
        printf("head status %d refused_tampered %d version %lu\n", status, refused, (unsigned long)hs_head_version());
        int head_exact = check_vectors("head_vector", hs_test_head_logits, hs_test_head_traces);
        printf("head_summary n %d exact %d\n", hs_test_count, head_exact);
        head_ok = status == HS_HEAD_OK && refused && head_exact == hs_test_count;
    }
#endif
    return exact == hs_test_count && head_ok ? 0 : 1;
}
