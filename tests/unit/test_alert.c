/*
 * Save anomaly alerts (ckpt/alert.h, ckpt/src/alert.c) with values fed
 * directly, no clock. Guards against: alerts on microsecond jitter (a tiny
 * save's MAD is microseconds), alerts before a baseline exists, a slow rank's
 * alert naming another rank, a failure streak never reported or reported on
 * every failure, and catalog labels lost or passed through unprintable.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <setjmp.h>
#include <cmocka.h>

#include "alert.h"
#include "internal.h"

static ckpt_detector *detector(const ckpt_alert_config *in, int nranks)
{
	ckpt_alert_config c;
	ckpt_detector *d;
	assert_int_equal(ckpt__alert_config_resolve(in, &c, NULL, 0), 0);
	assert_int_equal(ckpt__detector_new(&d, &c, nranks), 0);
	return d;
}

/* n saves of every rank at `seconds` (1 MiB each); returns the alerts raised. */
static int feed(ckpt_detector *d, int nranks, uint64_t *step, int n, double seconds)
{
	ckpt_alert out[8];
	int raised = 0;
	for (int i = 0; i < n; i++, *step += 10)
		for (int r = 0; r < nranks; r++)
			raised += ckpt__detector_ok(d, *step, r, seconds + 1e-4 * ((i * 7 + r) % 5), 1u << 20, out, 8);
	return raised;
}

static void test_median_mad__odd_and_even(void **state)
{
	(void)state;
	double v[] = { 5, 1, 3, 100, 2 }, tmp[6], med, mad;
	ckpt__median_mad(v, 5, tmp, &med, &mad);
	assert_true(med == 3 && mad == 2);          /* |v - 3| = 2 2 0 97 1: the outlier moves neither */
	double w[] = { 4, 1, 3, 2 };
	ckpt__median_mad(w, 4, tmp, &med, &mad);
	assert_true(med == 2.5 && mad == 1);        /* |w - 2.5| = 1.5 1.5 0.5 0.5 */
}

static void test_config__defaults_and_ranges(void **state)
{
	(void)state;
	ckpt_alert_config c;
	char why[128];
	assert_int_equal(ckpt__alert_config_resolve(&(ckpt_alert_config){ 0 }, &c, why, sizeof why), 0);
	assert_int_equal(c.window, CKPT_ALERT_DEFAULT_WINDOW);
	assert_int_equal(c.warmup, CKPT_ALERT_DEFAULT_WARMUP);
	assert_true(c.floor_seconds == CKPT_ALERT_DEFAULT_FLOOR_SECONDS && c.fail_streak == CKPT_ALERT_DEFAULT_FAIL_STREAK);
	assert_int_equal(ckpt__alert_config_resolve(&(ckpt_alert_config){ .window = 2 }, &c, why, sizeof why), -EINVAL);
	assert_non_null(strstr(why, "window"));
	assert_int_equal(ckpt__alert_config_resolve(&(ckpt_alert_config){ .window = 4, .warmup = 5 }, &c, why, sizeof why),
			 -EINVAL);
	assert_int_equal(ckpt__alert_config_resolve(&(ckpt_alert_config){ .floor_ratio = 0.5 }, &c, why, sizeof why),
			 -EINVAL);
	assert_int_equal(ckpt__alert_config_resolve(&(ckpt_alert_config){ .k = -1 }, &c, why, sizeof why), -EINVAL);
}

static void test_detector__no_alert_during_warmup(void **state)
{
	(void)state;
	ckpt_detector *d = detector(&(ckpt_alert_config){ .warmup = 4 }, 1);
	ckpt_alert out[4];
	uint64_t step = 10;
	assert_int_equal(feed(d, 1, &step, 3, 0.001), 0);
	/* three samples: a 100 s save is not judged yet */
	assert_int_equal(ckpt__detector_ok(d, step, 0, 100, 1u << 20, out, 4), 0);
	ckpt__detector_free(d);
}

static void test_detector__jitter_under_the_floor_never_alerts(void **state)
{
	(void)state;
	ckpt_detector *d = detector(NULL, 4);
	ckpt_alert out[8];
	uint64_t step = 10;
	assert_int_equal(feed(d, 4, &step, 10, 0.001), 0);
	/* 1000 times the median, thousands of MADs, but 1.9 s: under the 2 s floor */
	assert_int_equal(ckpt__detector_ok(d, step, 2, 1.9, 1u << 20, out, 8), 0);
	ckpt__detector_free(d);
}

static void test_detector__slow_save_names_its_rank_and_metric(void **state)
{
	(void)state;
	ckpt_detector *d = detector(NULL, 4);
	ckpt_alert out[8];
	uint64_t step = 10;
	assert_int_equal(feed(d, 4, &step, 6, 0.001), 0);
	int n = 0;
	for (int r = 0; r < 4; r++)
		n += ckpt__detector_ok(d, step, r, r == 1 ? 3.0 : 0.001, 1u << 20, out + n, 8 - n);
	assert_int_equal(n, 2);                      /* duration and throughput, both of rank 1 */
	assert_int_equal(out[0].rank, 1);
	assert_int_equal(out[0].metric, CKPT_ALERT_DURATION);
	assert_int_equal(out[0].step, step);
	assert_true(out[0].value == 3.0 && out[0].threshold > 2.0 && out[0].threshold < 2.01);
	assert_int_equal(out[0].samples, 6);
	assert_int_equal(out[1].rank, 1);
	assert_int_equal(out[1].metric, CKPT_ALERT_THROUGHPUT);
	assert_string_equal(ckpt_alert_metric_name(out[1].metric), "throughput");
	ckpt__detector_free(d);
}

/* Seven 10 s saves of 1000 MiB (median 10, MAD 0.2), then one of `seconds`: the alerts it raises. */
static int large(double seconds, ckpt_alert *out)
{
	ckpt_detector *d = detector(NULL, 1);
	double base[] = { 10, 10.5, 9.5, 10.2, 9.8, 10.1, 9.9 };
	for (int i = 0; i < 7; i++)
		assert_int_equal(ckpt__detector_ok(d, 10 * (uint64_t)(i + 1), 0, base[i], 1000u << 20, out, 4), 0);
	int n = ckpt__detector_ok(d, 80, 0, seconds, 1000u << 20, out, 4);
	ckpt__detector_free(d);
	return n;
}

static void test_detector__large_saves_use_k_mad_and_the_ratio(void **state)
{
	(void)state;
	ckpt_alert out[4];
	/* k * MAD = 1.2 and the floor 2 are below the ratio's 0.5 * median = 5: the bound is 15 s */
	assert_int_equal(large(14.9, out), 0);
	assert_int_equal(large(15.5, out), 2);
	assert_true(fabs(out[0].threshold - 15.0) < 1e-9);
	assert_true(out[1].metric == CKPT_ALERT_THROUGHPUT && out[1].median == 100.0);
}

static void test_detector__window_forgets_the_old_regime(void **state)
{
	(void)state;
	ckpt_detector *d = detector(&(ckpt_alert_config){ .window = 5, .warmup = 3 }, 1);
	ckpt_alert out[4];
	uint64_t step = 10;
	assert_int_equal(feed(d, 1, &step, 5, 0.01), 0);
	/* the storage got slower for good: alerts until the window holds mostly the new times */
	int raised = 0, last = -1;
	for (int i = 0; i < 8; i++, step += 10)
		if (ckpt__detector_ok(d, step, 0, 5.0, 1u << 20, out, 4)) {
			raised++;
			last = i;
		}
	assert_int_equal(raised, 3);                 /* the 3rd slow sample makes 5 s the median */
	assert_int_equal(last, 2);
	ckpt__detector_free(d);
}

static void test_detector__failure_streak_alerts_every_m(void **state)
{
	(void)state;
	ckpt_detector *d = detector(&(ckpt_alert_config){ .fail_streak = 3 }, 4);
	ckpt_alert out[4];
	int at[8] = { 0 };
	for (int i = 0; i < 7; i++)
		at[i] = ckpt__detector_failed(d, 10 * (uint64_t)(i + 1), 2, out, 4);
	assert_int_equal(at[0] + at[1] + at[3] + at[4] + at[6], 0);
	assert_int_equal(at[2], 1);
	assert_int_equal(at[5], 1);
	assert_int_equal(out[0].rank, 2);
	assert_int_equal(out[0].metric, CKPT_ALERT_FAILURES);
	assert_true(out[0].value == 6 && out[0].threshold == 3);
	/* a committed save ends the streak: two more failures raise nothing */
	assert_int_equal(ckpt__detector_ok(d, 80, 2, 0.001, 1, out, 4), 0);
	assert_int_equal(ckpt__detector_failed(d, 90, 2, out, 4) + ckpt__detector_failed(d, 100, 2, out, 4), 0);
	/* another rank's failures are its own streak */
	assert_int_equal(ckpt__detector_failed(d, 110, 0, out, 4), 0);
	ckpt__detector_free(d);
}

static void test_detector__bad_input_is_ignored(void **state)
{
	(void)state;
	ckpt_detector *d = detector(NULL, 2);
	ckpt_alert out[2];
	assert_int_equal(ckpt__detector_ok(d, 10, 2, 1.0, 1, out, 2), 0);          /* no such rank */
	assert_int_equal(ckpt__detector_ok(d, 10, 0, NAN, 1, out, 2), 0);
	assert_int_equal(ckpt__detector_failed(d, 10, -1, out, 2), 0);
	assert_int_equal(ckpt__detector_ok(NULL, 10, 0, 1.0, 1, out, 2), 0);
	ckpt__detector_free(d);
	ckpt__detector_free(NULL);
}

/* ---- catalog labels in the manifest ---- */

static void render_parse(const char *exp, const char *ver, ckpt_manifest *back, char **text)
{
	ckpt_file_entry f = { .rank = 0, .size = 8, .hash = 1 };
	ckpt_tensor_entry t = { .name = "w", .component = "params", .dtype = CKPT_F32, .global_elems = 2, .local_elems = 2,
				.nbytes = 8 };
	ckpt_manifest m = { .schema_version = CKPT_SCHEMA_VERSION, .step = 40, .world_size = 1, .config_hash = 7,
			    .nfiles = 1, .files = &f, .ntensors = 1, .all = &t };
	char why[300];
	size_t len;
	ckpt__shard_name(f.name, sizeof f.name, 0);
	snprintf(m.experiment, sizeof m.experiment, "%s", exp);
	snprintf(m.code_version, sizeof m.code_version, "%s", ver);
	assert_int_equal(ckpt__manifest_render(&m, text, &len), 0);
	assert_int_equal(ckpt__manifest_parse(*text, len, back, why, sizeof why), 0);
}

static void test_labels__round_trip(void **state)
{
	(void)state;
	ckpt_manifest back;
	char *text;
	render_parse("lr-sweep \"3\"", "65a276b1c2d3", &back, &text);
	assert_string_equal(back.experiment, "lr-sweep \"3\"");
	assert_string_equal(back.code_version, "65a276b1c2d3");
	assert_non_null(strstr(text, "\"labels\":{"));
	ckpt__manifest_free(&back);
	free(text);
	/* none given: no member at all, as every earlier manifest */
	render_parse("", "", &back, &text);
	assert_null(strstr(text, "labels"));
	assert_string_equal(back.experiment, "");
	ckpt__manifest_free(&back);
	free(text);
}

static void test_labels__unprintable_bytes_from_disk_are_masked(void **state)
{
	(void)state;
	ckpt_manifest back;
	char *text;
	render_parse("a\x1b[2Jb", "v\x7f", &back, &text);
	assert_string_equal(back.experiment, "a?[2Jb");
	assert_string_equal(back.code_version, "v?");
	ckpt__manifest_free(&back);
	free(text);
	ckpt_config bad = { .experiment = "tab\there" };
	assert_int_equal(ckpt__labels_check(&bad), -EINVAL);
	char longer[200];
	memset(longer, 'x', sizeof longer - 1);
	longer[sizeof longer - 1] = '\0';
	assert_int_equal(ckpt__labels_check(&(ckpt_config){ .code_version = longer }), -EINVAL);
	assert_int_equal(ckpt__labels_check(&(ckpt_config){ .experiment = "ok", .code_version = NULL }), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_median_mad__odd_and_even),
		cmocka_unit_test(test_config__defaults_and_ranges),
		cmocka_unit_test(test_detector__no_alert_during_warmup),
		cmocka_unit_test(test_detector__jitter_under_the_floor_never_alerts),
		cmocka_unit_test(test_detector__slow_save_names_its_rank_and_metric),
		cmocka_unit_test(test_detector__large_saves_use_k_mad_and_the_ratio),
		cmocka_unit_test(test_detector__window_forgets_the_old_regime),
		cmocka_unit_test(test_detector__failure_streak_alerts_every_m),
		cmocka_unit_test(test_detector__bad_input_is_ignored),
		cmocka_unit_test(test_labels__round_trip),
		cmocka_unit_test(test_labels__unprintable_bytes_from_disk_are_masked),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
