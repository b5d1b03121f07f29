/* The test helpers themselves: SHA-256 against the FIPS 180-4 examples (and
 * sha256sum's digests of real files), and the exit codes that tell ctest
 * whether a test program ran, failed or was skipped. */
#define _POSIX_C_SOURCE 200809L
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "testutil.h"

/* FIPS 180-4's SHA-256 examples (NIST's "Examples with Intermediate Values"). */
static void test_sha256_fips_vectors(void **state) {
    (void)state;
    char hex[65];
    test_sha256_hex("abc", 3, hex);
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    test_sha256_hex("", 0, hex);
    assert_string_equal(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    /* 448 bits: the padding no longer fits the message's block */
    const char *m448 = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    assert_int_equal(strlen(m448), 56);
    test_sha256_hex(m448, strlen(m448), hex);
    assert_string_equal(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    const char *m896 =
        "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu";
    test_sha256_hex(m896, strlen(m896), hex);
    assert_string_equal(hex, "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");
}

/* One million 'a', fed in pieces of every size from 1 to 130 bytes, so that
 * pieces straddle block boundaries in every way. */
static void test_sha256_pieces(void **state) {
    (void)state;
    const size_t total = 1000000;
    char *a = malloc(total);
    assert_non_null(a);
    memset(a, 'a', total);
    test_sha256_ctx c;
    test_sha256_init(&c);
    size_t done = 0, piece = 1;
    while (done < total) {
        const size_t n = piece < total - done ? piece : total - done;
        test_sha256_update(&c, a + done, n);
        done += n;
        piece = piece % 130 + 1;
    }
    uint8_t d[32];
    test_sha256_final(&c, d);
    char hex[65];
    for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", d[i]);
    assert_string_equal(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    /* the same message in one piece */
    test_sha256_hex(a, total, hex);
    assert_string_equal(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    free(a);
}

/* Every message length from 0 to 200 bytes (byte i = 37 i + 11), one piece
 * against byte by byte. */
static void test_sha256_lengths(void **state) {
    (void)state;
    uint8_t msg[200];
    for (int i = 0; i < 200; i++) msg[i] = (uint8_t)(i * 37 + 11);
    for (size_t n = 0; n <= sizeof msg; n++) {
        char whole[65], bytewise[65];
        test_sha256_hex(msg, n, whole);
        test_sha256_ctx c;
        test_sha256_init(&c);
        for (size_t i = 0; i < n; i++) test_sha256_update(&c, msg + i, 1);
        uint8_t d[32];
        test_sha256_final(&c, d);
        for (int i = 0; i < 32; i++) snprintf(bytewise + 2 * i, 3, "%02x", d[i]);
        assert_string_equal(whole, bytewise);
    }
    /* Where the padding changes shape (55 bytes fit one block with it, 56 do
     * not; 64 fill one), against sha256sum's digests of the same bytes. */
    static const struct {
        size_t n;
        const char *hex;
    } edges[] = {
        {55, "2900465fcb533e05a158fd2b3be0e5e3b03740d83060aa3580e0d98a96bf2384"},
        {56, "31454ff48ef36af2f08fd511bdc37d9d5855ac23e992e5ff5445cb6b7674a674"},
        {63, "5f6401b96532c36de4e65beec0409b69b1d181864c8009b7a04f43e5d56350d1"},
        {64, "94eb5de4943613fd048dc93393ab06877405faa39c11f53e9386083339833e7e"},
        {65, "fc518669b6eb4b4dd91827ecacef86689c725bd5bab888fd3b26dbb196eec954"},
        {119, "b0dc41b1a384e2f1203f0351b38fbeaafceef577ce1191d5bfc25da39f721eae"},
        {120, "5df24dd802ac26132ce608dcb5f09841eef039ee0f152acf98d26d17fe4e88e6"},
        {128, "0aedd4856f8eba0963627336ad5144a9a7dbe12498e6066f0165fc97d8ddee4c"},
    };
    for (size_t i = 0; i < sizeof edges / sizeof edges[0]; i++) {
        char hex[65];
        test_sha256_hex(msg, edges[i].n, hex);
        assert_string_equal(hex, edges[i].hex);
    }
}

static void test_sha256_file_digest(void **state) {
    (void)state;
    const char *tmp = getenv("TMPDIR");
    char path[512];
    snprintf(path, sizeof path, "%s/kvfit-sha256-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    const int fd = mkstemp(path);
    assert_true(fd >= 0);
    /* 200000 bytes: several reads of the helper's buffer */
    FILE *f = fdopen(fd, "wb");
    assert_non_null(f);
    for (int i = 0; i < 200000; i++) fputc('a', f);
    fclose(f);
    char hex[65], want[65];
    assert_int_equal(test_sha256_file(path, hex), 0);
    char *a = malloc(200000);
    memset(a, 'a', 200000);
    test_sha256_hex(a, 200000, want);
    free(a);
    assert_string_equal(hex, want);
    unlink(path);
    assert_int_equal(test_sha256_file(path, hex), -1);
}

/* ------------------------------------------------------------------------ exit codes */

static void case_passes(void **state) {
    (void)state;
    assert_true(1);
}
static void case_skips(void **state) {
    (void)state;
    test_skip("this case needs nothing that is here");
}
static void case_fails(void **state) {
    (void)state;
    fail_msg("on purpose");
}

/* Runs a group of these cases in a child process and returns its exit code. */
static int child_exit_code(int n_pass, int n_skip, int n_fail) {
    fflush(stdout);
    const pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        /* the child's own CMocka report would read like this test's; keep it out of the log */
        if (!freopen("/dev/null", "w", stdout) || !freopen("/dev/null", "w", stderr)) _exit(2);
        struct CMUnitTest tests[3];
        size_t n = 0;
        if (n_pass) tests[n++] = (struct CMUnitTest)cmocka_unit_test(case_passes);
        if (n_skip) tests[n++] = (struct CMUnitTest)cmocka_unit_test(case_skips);
        if (n_fail) tests[n++] = (struct CMUnitTest)cmocka_unit_test(case_fails);
        const int failed = _cmocka_run_group_tests("child", tests, n, NULL, NULL);
        _exit(test_group_done(failed, n));
    }
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    return WEXITSTATUS(st);
}

static void test_exit_codes(void **state) {
    (void)state;
    assert_int_equal(child_exit_code(1, 0, 0), 0);
    assert_int_equal(child_exit_code(1, 1, 0), 0);                  /* something ran */
    assert_int_equal(child_exit_code(0, 1, 0), TEST_EXIT_SKIPPED);  /* nothing ran */
    assert_int_equal(child_exit_code(0, 1, 1), 1);
    assert_int_equal(child_exit_code(1, 0, 1), 1);
}

static void test_skip_all_exits_77(void **state) {
    (void)state;
    fflush(stdout);
    const pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (!freopen("/dev/null", "w", stdout)) _exit(2);
        test_skip_all("no %s here", "device");
    }
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), TEST_EXIT_SKIPPED);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sha256_fips_vectors), cmocka_unit_test(test_sha256_pieces),
        cmocka_unit_test(test_sha256_lengths),      cmocka_unit_test(test_sha256_file_digest),
        cmocka_unit_test(test_exit_codes),          cmocka_unit_test(test_skip_all_exits_77),
    };
    return test_run(tests, NULL, NULL);
}
