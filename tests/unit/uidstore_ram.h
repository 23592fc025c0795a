/*
 * uidstore_ram.h - a uidstore in memory, for the mapping tests.
 *
 * Transactions are real enough to test the rules: rollback restores the
 * state of begin().  Counters expose what the mapping did, and a write can
 * be made to fail on purpose.  Not for large mailboxes (linear search).
 */
#ifndef POPGATE_UIDSTORE_RAM_H
#define POPGATE_UIDSTORE_RAM_H

#include <stddef.h>

#include "uidstore.h"

struct uidstore_ram_stats {
	size_t write_transactions;  /* committed, with at least one write */
	size_t writes;              /* put/clear calls committed or not */
	size_t record_reads;        /* records_get calls */
	size_t exception_reads;     /* exceptions_get calls */
};

/* Free with uidstore_close(). */
struct uidstore *uidstore_ram_new(void);

struct uidstore_ram_stats uidstore_ram_stats(struct uidstore *st);

/* Make the Nth next write call fail (0: never). */
void uidstore_ram_fail_write(struct uidstore *st, size_t nth);

#endif
