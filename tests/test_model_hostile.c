/* test_model_hostile.c - model files that are valid byte for byte (a correct
 * checksum) but hold what no exporter writes, and files that are not model
 * files at all: each is refused with a message naming the tensor, the element
 * or the field, before anything runs on it.
 *   - an f32 tensor with a NaN, or an infinity (the old reader loaded it and
 *     `pare eval` printed "loss nan");
 *   - a q8 scale of FLT_MAX: finite, but the integer kernels' sums overflow;
 *   - a 3 GB sparse file with a wrong magic, and a FIFO: refused by the
 *     header (or the file type) without reading the file into memory. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <fcntl.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "autograd/hash.h"
#include "infer/format.h"
#include "model_fixture.h"

static char path[128];

static int setup(void **state) {
    (void)state;
    snprintf(path, sizeof path, "/tmp/pare_test_hostile_%d.pare", (int)getpid());
    return 0;
}

static int teardown(void **state) {
    (void)state;
    unlink(path);
    return 0;
}

/* Writes a model of storage type dtype, then replaces 4 bytes of tensor
 * `name` at byte `at` of its data with v and fixes the checksum. */
static void write_with(int dtype, const char *name, size_t at, float v) {
    fx_spec s = fx_default(dtype);
    char err[512];
    if (fx_write_model(path, &s, err, sizeof err) != 0) fail_msg("%s", err);
    size_t len = 0;
    uint8_t *buf = fx_read(path, &len);
    assert_non_null(buf);
    inf_file f;
    assert_int_equal(inf_file_parse(&f, buf, len, path, err, sizeof err), 0);
    const inf_tensor *t = inf_file_find(&f, name);
    assert_non_null(t);
    assert_true(at + 4 <= t->bytes);
    size_t off = (size_t)t->offset + at;
    inf_file_close(&f);
    memcpy(buf + off, &v, 4);
    fx_put64(buf + len - 8, ag_fnv1a(AG_FNV_INIT, buf, len - 8));
    FILE *o = fopen(path, "wb");
    assert_non_null(o);
    assert_int_equal(fwrite(buf, 1, len, o), len);
    fclose(o);
    free(buf);
}

static void expect(const char *want1, const char *want2) {
    inf_file f;
    char err[512];
    assert_int_equal(inf_file_open(&f, path, err, sizeof err), -1);
    print_message("%s\n", err);
    assert_non_null(strstr(err, want1));
    if (want2) assert_non_null(strstr(err, want2));
}

static void test_non_finite_weights(void **state) {
    (void)state;
    write_with(INF_F32, "h.0.mlp.fc.w", 4 * 7, NAN);
    expect("tensor 'h.0.mlp.fc.w' element 7 is nan", "expected finite");
    write_with(INF_F32, "wte", 0, INFINITY);
    expect("tensor 'wte' element 0 is inf", NULL);
    write_with(INF_F32, "lnf.w", 4, -INFINITY); /* vectors too */
    expect("tensor 'lnf.w' element 1 is -inf", NULL);
}

static void test_overflowing_scale(void **state) {
    (void)state;
    /* q8 [128, 32]: 8 row blocks x 8 column blocks of 64 bytes of codes, then the scales */
    write_with(INF_Q8, "h.0.mlp.fc.w", 8 * 8 * 64, FLT_MAX);
    expect("scale 0 is 3.40282e+38", "overflows the integer kernels");
}

static void test_not_a_model_file(void **state) {
    (void)state;
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "NOTAMODL", 8), 8);
    int sparse = ftruncate(fd, (off_t)3 << 30);
    close(fd);
    if (sparse == 0) expect("magic: not a pare model file", NULL);
    else print_message("note: no sparse 3 GB file on this file system; the large-file case was not run\n");
    unlink(path);
    assert_int_equal(mkfifo(path, 0600), 0);
    expect("not a regular file", NULL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_non_finite_weights, setup, teardown),
        cmocka_unit_test_setup_teardown(test_overflowing_scale, setup, teardown),
        cmocka_unit_test_setup_teardown(test_not_a_model_file, setup, teardown),
    };
    return cmocka_run_group_tests_name("model_hostile", tests, NULL, NULL);
}
