"""The C device path under AddressSanitizer and UndefinedBehaviorSanitizer: random rates, chunk lengths, samples (NaN,
infinities, huge values, ADC counts with odd gains), finishes and re-inits; every call must answer with one of its
documented status codes, and nothing may touch memory it does not own."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from firmware_export.host import RUNTIME_DIR, STRICT_FLAGS
from firmware_export.monitor_tables import monitor_tables_c
from models.registry import ZOO_DIR

EXPORT = ZOO_DIR / "ecg_beat_wcam" / "int8"
RUNTIME = ["hs_monitor.c", "hs_dsp.c", "hs_rpeak.c", "hs_channels.c", "hs_policy.c", "hs_quality.c"]
RATES = [360.0, 250.0, 500.0, 128.0]

DRIVER = r"""
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include "heartsight_model.h"
#include "hs_monitor.h"


static hs_monitor_t monitor;
static hs_context_t model_context;
static float samples[2 * HS_MONITOR_MAX_CHUNK + 8];
static int16_t counts[2 * HS_MONITOR_MAX_CHUNK + 8];
static unsigned long events;

static uint32_t state = 12345u;
static uint32_t next(void) { state ^= state << 13; state ^= state >> 17; state ^= state << 5; return state; }
static float uniform(void) { return (float)(next() % 1000000u) / 1000000.0f; }

static void on_event(const hs_monitor_event_t *event, void *user)
{
    (void)user;
    events++;
    if (event->kind == HS_MONITOR_EVENT_ALERT) {  /* read everything an alert points to */
        volatile float sum = 0.0f;
        int32_t i;
        for (i = 0; i < event->alert.excerpt_length; i++) sum += event->alert.signal[i] + event->alert.trace[i];
        for (i = 0; i < event->alert.n_marks; i++) sum += (float)event->alert.marks[i].label;
    }
}

static int allowed(int status)
{
    return status == HS_MONITOR_OK || status == HS_MONITOR_HELD || status == HS_MONITOR_ERR_LENGTH ||
           status == HS_MONITOR_ERR_RANGE || status == HS_MONITOR_ERR_FINISHED || status == HS_MONITOR_ERR_NULL;
}

static float sample(int kind, float t)
{
    switch (kind) {
    case 0: return NAN;
    case 1: return (next() & 1u) ? INFINITY : -INFINITY;
    case 2: return 2.0e6f;
    case 3: return 0.0f;
    default: return sinf(t) + 0.3f * (uniform() - 0.5f) + ((next() % 200u) == 0u ? 3.0f : 0.0f);
    }
}

int main(int argc, char **argv)
{
    const double rates[] = {RATES, 1000.0, 42.0, -1.0};
    int rounds = argc > 1 ? atoi(argv[1]) : 20, round;
    state = argc > 2 ? (uint32_t)atoi(argv[2]) : state;
    for (round = 0; round < rounds; round++) {
        hs_monitor_config_t config;
        double fs = rates[next() % (sizeof rates / sizeof rates[0])];
        int status = hs_monitor_config_for(fs, &config), call, calls = 20 + (int)(next() % 200u), max_chunk = 0;
        float t = 0.0f;
        if (status != HS_MONITOR_OK) {
            if (status != HS_MONITOR_ERR_UNSUPPORTED) { printf("config_for %g: %d\n", fs, status); return 1; }
            if (hs_monitor_feed(&monitor, samples, 1, on_event, NULL) != HS_MONITOR_ERR_STATE &&
                round == 0) { printf("feed before init accepted\n"); return 1; }
            continue;
        }
        config.model_context = &model_context;
        if ((next() % 10u) == 0u) config.excerpt_s = (next() & 1u) ? -1.0 : 100.0;  /* a bad excerpt_s */
        status = hs_monitor_init(&monitor, &config);
        if (status != HS_MONITOR_OK) {
            if (status != HS_MONITOR_ERR_CONFIG) { printf("init: %d\n", status); return 1; }
            continue;
        }
        hs_monitor_max_chunk(&monitor, &max_chunk);
        for (call = 0; call < calls; call++) {
            int n = (int)(next() % (uint32_t)(2 * max_chunk + 2)) - ((next() % 50u) == 0u ? max_chunk : 0), i;
            int kind = (next() % 40u) == 0u ? (int)(next() % 4u) : 4;
            int burst = (next() % 3u) == 0u;
            int capped = n < 0 ? 0 : (n > 2 * HS_MONITOR_MAX_CHUNK ? 2 * HS_MONITOR_MAX_CHUNK : n);
            for (i = 0; i < capped; i++, t += 0.05f) {
                samples[i] = sample(burst || (next() % 97u) == 0u ? kind : 4, t);
                counts[i] = (int16_t)((int32_t)(next() % 65536u) - 32768);
            }
            if (next() & 1u) {
                status = hs_monitor_feed(&monitor, (next() % 100u) == 0u ? NULL : samples, capped, on_event, NULL);
            } else {
                float gain = (next() % 20u) == 0u ? -1.0f : 0.001f + uniform();
                status = hs_monitor_feed_int16(&monitor, counts, capped, gain, on_event, NULL);
            }
            if (!allowed(status)) { printf("feed: %d (n %d)\n", status, capped); return 1; }
        }
        status = hs_monitor_finish(&monitor, on_event, NULL);
        if (status != HS_MONITOR_OK) { printf("finish: %d\n", status); return 1; }
        if (hs_monitor_feed(&monitor, samples, 1, on_event, NULL) != HS_MONITOR_ERR_FINISHED) {
            printf("feed after finish accepted\n"); return 1;
        }
    }
    printf("ok %d rounds, %lu events\n", rounds, events);
    return 0;
}
"""


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc not installed")
def test_random_input_finds_nothing_under_the_sanitizers(tmp_path):
    (tmp_path / "tables.c").write_text(monitor_tables_c(RATES))
    (tmp_path / "fuzz.c").write_text(DRIVER.replace("RATES", ", ".join(map(repr, RATES))))
    sources = [tmp_path / "fuzz.c", tmp_path / "tables.c", *(RUNTIME_DIR / name for name in RUNTIME),
               *(EXPORT / name for name in ("heartsight_model.c", "hs_kernels.c", "hs_head.c", "hs_sha256.c"))]
    program = tmp_path / "fuzz"
    build = subprocess.run(["gcc", *STRICT_FLAGS, "-O1", "-g", "-fsanitize=address,undefined",
                            "-fno-sanitize-recover=all", "-I", str(RUNTIME_DIR), "-I", str(EXPORT), "-o",
                            str(program), *map(str, sources), "-lm"], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    for seed in (1, 2, 3):
        run = subprocess.run([str(program), "30", str(seed)], capture_output=True, text=True, timeout=300)
        assert run.returncode == 0 and run.stdout.startswith("ok"), run.stdout + run.stderr
        assert "runtime error" not in run.stderr
