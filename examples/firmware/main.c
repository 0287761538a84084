/* Runs the exported model on every test vector and checks that the logits and the explanation trace
 * are bit-exact with the Python integer reference. Prints one line per vector, then a summary; then, when the
 * vectors hold a head update and the model takes one, checks that a tampered copy is refused, applies it and
 * checks every vector again against the reference with the new head. Exits with status 0 if every value
 * matched, else 1. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include "heartsight_model.h"
#include "vectors.h"

static int8_t logits[HS_NUM_CLASSES];
static int16_t trace[HS_INPUT_LENGTH];

/* Every vector against the expected logits and traces; prints one line each (prefix "vector" or "head_vector")
 * and returns how many matched exactly. */
static int check_vectors(const char *prefix, const int8_t (*expected_logits)[HS_NUM_CLASSES],
                         const int16_t (*expected_traces)[HS_INPUT_LENGTH])
{
    int exact = 0;
    for (int i = 0; i < hs_test_count; i++) {
        int predicted = hs_infer(hs_test_inputs[i], logits);
        hs_explain(predicted, trace);
        int logits_equal = memcmp(logits, expected_logits[i], sizeof logits) == 0;
        int trace_equal = memcmp(trace, expected_traces[i], sizeof trace) == 0;
        printf("%s %d class %d logits_equal %d trace_equal %d\n", prefix, i, predicted, logits_equal, trace_equal);
        exact += logits_equal && trace_equal;
    }
    return exact;
}

int main(void)
{
    /* Unbuffered, so every line printed so far reaches the console even if a later vector faults. */
    setvbuf(stdout, NULL, _IONBF, 0);
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
