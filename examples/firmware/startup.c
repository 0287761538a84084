/* Vector table and reset handler for a Cortex-M4 with FPU (here QEMU's mps2-an386 board). */
#include <stdint.h>
#include <stdlib.h>
#include "semihosting.h"

int main(void);
void reset_handler(void);

/* Defined by linker.ld. */
extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss, _estack;

#define CPACR (*(volatile uint32_t *)0xE000ED88)
#define FAULT_EXIT_STATUS 2

void reset_handler(void) /* global: linker.ld names it as the entry point */
{
    uint32_t *src = &_sidata;
    uint32_t *dst = &_sdata;
    while (dst < &_edata) {
        *dst++ = *src++;
    }
    for (dst = &_sbss; dst < &_ebss; dst++) {
        *dst = 0;
    }
    /* Full access to coprocessors 10 and 11 (the FPU) before any code may use float registers. */
    CPACR |= 0xFu << 20;
    __asm__ volatile("dsb\n\tisb" ::: "memory");
    exit(main()); /* exit, not return: flushes stdio and reports the status */
}

/* A fault ends the program with a distinct status instead of hanging the emulator. */
static void fault_handler(void)
{
    static const char message[] = "fault\n";
    sh_write(message, (int)sizeof message - 1);
    sh_exit(FAULT_EXIT_STATUS);
}

struct vector_table {
    void *initial_stack;
    void (*handlers[15])(void);
};

__attribute__((section(".vectors"), used)) static const struct vector_table vectors = {
    &_estack,
    {
        reset_handler,
        fault_handler, /* NMI */
        fault_handler, /* HardFault */
        fault_handler, /* MemManage */
        fault_handler, /* BusFault */
        fault_handler, /* UsageFault */
        0, 0, 0, 0,    /* reserved */
        fault_handler, /* SVCall */
        fault_handler, /* DebugMonitor */
        0,             /* reserved */
        fault_handler, /* PendSV */
        fault_handler, /* SysTick */
    },
};
