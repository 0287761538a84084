/* What the device path alone takes in flash and RAM: the smallest program that keeps all of it (init, feed, finish
 * with every part and the model reachable), without this example's harness (semihosting files, printf, the stage
 * counter, the second model). Built twice by `make size`: as is, and with -DSIZE_BASELINE (the same startup and an
 * empty main); the path is the difference. Never run: its sizes are read from the image and its map file. */
#include <stddef.h>
#include "heartsight_model.h"
#include "hs_monitor.h"

#ifndef SIZE_BASELINE

static hs_monitor_t monitor;
static hs_context_t model_context;
static float chunk[HS_MONITOR_MAX_CHUNK];
static volatile int events;
static volatile float input;  /* keeps the compiler from assuming anything about the samples */

static void on_event(const hs_monitor_event_t *event, void *user)
{
    (void)user;
    events += event->kind;
}
#endif

int main(void)
{
#ifndef SIZE_BASELINE
    hs_monitor_config_t config;
    int i, max_chunk = 0;
    if (hs_monitor_config_for((double)HS_MONITOR_MAX_FS, &config) != HS_MONITOR_OK) {
        return 1;
    }
    config.model_context = &model_context;
    if (hs_monitor_init(&monitor, &config) != HS_MONITOR_OK
        || hs_monitor_max_chunk(&monitor, &max_chunk) != HS_MONITOR_OK) {
        return 1;
    }
    for (i = 0; i < max_chunk; i++) {
        chunk[i] = input;
    }
    if (hs_monitor_feed(&monitor, chunk, max_chunk, on_event, NULL) < 0
        || hs_monitor_finish(&monitor, on_event, NULL) != HS_MONITOR_OK) {
        return 1;
    }
#endif
    return 0;
}
