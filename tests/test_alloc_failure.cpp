/* Allocation failure: for every N, a whole model and session cycle on
 * stories260K (load, create a dense and a streaming session, prefill, generate,
 * perplexity, save, load into a new session, decode, free) runs with the Nth
 * allocation the library makes refused (src/alloc_hook.h). Every call either
 * succeeds or fails with KVFIT_E_NOMEM and a message; nothing crashes, and the
 * sanitizer build's LeakSanitizer finds nothing left behind at exit. N runs
 * from 1 until a cycle completes with fewer allocations than N.
 *
 * The hook exists only in builds configured with -DKVFIT_TEST_HOOKS=ON (the
 * test suite's sanitizer build, tests/sanitize.sh); elsewhere this skips.
 * Each backend present is swept: the CPU always, Vulkan and CUDA when the
 * build has them and a device is there. */
// The library's header first: CMocka defines a macro named fail.
#if defined(KVFIT_TEST_HOOKS)
#include "alloc_hook.h"
#endif

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern "C" {
#include <cmocka.h>
}

#include <string>
#include <vector>

#include "kvfit.h"
#include "testutil.h"

#if defined(KVFIT_TEST_HOOKS)
namespace {

const char *g_model_path;

constexpr int kGenerate = 4;

// What one cycle did: the tokens it produced (to compare with a cycle that
// ran without failures) or the call that failed.
struct CycleResult {
    bool completed = false;
    std::string failed_call;
    std::vector<int32_t> tokens;
};

// Checks one call's status: OK, or NOMEM with a message; anything else fails
// the test. Returns whether the cycle may go on.
bool step(kvfit_status st, const char *call, int64_t n, CycleResult &r) {
    if (st == KVFIT_OK) return true;
    const char *msg = kvfit_last_error();
    if (st != KVFIT_E_NOMEM) {
        fail_msg("allocation %lld refused: %s returned %s (%s), not KVFIT_E_NOMEM", (long long)n, call,
                 kvfit_status_str(st), msg ? msg : "");
    }
    if (!msg || !*msg) fail_msg("allocation %lld refused: %s returned KVFIT_E_NOMEM without a message", (long long)n, call);
    r.failed_call = call;
    return false;
}

// One session's part of the cycle: prefill, generate, perplexity, save the
// state and load it into a second session, which decodes one more token.
void session_cycle(kvfit_model *model, uint64_t budget, int64_t n, CycleResult &r, bool &ok) {
    kvfit_session_params sp;
    kvfit_session_params_init(&sp);
    sp.n_threads = 2;
    sp.kv_budget_bytes = budget;
    kvfit_session *s = nullptr, *restored = nullptr;
    void *state = nullptr;
    const int32_t prompt[] = {1, 403, 407, 261, 378, 284};  // "Once upon a time" with BOS
    kvfit_generate_params gp;
    kvfit_generate_params_init(&gp);
    gp.max_tokens = kGenerate;
    kvfit_generate_result gr;
    memset(&gr, 0, sizeof gr);
    gr.struct_size = sizeof gr;
    float nll[3];
    size_t size = 0, written = 0;
    const float *logits = nullptr;
    size_t n_vocab = 0;
    ok = ok && step(kvfit_session_create(model, &sp, &s), "kvfit_session_create", n, r);
    ok = ok && step(kvfit_generate(s, prompt, sizeof prompt / sizeof prompt[0], nullptr, &gp, &gr), "kvfit_generate", n, r);
    const int32_t more[] = {378, 284, 403};
    ok = ok && step(kvfit_session_prefill_nll(s, more, 3, nll), "kvfit_session_prefill_nll", n, r);
    ok = ok && step(kvfit_session_state_size(s, &size), "kvfit_session_state_size", n, r);
    if (ok) {
        state = malloc(size);
        assert_non_null(state);
    }
    ok = ok && step(kvfit_session_save(s, state, size, &written), "kvfit_session_save", n, r);
    ok = ok && step(kvfit_session_create(model, &sp, &restored), "kvfit_session_create (restore)", n, r);
    ok = ok && step(kvfit_session_load(restored, state, written), "kvfit_session_load", n, r);
    ok = ok && step(kvfit_session_decode(restored, 261), "kvfit_session_decode", n, r);
    ok = ok && step(kvfit_session_logits(restored, &logits, &n_vocab), "kvfit_session_logits", n, r);
    if (ok) {
        r.tokens.push_back(int32_t(kvfit_session_n_past(restored)));
        r.tokens.push_back(int32_t(gr.n_generated));
        int32_t best = 0;
        for (size_t i = 1; i < n_vocab; i++)
            if (logits[i] > logits[best]) best = int32_t(i);
        r.tokens.push_back(best);
    }
    free(state);
    kvfit_session_free(restored);
    kvfit_session_free(s);
}

CycleResult cycle(kvfit_backend_kind backend, int64_t n) {
    CycleResult r;
    kvfit::test_hooks::fail_nth_alloc(n);
    kvfit_model_params mp;
    kvfit_model_params_init(&mp);
    mp.backend = backend;
    kvfit_model *model = nullptr;
    bool ok = step(kvfit_model_load(g_model_path, &mp, &model), "kvfit_model_load", n, r);
    session_cycle(model, 0, n, r, ok);           // dense
    session_cycle(model, 48 * 1024, n, r, ok);  // sinks + window
    kvfit_model_free(model);
    r.completed = ok;
    return r;
}

bool backend_present(kvfit_backend_kind kind) {
    size_t n = 0;
    if (kvfit_device_count(&n) != KVFIT_OK) return false;
    for (size_t i = 0; i < n; i++) {
        kvfit_device_info info;
        memset(&info, 0, sizeof info);
        info.struct_size = sizeof info;
        if (kvfit_device_get_info(i, &info) == KVFIT_OK && info.backend == kind) return true;
    }
    return false;
}

void sweep(kvfit_backend_kind backend, const char *name) {
    if (!backend_present(backend)) {
        test_skip("no %s device", name);
    }
    const CycleResult reference = cycle(backend, 0);
    if (!reference.completed) fail_msg("the cycle fails without a refused allocation: %s", reference.failed_call.c_str());
    const int64_t total = kvfit::test_hooks::allocs_counted();
    assert_true(total > 0);
    int64_t failures = 0;
    for (int64_t n = 1;; n++) {
        const CycleResult r = cycle(backend, n);
        if (r.completed) {
            // Only a cycle that never reached allocation n may complete.
            assert_true(kvfit::test_hooks::allocs_counted() < n);
            assert_true(r.tokens == reference.tokens);
            printf("%s: swept N = 1..%lld, %lld refusals reported as KVFIT_E_NOMEM (%lld allocations per cycle)\n",
                   name, (long long)(n - 1), (long long)failures, (long long)total);
            break;
        }
        failures++;
        if (n > total * 4) fail_msg("%s: the cycle still fails at N = %lld of %lld allocations", name, (long long)n,
                                    (long long)total);
    }
    kvfit::test_hooks::fail_nth_alloc(0);
}

void test_sweep_cpu(void **) { sweep(KVFIT_BACKEND_CPU, "CPU"); }
void test_sweep_vulkan(void **) { sweep(KVFIT_BACKEND_VULKAN, "Vulkan"); }
void test_sweep_cuda(void **) { sweep(KVFIT_BACKEND_CUDA, "CUDA"); }

}  // namespace

int main(void) {
    g_model_path = test_data_path("models/stories260K.gguf");
    if (!g_model_path)
        test_skip_all("models/stories260K.gguf is not in the test data folder ($KVFIT_TEST_DATA or ../shared/data)");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sweep_cpu),
        cmocka_unit_test(test_sweep_vulkan),
        cmocka_unit_test(test_sweep_cuda),
    };
    return test_run(tests, nullptr, nullptr);
}

#else

int main(void) {
    test_skip_all("built without -DKVFIT_TEST_HOOKS=ON: the allocation-failure sweep runs in the sanitizer build "
                  "(sanitize_unit)");
}

#endif
