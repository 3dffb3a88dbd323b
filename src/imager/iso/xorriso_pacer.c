/*
 * xorriso pacer: a preload library for the one xorriso run that writes an ISO.
 *
 * xorriso watches its writer thread from a loop (Xorriso_pacifier_loop) that first sleeps
 * usleep(100002) while the thread spawns, then checks the drive status only once per
 * wall-clock second, at .2 s past it, sleeping usleep(100000) in between. A write that is not
 * done within the first 100 ms therefore ends up waiting 0.3 to 1.2 s for the next check, with
 * nothing left to do. This library shortens exactly those two sleeps to 1 ms: the loop polls
 * about every 12 ms instead, and xorriso exits right after its writer. Every other sleep, and
 * every byte xorriso writes, stays as it was.
 *
 * Built by build.rs, embedded in the binary and preloaded by src/imager/iso/pacer.rs.
 */
#define _GNU_SOURCE
#include <time.h>
#include <unistd.h>

/* The sleep this library makes of a usleep() of `us` microseconds. */
unsigned int if_pacer_sleep_us(unsigned int us)
{
    return (us == 100000 || us == 100002) ? 1000 : us;
}

int usleep(useconds_t us)
{
    unsigned int paced = if_pacer_sleep_us(us);
    struct timespec ts = { paced / 1000000, (long)(paced % 1000000) * 1000 };
    return nanosleep(&ts, NULL);
}
