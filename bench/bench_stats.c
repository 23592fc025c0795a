/*
 * bench_stats.c - session totals and latency percentiles.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bench_stats.h"

void bench_stats_init(struct bench_stats *stats)
{
	memset(stats, 0, sizeof(*stats));
}

void bench_stats_free(struct bench_stats *stats)
{
	free(stats->session_ms.ms);
	free(stats->login_ms.ms);
	free(stats->ready_ms.ms);
	memset(stats, 0, sizeof(*stats));
}

static int latency_add(struct latency_list *list, double ms)
{
	if (list->count == list->alloc) {
		size_t alloc = list->alloc ? list->alloc * 2 : 256;
		double *grown = realloc(list->ms, alloc * sizeof(*grown));

		if (grown == NULL)
			return -1;
		list->ms = grown;
		list->alloc = alloc;
	}
	list->ms[list->count++] = ms;
	return 0;
}

int bench_stats_add(struct bench_stats *stats,
		    const struct session_result *res)
{
	stats->mismatches += res->mismatches;
	stats->messages += res->messages;
	stats->bytes += res->bytes;
	if (res->aborted) {
		stats->aborted++;
		return 0;
	}
	if (!res->ok) {
		stats->errors++;
		if (stats->first_error == NULL) {
			stats->first_error = res->error;
			memcpy(stats->first_detail, res->detail,
			       sizeof(stats->first_detail));
		}
		return 0;
	}
	stats->sessions++;
	if (latency_add(&stats->session_ms, res->total_ms) < 0)
		return -1;
	if (res->login_ms >= 0 &&
	    latency_add(&stats->login_ms, res->login_ms) < 0)
		return -1;
	if (res->ready_ms >= 0 &&
	    latency_add(&stats->ready_ms, res->ready_ms) < 0)
		return -1;
	return 0;
}

static int latency_merge(struct latency_list *into, struct latency_list *from)
{
	size_t i;

	for (i = 0; i < from->count; i++) {
		if (latency_add(into, from->ms[i]) < 0)
			return -1;
	}
	return 0;
}

int bench_stats_merge(struct bench_stats *into, struct bench_stats *from)
{
	into->sessions += from->sessions;
	into->errors += from->errors;
	into->aborted += from->aborted;
	into->mismatches += from->mismatches;
	into->messages += from->messages;
	into->bytes += from->bytes;
	if (into->first_error == NULL && from->first_error != NULL) {
		into->first_error = from->first_error;
		memcpy(into->first_detail, from->first_detail,
		       sizeof(into->first_detail));
	}
	if (latency_merge(&into->session_ms, &from->session_ms) < 0 ||
	    latency_merge(&into->login_ms, &from->login_ms) < 0 ||
	    latency_merge(&into->ready_ms, &from->ready_ms) < 0)
		return -1;
	bench_stats_free(from);
	return 0;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

double latency_percentile(struct latency_list *list, double p)
{
	size_t rank;

	if (list->count == 0)
		return 0;
	qsort(list->ms, list->count, sizeof(*list->ms), cmp_double);
	rank = (size_t)ceil(p / 100.0 * (double)list->count);
	if (rank < 1)
		rank = 1;
	return list->ms[rank - 1];
}

void json_string(FILE *out, const char *s)
{
	fputc('"', out);
	for (; *s != '\0'; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\')
			fprintf(out, "\\%c", c);
		else if (c < 0x20 || c >= 0x7f)
			fprintf(out, "\\u%04x", c);
		else
			fputc(c, out);
	}
	fputc('"', out);
}
