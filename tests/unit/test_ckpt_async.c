/*
 * ckpt_save_async: the snapshot, the writer thread, collectives served at
 * step boundaries, and how outcomes are reported. Ranks are threads over the
 * fake communicator; faults come from the fixture's libfiu injector. Each
 * test names the bug it guards against (the seeded mutants async_*).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "ckpt/async.h"
#include "ckpt/ckpt.h"
#include "ckpt_fixture.h"
#include "fake_comm.h"

#define N 4096
#define WORLD 3

typedef struct rank_ctx {
	const char *root;
	int rank;
	ckpt_async_policy policy;
	int scenario;
	/* results */
	int rc[8];
	ckpt_async_done done[8];
	int in_flight_after;
	int restored_ok;
	uint64_t restored_step;
	int ack_before_dir;         /* a committed report came while the generation was not there */
	int deferred;               /* the writer copies the model stage; the loop fences before changing it */
} rank_ctx;

/* Each test runs twice: over a communicator with only blocking collectives, and one that offers nonblocking ones. */
static int nonblocking;

typedef struct st {
	float w[N];
	uint64_t counter;
} st;

static void fill(st *s, int rank, uint64_t step)
{
	for (int i = 0; i < N; i++)
		s->w[i] = (float)(step * 1000u + (uint64_t)rank * 77u + (uint64_t)i);
	s->counter = step * 10u + (uint64_t)rank;
}

static int matches(const st *s, int rank, uint64_t step)
{
	st want;
	fill(&want, rank, step);
	return memcmp(s->w, want.w, sizeof want.w) == 0 && s->counter == want.counter;
}

static ckpt *open_rank(ckpt_comm *comm, rank_ctx *x, st *s, ckpt_state **state)
{
	ckpt_config cfg = { .root = x->root, .keep_last = 5, .config_hash = 42 };
	ckpt *c = NULL;

	/* rank threads do not assert (cmocka's longjmp belongs to the main thread): set-up failing is fatal */
	if (ckpt_state_new(state) < 0 ||
	    ckpt_state_add_tensor(*state, "w", "params", CKPT_STAGE_MODEL, CKPT_F32, s->w, N,
				  (size_t)N * (size_t)comm->size, (size_t)N * (size_t)comm->rank) < 0 ||
	    ckpt_state_add_tensor(*state, "counter", "sched", CKPT_STAGE_TRAINING, CKPT_U64, &s->counter, 1,
				  (size_t)comm->size, (size_t)comm->rank) < 0 ||
	    ckpt_open(&c, &cfg, comm, *state, NULL) < 0)
		abort();
	return c;
}

/* A committed report must find its generation on disk. */
static void check_ack(rank_ctx *x, const ckpt_async_done *d)
{
	char path[4200];     /* not fx_path: its buffers are shared between threads */

	snprintf(path, sizeof path, "%s/step-%08llu/manifest.json", x->root, (unsigned long long)d->step);
	if (d->completed && d->code == 0 && !fx_exists(path))
		x->ack_before_dir = 1;
}

/* Restore into a fresh state: which step, and is every byte that step's? */
static void restore_check(ckpt_comm *comm, rank_ctx *x)
{
	st *s = calloc(1, sizeof *s);
	ckpt_state *state;
	ckpt *c = open_rank(comm, x, s, &state);
	ckpt_restore_info info;

	if (ckpt_restore(c, &info) == 0) {
		x->restored_step = info.step;
		x->restored_ok = matches(s, comm->rank, info.step);
	}
	ckpt_close(c);
	ckpt_state_free(state);
	free(s);
}

enum { SC_BASIC, SC_ERROR, SC_SNAPSHOT_ERROR, SC_DELAY, SC_SKIP, SC_WAIT_REUSE, SC_SYNC_DRAINS };

static void rank_main(ckpt_comm *comm, void *p)
{
	rank_ctx *x = p;
	st *s = calloc(1, sizeof *s);
	ckpt_state *state;
	ckpt *c = open_rank(comm, x, s, &state);
	ckpt_async_done d;

	x->rank = comm->rank;
	if (ckpt_async_set_policy(c, x->policy) < 0 ||
	    (nonblocking && ckpt_async_set_nonblocking(c, fake_comm_nonblocking()) < 0) ||
	    (x->deferred && ckpt_async_set_deferred(c, 1u << CKPT_STAGE_MODEL) < 0))
		abort();
	fill(s, comm->rank, 10);
	x->rc[0] = ckpt_save_async(c, 10, 0, &x->done[0]);
	check_ack(x, &x->done[0]);
	/* training goes on: the live state changes while the save is in flight */
	for (uint64_t step = 11; step <= 13; step++) {
		if (x->deferred)
			ckpt_async_fence(c);     /* the update of the model stage: after the writer copied it */
		fill(s, comm->rank, step);
		x->rc[1] = ckpt_async_poll(c, &d);
		check_ack(x, &d);
		if (d.completed)
			x->done[1] = d;
	}
	switch (x->scenario) {
	case SC_DELAY:
		x->in_flight_after = ckpt_async_in_flight(c);
		break;
	case SC_SKIP:
	case SC_WAIT_REUSE:
		fill(s, comm->rank, 20);
		x->rc[2] = ckpt_save_async(c, 20, 0, &x->done[2]);
		check_ack(x, &x->done[2]);
		fill(s, comm->rank, 21);
		break;
	case SC_SYNC_DRAINS:
		fill(s, comm->rank, 20);
		x->rc[2] = ckpt_save(c, 20, 0);
		x->rc[3] = ckpt_async_poll(c, &x->done[3]);     /* the async save's outcome, kept for this call */
		break;
	}
	x->rc[4] = ckpt_async_wait(c, &x->done[4]);
	check_ack(x, &x->done[4]);
	ckpt_close(c);
	ckpt_state_free(state);
	free(s);
	if (x->scenario == SC_WAIT_REUSE && comm->rank == 0) {    /* look at generation 10 itself */
		char gen[4200];
		snprintf(gen, sizeof gen, "%s/step-%08d", x->root, 20);
		fx_rmrf(gen);
	}
	restore_check(comm, x);
}

static void run_deferred(rank_ctx *x, const char *root, int scenario, ckpt_async_policy policy, int deferred)
{
	void *args[WORLD];

	for (int r = 0; r < WORLD; r++) {
		memset(&x[r], 0, sizeof x[r]);
		x[r].root = root;
		x[r].scenario = scenario;
		x[r].policy = policy;
		x[r].deferred = deferred;
		args[r] = &x[r];
	}
	assert_int_equal(fake_comm_run(WORLD, rank_main, args), 0);
}

static void run(rank_ctx *x, const char *root, int scenario, ckpt_async_policy policy)
{
	run_deferred(x, root, scenario, policy, 0);
}

/* The outcome of generation 10 on this rank, wherever it was reported. */
static const ckpt_async_done *outcome(const rank_ctx *x, uint64_t step)
{
	for (int i = 0; i < 8; i++)
		if (x->done[i].completed && x->done[i].step == step)
			return &x->done[i];
	return NULL;
}

static int setup(void **state)
{
	*state = fx_tmpdir();
	return 0;
}

static int teardown(void **state)
{
	fx_disarm();
	fx_rmrf(*state);
	free(*state);
	return 0;
}

/* Guards against: the writer reading the live state (no snapshot), or an ack at enqueue. */
static void test_async__saves_the_snapshot_and_acks_after_commit(void **state)
{
	rank_ctx x[WORLD];

	/* hold rank 1's writer so that training surely runs on while the save is in flight */
	fx_arm(&(fx_fault){ .rank = 1, .op = "phase", .phase = "save.shard_write", .nth = 1, .times = 1,
			    .action = { .kind = CKPT_FAULT_DELAY, .delay_ms = 200 } });
	run(x, *state, SC_BASIC, CKPT_ASYNC_WAIT);
	for (int r = 0; r < WORLD; r++) {
		const ckpt_async_done *d = outcome(&x[r], 10);
		assert_int_equal(x[r].rc[0], 0);
		assert_non_null(d);
		assert_int_equal(d->code, 0);
		assert_int_equal(x[r].ack_before_dir, 0);
		assert_int_equal(x[r].restored_step, 10);
		assert_true(x[r].restored_ok);      /* step 10's bytes, though the live state moved to 13 */
	}
}

/* Guards against: a background failure dropped (or reported as a commit). */
static void test_async__background_error_is_reported_on_every_rank(void **state)
{
	rank_ctx x[WORLD];

	fx_arm(&(fx_fault){ .rank = 2, .op = "fsync", .phase = "save.shard_sync", .nth = 1, .times = 1,
			    .action = { .kind = CKPT_FAULT_ERRNO, .err = EIO } });
	run(x, *state, SC_BASIC, CKPT_ASYNC_WAIT);
	assert_int_equal(fx_fired(), 1);
	for (int r = 0; r < WORLD; r++) {
		const ckpt_async_done *d = outcome(&x[r], 10);
		assert_int_equal(x[r].rc[0], 0);      /* the snapshot was fine: the failure comes later */
		assert_non_null(d);
		assert_int_equal(d->code, -EIO);
		assert_int_equal(d->err.rank, 2);
		assert_int_equal(x[r].restored_step, 0);   /* nothing committed */
	}
}

/* Guards against: one rank's failed snapshot starting the others' writers (a hang or a mixed save). */
static void test_async__snapshot_error_is_agreed_and_starts_nothing(void **state)
{
	rank_ctx x[WORLD];

	fx_arm(&(fx_fault){ .rank = 1, .op = "phase", .phase = "save.snapshot", .nth = 1, .times = 1,
			    .action = { .kind = CKPT_FAULT_ERRNO, .err = EIO } });
	run(x, *state, SC_BASIC, CKPT_ASYNC_WAIT);
	for (int r = 0; r < WORLD; r++) {
		assert_int_equal(x[r].rc[0], -EIO);
		assert_null(outcome(&x[r], 10));
		assert_int_equal(x[r].restored_step, 0);
	}
	assert_false(fx_exists(fx_path(*state, "step-%08d", 10)));
}

/* Guards against: a poll that waits for the disk (a delayed writer must leave the save in flight). */
static void test_async__delayed_writer_stays_in_flight_across_polls(void **state)
{
	rank_ctx x[WORLD];

	fx_arm(&(fx_fault){ .rank = 0, .op = "phase", .phase = "save.shard_write", .nth = 1, .times = 1,
			    .action = { .kind = CKPT_FAULT_DELAY, .delay_ms = 400 } });
	run(x, *state, SC_DELAY, CKPT_ASYNC_WAIT);
	for (int r = 0; r < WORLD; r++) {
		assert_int_equal(x[r].in_flight_after, 1);
		assert_int_equal(x[r].done[1].completed, 0);      /* three polls, no outcome */
		assert_non_null(outcome(&x[r], 10));             /* the wait reported it */
		assert_int_equal(outcome(&x[r], 10)->code, 0);
		assert_int_equal(x[r].restored_step, 10);
		assert_true(x[r].restored_ok);
	}
}

/* Guards against: a second save started while one is in flight (policy skip says so instead). */
static void test_async__skip_policy_skips_while_in_flight(void **state)
{
	rank_ctx x[WORLD];

	fx_arm(&(fx_fault){ .rank = 0, .op = "phase", .phase = "save.shard_write", .nth = 1, .times = 1,
			    .action = { .kind = CKPT_FAULT_DELAY, .delay_ms = 400 } });
	run(x, *state, SC_SKIP, CKPT_ASYNC_SKIP);
	for (int r = 0; r < WORLD; r++) {
		assert_int_equal(x[r].rc[2], CKPT_ASYNC_SKIPPED);
		assert_int_equal(outcome(&x[r], 10)->code, 0);
		assert_null(outcome(&x[r], 20));
		assert_int_equal(x[r].restored_step, 10);
		assert_true(x[r].restored_ok);
	}
	assert_false(fx_exists(fx_path(*state, "step-%08d", 20)));
}

/* Guards against: the next snapshot refilling the staging buffers the writer still reads. */
static void test_async__wait_policy_waits_before_reusing_staging(void **state)
{
	rank_ctx x[WORLD];

	fx_arm(&(fx_fault){ .rank = 1, .op = "phase", .phase = "save.shard_write", .nth = 1, .times = 1,
			    .action = { .kind = CKPT_FAULT_DELAY, .delay_ms = 300 } });
	run(x, *state, SC_WAIT_REUSE, CKPT_ASYNC_WAIT);
	for (int r = 0; r < WORLD; r++) {
		assert_int_equal(x[r].rc[2], 0);
		assert_int_equal(x[r].done[2].completed, 1);      /* the save waited for is reported by the new one */
		assert_int_equal(x[r].done[2].step, 10);
		assert_int_equal(outcome(&x[r], 20)->code, 0);
		assert_int_equal(x[r].restored_step, 10);         /* generation 20 removed: 10 itself */
		assert_true(x[r].restored_ok);
	}
}

/* Guards against: an outcome lost when a synchronous save finishes the background one. */
static void test_async__sync_save_keeps_the_background_outcome(void **state)
{
	rank_ctx x[WORLD];

	run(x, *state, SC_SYNC_DRAINS, CKPT_ASYNC_WAIT);
	for (int r = 0; r < WORLD; r++) {
		assert_int_equal(x[r].rc[2], 0);
		assert_non_null(outcome(&x[r], 10));
		assert_int_equal(outcome(&x[r], 10)->code, 0);
		assert_int_equal(x[r].restored_step, 20);
		assert_true(x[r].restored_ok);
	}
}

/* Guards against: the update not waiting for the writer's copy of the deferred stages (async_no_fence). */
static void test_async__deferred_copy_is_fenced_before_the_update(void **state)
{
	rank_ctx x[WORLD];

	/* rank 1's writer is held before it copies: the loop's fence must wait for it */
	fx_arm(&(fx_fault){ .rank = 1, .op = "phase", .phase = "save.stage", .nth = 1, .times = 1,
			    .action = { .kind = CKPT_FAULT_DELAY, .delay_ms = 300 } });
	run_deferred(x, *state, SC_BASIC, CKPT_ASYNC_WAIT, 1);
	assert_int_equal(fx_fired(), 1);
	for (int r = 0; r < WORLD; r++) {
		assert_int_equal(x[r].rc[0], 0);
		assert_int_equal(outcome(&x[r], 10)->code, 0);
		assert_int_equal(x[r].restored_step, 10);
		assert_true(x[r].restored_ok);      /* step 10's bytes, copied after the save call returned */
	}
}

/* Guards against: a failed copy on one rank committed by the others, or a fence that never returns. */
static void test_async__deferred_copy_error_fails_the_save_everywhere(void **state)
{
	rank_ctx x[WORLD];

	fx_arm(&(fx_fault){ .rank = 2, .op = "phase", .phase = "save.stage", .nth = 1, .times = 1,
			    .action = { .kind = CKPT_FAULT_ERRNO, .err = EIO } });
	run_deferred(x, *state, SC_BASIC, CKPT_ASYNC_WAIT, 1);
	assert_int_equal(fx_fired(), 1);
	for (int r = 0; r < WORLD; r++) {
		assert_int_equal(x[r].rc[0], 0);     /* the call's own snapshot was fine */
		assert_int_equal(outcome(&x[r], 10)->code, -EIO);
		assert_int_equal(outcome(&x[r], 10)->err.rank, 2);
		assert_int_equal(x[r].restored_step, 0);
	}
	assert_false(fx_exists(fx_path(*state, "step-%08d", 10)));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_async__saves_the_snapshot_and_acks_after_commit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_async__background_error_is_reported_on_every_rank, setup, teardown),
		cmocka_unit_test_setup_teardown(test_async__snapshot_error_is_agreed_and_starts_nothing, setup, teardown),
		cmocka_unit_test_setup_teardown(test_async__delayed_writer_stays_in_flight_across_polls, setup, teardown),
		cmocka_unit_test_setup_teardown(test_async__skip_policy_skips_while_in_flight, setup, teardown),
		cmocka_unit_test_setup_teardown(test_async__wait_policy_waits_before_reusing_staging, setup, teardown),
		cmocka_unit_test_setup_teardown(test_async__sync_save_keeps_the_background_outcome, setup, teardown),
		cmocka_unit_test_setup_teardown(test_async__deferred_copy_is_fenced_before_the_update, setup, teardown),
		cmocka_unit_test_setup_teardown(test_async__deferred_copy_error_fails_the_save_everywhere, setup,
						teardown),
	};
	int failed = cmocka_run_group_tests_name("blocking collectives", tests, NULL, NULL);

	nonblocking = 1;
	return failed + cmocka_run_group_tests_name("nonblocking collectives (pipelined)", tests, NULL, NULL);
}
