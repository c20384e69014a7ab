/* test_tape.c - the tape itself: accumulation, repeated backward, the arena,
 * inference mode. Uses only ag_matmul so that a failure here points at the
 * tape, not at an op. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/gradcheck.h"
#include "autograd/ops.h"
#include "autograd/params.h"

typedef struct fixture {
    ag_ctx *c;
    ag_params p; /* x[3,3], w[3,3] */
} fixture;

static int setup(void **state) {
    fixture *f = calloc(1, sizeof *f);
    f->c = ag_ctx_new();
    ag_params_init(&f->p);
    int shape[2] = {3, 3};
    ag_params_add(&f->p, "x", 2, shape, 0);
    ag_params_add(&f->p, "w", 2, shape, 0);
    assert_int_equal(ag_params_alloc(&f->p, AG_PARAMS_GRAD), 0);
    ag_fill_uniform(f->p.data, f->p.n, -1.0f, 1.0f, 42);
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture *f = *state;
    ag_params_free(&f->p);
    ag_ctx_free(f->c);
    free(f);
    return 0;
}

/* y = x x: x is used twice, so dL/dx = R x^T + x^T R for L = sum R*y. */
static void test_tensor_used_twice_gets_both_contributions(void **state) {
    fixture *f = *state;
    ag_tensor *x = ag_param(&f->p, 0);
    ag_tensor *y = ag_matmul(f->c, x, x, false, false);
    assert_non_null(y);
    float R[9];
    ag_fill_uniform(R, 9, -1.0f, 1.0f, 7);
    ag_params_zero_grad(&f->p);
    assert_int_equal(ag_backward_seed(f->c, y, R), 0);
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) {
            double want = 0.0;
            for (int k = 0; k < 3; k++)
                want += (double)R[i * 3 + k] * x->data[j * 3 + k]    /* (R x^T)_ij */
                        + (double)x->data[k * 3 + i] * R[k * 3 + j]; /* (x^T R)_ij */
            assert_float_equal(x->grad[i * 3 + j], want, 1e-5);
        }
}

/* Two backward passes over one tape give exactly twice the leaf gradient. */
static void test_second_backward_accumulates(void **state) {
    fixture *f = *state;
    ag_tensor *x = ag_param(&f->p, 0), *w = ag_param(&f->p, 1);
    ag_tensor *h = ag_matmul(f->c, x, w, false, true);
    ag_tensor *y = ag_matmul(f->c, h, w, false, false); /* intermediate h, w used twice */
    float R[9];
    ag_fill_uniform(R, 9, -1.0f, 1.0f, 9);
    ag_params_zero_grad(&f->p);
    ag_backward_seed(f->c, y, R);
    float once[18];
    memcpy(once, f->p.grad, 9 * sizeof(float));
    memcpy(once + 9, f->p.grad + f->p.offset[1], 9 * sizeof(float));
    ag_backward_seed(f->c, y, R);
    for (int i = 0; i < 9; i++) {
        assert_float_equal(f->p.grad[i], 2.0f * once[i], 1e-6);
        assert_float_equal(f->p.grad[f->p.offset[1] + i], 2.0f * once[9 + i], 1e-6);
    }
}

/* Resetting the context forgets activations but not parameters or grads, and
 * after the first step a repeated step allocates nothing. */
static void test_reset_keeps_params_and_stops_allocating(void **state) {
    fixture *f = *state;
    float before[9];
    memcpy(before, f->p.data, sizeof before);
    size_t mallocs = 0, grows = 0;
    for (int step = 0; step < 4; step++) {
        assert_int_equal(ag_ctx_reset(f->c), 0);
        ag_tensor *x = ag_param(&f->p, 0), *w = ag_param(&f->p, 1);
        ag_tensor *y = x;
        for (int l = 0; l < 200; l++) y = ag_matmul(f->c, y, w, false, false); /* > 1 MiB, > 256 nodes */
        assert_non_null(y);
        ag_params_zero_grad(&f->p);
        float R[9] = {0};
        assert_int_equal(ag_backward_seed(f->c, y, R), 0);
        if (step == 1) {
            mallocs = f->c->arena.n_mallocs;
            grows = f->c->n_tape_grows;
        }
        if (step > 1) {
            assert_int_equal(f->c->arena.n_mallocs, mallocs);
            assert_int_equal(f->c->n_tape_grows, grows);
        }
    }
    assert_memory_equal(f->p.data, before, sizeof before);
}

/* Inference mode records no node and gives outputs no gradient buffer. */
static void test_inference_mode_records_nothing(void **state) {
    fixture *f = *state;
    ag_ctx_reset(f->c);
    bool prev = ag_set_grad(f->c, false);
    assert_true(prev);
    size_t used0 = f->c->arena.used;
    ag_tensor *y = ag_matmul(f->c, ag_param(&f->p, 0), ag_param(&f->p, 1), false, false);
    assert_non_null(y);
    assert_int_equal(f->c->n_nodes, 0);
    assert_null(y->grad);
    assert_false(y->requires_grad);
    /* only the output tensor and its data were allocated: no grad, no saved state */
    assert_true(f->c->arena.used - used0 <= 2 * 64 + 64 * ((9 * sizeof(float) + 63) / 64));
    ag_set_grad(f->c, true);
    y = ag_matmul(f->c, ag_param(&f->p, 0), ag_param(&f->p, 1), false, false);
    assert_int_equal(f->c->n_nodes, 1);
    assert_non_null(y->grad);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_tensor_used_twice_gets_both_contributions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_second_backward_accumulates, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reset_keeps_params_and_stops_allocating, setup, teardown),
        cmocka_unit_test_setup_teardown(test_inference_mode_records_nothing, setup, teardown),
    };
    return cmocka_run_group_tests_name("tape", tests, NULL, NULL);
}
