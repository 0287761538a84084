/* SYS_OPEN, SYS_READ, SYS_FLEN and SYS_CLOSE: the file half of semihosting that ../firmware/semihosting.c leaves
 * out (it only writes to the console). Each is `bkpt 0xAB` with the operation in r0 and its argument block in r1. */
#include <stdint.h>
#include <string.h>
#include "semihosting_files.h"

#define SYS_OPEN 0x01
#define SYS_CLOSE 0x02
#define SYS_READ 0x06
#define SYS_FLEN 0x0C
#define OPEN_MODE_READ_BINARY 1  /* fopen's "rb" */

static int semihost(int operation, void *arguments)
{
    register int r0 __asm__("r0") = operation;
    register void *r1 __asm__("r1") = arguments;
    __asm__ volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

int sh_open_read(const char *path)
{
    uint32_t args[3] = {(uint32_t)path, OPEN_MODE_READ_BINARY, (uint32_t)strlen(path)};
    return semihost(SYS_OPEN, args);
}

int sh_read(int handle, void *buf, int len)
{
    uint32_t args[3] = {(uint32_t)handle, (uint32_t)buf, (uint32_t)len};
    const int not_read = semihost(SYS_READ, args);  /* the host answers with the bytes it did NOT read */
    return not_read < 0 || not_read > len ? -1 : len - not_read;
}

long sh_flen(int handle)
{
    uint32_t args[1] = {(uint32_t)handle};
    return semihost(SYS_FLEN, args);
}

int sh_close(int handle)
{
    uint32_t args[1] = {(uint32_t)handle};
    return semihost(SYS_CLOSE, args) == 0 ? 0 : -1;
}
