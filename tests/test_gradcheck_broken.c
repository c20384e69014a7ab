/* test_gradcheck_broken.c - proof that the gradient check's tolerance catches
 * a wrong factor: an op whose backward forgets its factor of 2 (defined in
 * gradcheck_common.h through the public mechanism, ag_record + a backward
 * function) is checked with exactly the routine, step and tolerance that
 * test_gradcheck.c applies to the real ops.
 *
 * This test asserts that the broken op PASSES the tolerance. It must fail;
 * CTest runs it with WILL_FAIL TRUE, so the failure counts as a pass. If the
 * check or its tolerance ever became too loose to see a factor of 2, this
 * assertion would hold, the program would exit 0 and CTest would report it.
 * (test_gradcheck.c asserts the same fact directly: error > GC_TOL.)
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "autograd/params.h"
#include "gradcheck_common.h"

static void test_broken_double_passes_the_check(void **state) {
    (void)state;
    ag_params p;
    ag_params_init(&p);
    int shape[2] = {4, 5};
    assert_true(ag_params_add(&p, "x", 2, shape, 0) >= 0);
    assert_int_equal(ag_params_alloc(&p, AG_PARAMS_GRAD), 0);
    ag_fill_uniform(p.data, p.n, -1.0f, 1.0f, 11);
    ag_gc_result res;
    int rc = ag_gradcheck(gc_broken_double_fn, NULL, &p, GC_EPS, 11, &res);
    print_message("broken_double: max rel err %.3f, tolerance %.0e\n", res.max_err, GC_TOL);
    ag_params_free(&p);
    /* A check that did not run must not pass as the expected failure: return
     * normally, so the program exits 0 and CTest (WILL_FAIL) reports it. */
    if (rc != 0) return;
    assert_true(res.max_err < GC_TOL); /* expected to fail: the error is 0.5 */
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_broken_double_passes_the_check),
    };
    return cmocka_run_group_tests_name("gradcheck_broken", tests, NULL, NULL);
}
