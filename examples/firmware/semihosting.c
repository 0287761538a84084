/* Semihosting: the target executes `bkpt 0xAB` with the operation in r0 and a pointer to its
 * arguments in r1, and the host (QEMU or a debug probe) performs it. `_write` and `_exit` route
 * newlib's printf and exit through it. Without a debugger attached on real hardware, bkpt faults:
 * replace these two functions with a UART driver there. */
#include <stdint.h>
#include "semihosting.h"

#define SYS_OPEN 0x01
#define SYS_WRITE 0x05
#define SYS_EXIT_EXTENDED 0x20
#define OPEN_MODE_WRITE 4
#define ADP_STOPPED_APPLICATION_EXIT 0x20026

int _write(int fd, const char *buf, int len);
void _exit(int status);

static int semihost(int operation, void *arguments)
{
    register int r0 __asm__("r0") = operation;
    register void *r1 __asm__("r1") = arguments;
    __asm__ volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

int sh_write(const char *buf, int len)
{
    /* The console is the special file ":tt"; handle 1 is not the console under QEMU. */
    static int console = -1;
    if (console < 0) {
        uint32_t open_args[3] = {(uint32_t)":tt", OPEN_MODE_WRITE, 3};
        console = semihost(SYS_OPEN, open_args);
        if (console < 0) {
            return -1;
        }
    }
    uint32_t write_args[3] = {(uint32_t)console, (uint32_t)buf, (uint32_t)len};
    int not_written = semihost(SYS_WRITE, write_args);
    return len - not_written;
}

void sh_exit(int status)
{
    /* SYS_EXIT_EXTENDED carries the status to QEMU; plain SYS_EXIT always ends QEMU with 1. */
    uint32_t exit_args[2] = {ADP_STOPPED_APPLICATION_EXIT, (uint32_t)status};
    semihost(SYS_EXIT_EXTENDED, exit_args);
    for (;;) {
    }
}

int _write(int fd, const char *buf, int len)
{
    (void)fd; /* stdout and stderr both go to the console */
    return sh_write(buf, len);
}

void _exit(int status)
{
    sh_exit(status);
}
