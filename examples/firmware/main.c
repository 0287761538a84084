/* Runs the exported model on every test vector and checks that the logits and the explanation trace
 * are bit-exact with the Python integer reference. Prints one line per vector, then a summary, and
 * exits with status 0 if every value matched, else 1. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include "heartsight_model.h"
#include "vectors.h"

static int8_t logits[HS_NUM_CLASSES];
static int16_t trace[HS_INPUT_LENGTH];

int main(void)
{
    int exact = 0;
    /* Unbuffered, so every line printed so far reaches the console even if a later vector faults. */
    setvbuf(stdout, NULL, _IONBF, 0);
    for (int i = 0; i < hs_test_count; i++) {
        int predicted = hs_infer(hs_test_inputs[i], logits);
        hs_explain(predicted, trace);
        int logits_equal = memcmp(logits, hs_test_logits[i], sizeof logits) == 0;
        int trace_equal = memcmp(trace, hs_test_traces[i], sizeof trace) == 0;
        printf("vector %d class %d logits_equal %d trace_equal %d\n", i, predicted, logits_equal, trace_equal);
        exact += logits_equal && trace_equal;
    }
    printf("summary n %d exact %d\n", hs_test_count, exact);
    return exact == hs_test_count ? 0 : 1;
}
