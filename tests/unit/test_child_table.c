/*
 * test_child_table.c - the master's list of session processes: lookups and
 * removal keep the right processes, and connections coming and going do
 * not reallocate it (which fragmented the master's heap, the heap every
 * session process starts with).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "child_table.h"

static void add(struct child_table *t, pid_t pid, size_t listener)
{
	assert_int_equal(child_table_reserve(t), 0);
	child_table_add(t, pid, listener);
}

static void test_find_and_remove(void **state)
{
	struct child_table t = CHILD_TABLE_INIT;
	struct child *c;

	(void)state;
	assert_null(child_table_find(&t, 1));
	for (pid_t pid = 100; pid < 400; pid++)
		add(&t, pid, (size_t)pid % 3);
	assert_int_equal(t.count, 300);
	c = child_table_find(&t, 250);
	assert_non_null(c);
	assert_int_equal(c->pid, 250);
	assert_int_equal(c->listener, 250 % 3);
	assert_false(c->idle);
	child_table_remove(&t, c);
	assert_null(child_table_find(&t, 250));
	assert_int_equal(t.count, 299);
	/* Every other process is still there, once. */
	for (pid_t pid = 100; pid < 400; pid++) {
		if (pid != 250) {
			c = child_table_find(&t, pid);
			assert_non_null(c);
			assert_int_equal(c->listener, (size_t)pid % 3);
		}
	}
	while (t.count > 0)
		child_table_remove(&t, &t.children[0]);
	assert_null(child_table_find(&t, 100));
	child_table_free(&t);
	assert_null(t.children);
	assert_int_equal(t.capacity, 0);
}

/* Thousands of sessions rising and falling between 1 and 200 at once: the
 * array is allocated a handful of times while the peak rises, then never
 * again. */
static void test_churn_does_not_reallocate(void **state)
{
	struct child_table t = CHILD_TABLE_INIT;
	const struct child *seen = NULL;
	unsigned allocations = 0;
	pid_t next = 1;

	(void)state;
	for (int round = 0; round < 50; round++) {
		size_t peak = 1 + (size_t)(round * 37) % 200;

		while (t.count < peak) {
			add(&t, next++, 0);
			if (t.children != seen) {
				seen = t.children;
				allocations++;
			}
		}
		/* The oldest go first, as sessions end. */
		while (t.count > 1)
			child_table_remove(&t, &t.children[0]);
	}
	assert_true(t.capacity >= 200 && t.capacity < 400);
	assert_true(allocations <= 3);  /* 64, 128, 256 */
	child_table_free(&t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_find_and_remove),
		cmocka_unit_test(test_churn_does_not_reallocate),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
