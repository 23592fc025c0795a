/*
 * bench_stats.h - per-run totals and latency percentiles.
 *
 * Each worker thread owns one struct bench_stats and adds its sessions to
 * it; the main thread merges them after joining, so nothing is locked.
 */
#ifndef POPBENCH_STATS_H
#define POPBENCH_STATS_H

#include <stdint.h>
#include <stdio.h>

#include "bench_session.h"

struct latency_list {
	double *ms;
	size_t count, alloc;
};

struct bench_stats {
	unsigned long sessions;		/* completed without error */
	unsigned long errors;
	unsigned long aborted;
	unsigned long mismatches;
	unsigned long messages;
	uint64_t bytes;
	struct latency_list session_ms;
	struct latency_list login_ms;
	struct latency_list ready_ms;
	const char *first_error;
	char first_detail[96];
};

void bench_stats_init(struct bench_stats *stats);
void bench_stats_free(struct bench_stats *stats);
/* 0, or -1 when out of memory. */
int bench_stats_add(struct bench_stats *stats,
		    const struct session_result *res);
/* Move everything of FROM into INTO; FROM is left empty.  0 or -1. */
int bench_stats_merge(struct bench_stats *into, struct bench_stats *from);

/* Nearest-rank percentile P (0..100) of LIST; sorts LIST.  0 if empty. */
double latency_percentile(struct latency_list *list, double p);

/* Write a JSON string literal (quotes included) for S. */
void json_string(FILE *out, const char *s);

#endif
