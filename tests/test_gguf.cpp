// The GGUF reader on files built in memory: every metadata value type,
// arrays, alignment, tensor data placement, and rejection of malformed input.
#include <cstring>
#include <string>
#include <vector>

// Project headers before cmocka.h: its fail() macro would clash with kvfit::fail.
#include "common.h"
#include "gguf/ggml_types.h"
#include "gguf/gguf.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

extern "C" {
#include <cmocka.h>  // its header has no C++ guard of its own
}

using namespace kvfit;

namespace {

// Little GGUF writer for tests.
struct Writer {
    std::vector<uint8_t> b;
    template <typename T>
    void put(T v) {
        const uint8_t *p = reinterpret_cast<const uint8_t *>(&v);
        b.insert(b.end(), p, p + sizeof v);
    }
    void str(const std::string &s) {
        put<uint64_t>(s.size());
        b.insert(b.end(), s.begin(), s.end());
    }
    void header(uint32_t version, uint64_t n_tensors, uint64_t n_kv) {
        put<uint32_t>(0x46554747);
        put(version);
        put(n_tensors);
        put(n_kv);
    }
    void align(size_t a) {
        while (b.size() % a) b.push_back(0);
    }
};

kvfit_status parse_status(const std::vector<uint8_t> &b) {
    try {
        GGUFFile::from_memory(b.data(), b.size());
        return KVFIT_OK;
    } catch (const Error &e) {
        return e.status();
    }
}

void test_all_value_types(void **) {
    Writer w;
    w.header(3, 1, 14);
    w.str("u8"); w.put<uint32_t>(0); w.put<uint8_t>(200);
    w.str("i8"); w.put<uint32_t>(1); w.put<int8_t>(-5);
    w.str("u16"); w.put<uint32_t>(2); w.put<uint16_t>(60000);
    w.str("i16"); w.put<uint32_t>(3); w.put<int16_t>(-300);
    w.str("u32"); w.put<uint32_t>(4); w.put<uint32_t>(4000000000u);
    w.str("i32"); w.put<uint32_t>(5); w.put<int32_t>(-7);
    w.str("f32"); w.put<uint32_t>(6); w.put<float>(1.5f);
    w.str("bool"); w.put<uint32_t>(7); w.put<uint8_t>(1);
    w.str("str"); w.put<uint32_t>(8); w.str("héllo");
    w.str("u64"); w.put<uint32_t>(10); w.put<uint64_t>(1ull << 40);
    w.str("i64"); w.put<uint32_t>(11); w.put<int64_t>(-(1ll << 40));
    w.str("f64"); w.put<uint32_t>(12); w.put<double>(0.25);
    w.str("arr_i32"); w.put<uint32_t>(9); w.put<uint32_t>(5); w.put<uint64_t>(3);
    w.put<int32_t>(1); w.put<int32_t>(-2); w.put<int32_t>(3);
    w.str("arr_str"); w.put<uint32_t>(9); w.put<uint32_t>(8); w.put<uint64_t>(2); w.str("a"); w.str("");
    // one F32 tensor [4, 2]
    w.str("t"); w.put<uint32_t>(2); w.put<uint64_t>(4); w.put<uint64_t>(2); w.put<uint32_t>(0); w.put<uint64_t>(0);
    w.align(32);
    for (int i = 0; i < 8; i++) w.put<float>(float(i));

    auto f = GGUFFile::from_memory(w.b.data(), w.b.size());
    assert_int_equal(f->version(), 3);
    assert_int_equal(*f->get_uint("u8"), 200);
    assert_int_equal(*f->get_int("i8"), -5);
    assert_int_equal(*f->get_uint("u16"), 60000);
    assert_int_equal(*f->get_int("i16"), -300);
    assert_int_equal(*f->get_uint("u32"), 4000000000u);
    assert_int_equal(*f->get_int("i32"), -7);
    assert_true(*f->get_float("f32") == 1.5);
    assert_true(*f->get_bool("bool"));
    assert_string_equal(f->get_string("str")->c_str(), "héllo");
    assert_true(*f->get_uint("u64") == (1ull << 40));
    assert_true(*f->get_int("i64") == -(1ll << 40));
    assert_true(*f->get_float("f64") == 0.25);
    assert_true(*f->get_float("i32") == -7.0);  // integers read as numbers
    auto ai = *f->get_int_array("arr_i32");
    assert_int_equal(ai.size(), 3);
    assert_int_equal(ai[1], -2);
    auto as = *f->get_string_array("arr_str");
    assert_int_equal(as.size(), 2);
    assert_string_equal(as[0].c_str(), "a");
    assert_true(as[1].empty());
    assert_false(f->get_string("missing").has_value());
    assert_string_equal(f->find("arr_str")->to_text().c_str(), "[2 items]");
    assert_string_equal(f->find("u64")->to_text().c_str(), "1099511627776");
    // wrong types are errors, not reinterpretations
    bool threw = false;
    try {
        f->get_string("u8");
    } catch (const Error &e) {
        threw = e.status() == KVFIT_E_FORMAT;
    }
    assert_true(threw);
    threw = false;
    try {
        f->get_uint("i8");  // negative
    } catch (const Error &e) {
        threw = true;
    }
    assert_true(threw);

    const GGUFTensor *t = f->tensor("t");
    assert_non_null(t);
    assert_int_equal(t->ne[0], 4);
    assert_int_equal(t->ne[1], 2);
    assert_int_equal(t->nbytes, 32);
    assert_true(reinterpret_cast<const float *>(t->data)[7] == 7.0f);
    assert_int_equal((t->data - w.b.data()) % 32, 0);
}

void test_custom_alignment_and_v2(void **) {
    Writer w;
    w.header(2, 1, 1);
    w.str("general.alignment"); w.put<uint32_t>(4); w.put<uint32_t>(64);
    w.str("q"); w.put<uint32_t>(1); w.put<uint64_t>(32); w.put<uint32_t>(TYPE_Q8_0); w.put<uint64_t>(0);
    w.align(64);
    BlockQ8_0 blk{};
    blk.d = fp32_to_fp16(0.5f);
    for (int i = 0; i < 32; i++) blk.qs[i] = int8_t(i - 16);
    w.put(blk);
    auto f = GGUFFile::from_memory(w.b.data(), w.b.size());
    const GGUFTensor *t = f->tensor("q");
    assert_int_equal((t->data - w.b.data()) % 64, 0);
    float out[32];
    dequantize_row(t->type, t->data, out, 32);
    assert_true(out[0] == -8.0f && out[31] == 7.5f);
}

void test_malformed(void **) {
    {  // bad magic
        Writer w;
        w.put<uint32_t>(0x12345678); w.put<uint32_t>(3); w.put<uint64_t>(0); w.put<uint64_t>(0);
        assert_int_equal(parse_status(w.b), KVFIT_E_FORMAT);
    }
    {  // version 1 is named as unsupported
        Writer w;
        w.header(1, 0, 0);
        assert_int_equal(parse_status(w.b), KVFIT_E_UNSUPPORTED);
    }
    {  // huge counts
        Writer w;
        w.header(3, 1ull << 60, 0);
        assert_int_equal(parse_status(w.b), KVFIT_E_FORMAT);
    }
    {  // string longer than the file
        Writer w;
        w.header(3, 0, 1);
        w.put<uint64_t>(1000); w.put<uint8_t>('x');
        assert_int_equal(parse_status(w.b), KVFIT_E_FORMAT);
    }
    {  // unknown value type
        Writer w;
        w.header(3, 0, 1);
        w.str("k"); w.put<uint32_t>(99); w.put<uint32_t>(0);
        assert_int_equal(parse_status(w.b), KVFIT_E_FORMAT);
    }
    {  // bool that is not 0/1, duplicate keys
        Writer w;
        w.header(3, 0, 1);
        w.str("k"); w.put<uint32_t>(7); w.put<uint8_t>(7);
        assert_int_equal(parse_status(w.b), KVFIT_E_FORMAT);
        Writer d;
        d.header(3, 0, 2);
        d.str("k"); d.put<uint32_t>(4); d.put<uint32_t>(1);
        d.str("k"); d.put<uint32_t>(4); d.put<uint32_t>(2);
        assert_int_equal(parse_status(d.b), KVFIT_E_FORMAT);
    }
    {  // array of arrays / array with huge count
        Writer w;
        w.header(3, 0, 1);
        w.str("k"); w.put<uint32_t>(9); w.put<uint32_t>(9); w.put<uint64_t>(1);
        assert_int_equal(parse_status(w.b), KVFIT_E_FORMAT);
        Writer h;
        h.header(3, 0, 1);
        h.str("k"); h.put<uint32_t>(9); h.put<uint32_t>(6); h.put<uint64_t>(1ull << 62);
        assert_int_equal(parse_status(h.b), KVFIT_E_FORMAT);
    }
    {  // tensor: too many dims, zero dim, unaligned offset, data past the end, misaligned block row
        auto tensor_file = [](uint32_t nd, uint64_t ne0, uint32_t type, uint64_t off, size_t data_bytes) {
            Writer w;
            w.header(3, 1, 0);
            w.str("t"); w.put<uint32_t>(nd);
            for (uint32_t i = 0; i < nd; i++) w.put<uint64_t>(i == 0 ? ne0 : 1);
            w.put<uint32_t>(type); w.put<uint64_t>(off);
            w.align(32);
            w.b.resize(w.b.size() + data_bytes);
            return w.b;
        };
        assert_int_equal(parse_status(tensor_file(1, 8, TYPE_F32, 0, 32)), KVFIT_OK);
        assert_int_equal(parse_status(tensor_file(5, 8, TYPE_F32, 0, 32)), KVFIT_E_FORMAT);
        assert_int_equal(parse_status(tensor_file(1, 0, TYPE_F32, 0, 32)), KVFIT_E_FORMAT);
        assert_int_equal(parse_status(tensor_file(1, 8, TYPE_F32, 4, 64)), KVFIT_E_FORMAT);
        assert_int_equal(parse_status(tensor_file(1, 8, TYPE_F32, 0, 31)), KVFIT_E_FORMAT);
        assert_int_equal(parse_status(tensor_file(1, 8, TYPE_F32, 32, 32)), KVFIT_E_FORMAT);
        assert_int_equal(parse_status(tensor_file(1, 16, TYPE_Q4_0, 0, 64)), KVFIT_E_FORMAT);
        assert_int_equal(parse_status(tensor_file(1, 8, 77, 0, 64)), KVFIT_E_FORMAT);
    }
    // Every prefix of a valid file fails cleanly.
    Writer w;
    w.header(3, 1, 2);
    w.str("a"); w.put<uint32_t>(8); w.str("value");
    w.str("b"); w.put<uint32_t>(9); w.put<uint32_t>(8); w.put<uint64_t>(2); w.str("x"); w.str("yz");
    w.str("t"); w.put<uint32_t>(1); w.put<uint64_t>(8); w.put<uint32_t>(0); w.put<uint64_t>(0);
    w.align(32);
    w.b.resize(w.b.size() + 32);
    assert_int_equal(parse_status(w.b), KVFIT_OK);
    for (size_t n = 0; n < w.b.size(); n++) {
        std::vector<uint8_t> cut(w.b.begin(), w.b.begin() + long(n));
        assert_int_not_equal(parse_status(cut), KVFIT_OK);
    }
}

void test_fp16_conversions(void **) {
    // Every half converts to float and back exactly (NaNs stay NaN).
    for (uint32_t h = 0; h < 65536; h++) {
        float f = fp16_to_fp32(uint16_t(h));
        if (f != f) {
            uint16_t back = fp32_to_fp16(f);
            assert_true((back & 0x7c00) == 0x7c00 && (back & 0x3ff));
            continue;
        }
        assert_int_equal(fp32_to_fp16(f), h);
    }
    // Round to nearest even between halves, overflow to infinity.
    assert_int_equal(fp32_to_fp16(1.0f + 1.0f / 2048), 0x3c00);        // tie -> even
    assert_int_equal(fp32_to_fp16(1.0f + 3.0f / 2048), 0x3c02);        // tie -> even (up)
    assert_int_equal(fp32_to_fp16(70000.0f), 0x7c00);
    assert_true(fp16_to_fp32(0x0001) == 5.9604644775390625e-08f);       // smallest subnormal
    assert_true(bf16_to_fp32(fp32_to_bf16(3.0f)) == 3.0f);
}

}  // namespace

int main() {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_all_value_types),
        cmocka_unit_test(test_custom_alignment_and_v2),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_fp16_conversions),
    };
    return cmocka_run_group_tests(tests, nullptr, nullptr);
}
