/*
 * monotime.h - milliseconds on the monotonic clock, for deadlines.
 *
 * Deadlines never use the wall clock, which can jump.
 */
#ifndef POPGATE_MONOTIME_H
#define POPGATE_MONOTIME_H

#include <stdint.h>
#include <time.h>

static inline uint64_t monotime_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Milliseconds left until DEADLINE, 0 once it has passed. */
static inline uint64_t monotime_left_ms(uint64_t deadline)
{
	uint64_t now = monotime_ms();

	return deadline > now ? deadline - now : 0;
}

/* MS milliseconds as the timespec ppoll() takes. */
static inline struct timespec monotime_timespec(uint64_t ms)
{
	return (struct timespec) {
		.tv_sec = (time_t)(ms / 1000),
		.tv_nsec = (long)(ms % 1000) * 1000000,
	};
}

#endif
