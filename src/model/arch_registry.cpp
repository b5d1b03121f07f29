// The architectures kvfit runs, by the name GGUF files give them
// (general.architecture), and the loading helpers they share.
#include <cstring>
#include <vector>

#include "common.h"
#include "gguf/ggml_types.h"
#include "gguf/gguf.h"
#include "model/arch.h"

namespace kvfit {

namespace {

struct ArchEntry {
    const char *name;
    std::unique_ptr<Architecture> (*create)();
};

// llama.cpp uses "llama" for SmolLM2, Llama 2/3, TinyLlama and Mistral files.
const ArchEntry kArchitectures[] = {
    {"llama", create_llama},
    {"gemma3", create_gemma3},
    {"qwen2", create_qwen2},
    {"qwen3", create_qwen3},
    {"rwkv7", create_rwkv7},
    {"qwen35", create_qwen35},
};

}  // namespace

std::unique_ptr<Architecture> create_architecture(const std::string &name) {
    for (const ArchEntry &e : kArchitectures)
        if (name == e.name) return e.create();
    return nullptr;
}

std::string supported_architectures() {
    std::string s;
    for (const ArchEntry &e : kArchitectures) s += (s.empty() ? "" : ", ") + std::string(e.name);
    return s;
}

int64_t ArchMetadata::require_int(const char *key) const {
    const std::string full = arch_ + "." + key;
    auto v = f_.get_int(full);
    if (!v) fail(KVFIT_E_FORMAT, "missing metadata '%s'", full.c_str());
    if (*v <= 0 || *v > (int64_t(1) << 31)) fail(KVFIT_E_FORMAT, "metadata '%s' = %lld is out of range", full.c_str(), (long long)*v);
    return *v;
}

std::optional<int64_t> ArchMetadata::get_int(const char *key) const { return f_.get_int(arch_ + "." + key); }
std::optional<double> ArchMetadata::get_float(const char *key) const { return f_.get_float(arch_ + "." + key); }
std::optional<std::string> ArchMetadata::get_string(const char *key) const { return f_.get_string(arch_ + "." + key); }

namespace {

void check_type(const GGUFTensor &t);

void check_tensor(const GGUFTensor &t, int64_t ne0, int64_t ne1) {
    if (t.ne[0] != ne0 || t.ne[1] != ne1 || t.ne[2] != 1 || t.ne[3] != 1)
        fail(KVFIT_E_FORMAT, "tensor '%s' has shape [%lld, %lld, %lld, %lld], expected [%lld, %lld]", t.name.c_str(),
             (long long)t.ne[0], (long long)t.ne[1], (long long)t.ne[2], (long long)t.ne[3], (long long)ne0,
             (long long)ne1);
    check_type(t);
}

void check_type(const GGUFTensor &t) {
    const TypeInfo *ti = type_info(t.type);
    if (!ti || !ti->supported) {
        std::string names;
        for (uint32_t id = 0; id < 64; id++)
            if (const TypeInfo *s = type_info(id); s && s->supported) names += (names.empty() ? "" : ", ") + std::string(s->name);
        fail(KVFIT_E_UNSUPPORTED, "tensor '%s' has type %s (ggml type %u), which kvfit does not support (supported: %s)",
             t.name.c_str(), ti ? ti->name : "unknown", t.type, names.c_str());
    }
}

const GGUFTensor &require_tensor(const GGUFFile &f, const std::string &name) {
    const GGUFTensor *t = f.tensor(name);
    if (!t) fail(KVFIT_E_FORMAT, "missing tensor '%s'", name.c_str());
    return *t;
}

}  // namespace

Weight WeightLoader::get(const std::string &name, int64_t ne0, int64_t ne1) {
    const GGUFTensor &t = require_tensor(f_, name);
    check_tensor(t, ne0, ne1);
    return b_.upload_weight(t);
}

Weight WeightLoader::get_vector(const std::string &name, int64_t n) {
    const GGUFTensor &t = require_tensor(f_, name);
    check_tensor(t, n, 1);
    if (t.type == TYPE_F32) return b_.upload_weight(t);
    return get_vector_mapped(name, n, [](float x) { return x; });
}

Weight WeightLoader::get_vector_mapped(const std::string &name, int64_t n, const std::function<float(float)> &f) {
    const GGUFTensor &t = require_tensor(f_, name);
    check_tensor(t, n, 1);
    std::vector<float> tmp(static_cast<size_t>(n));
    dequantize_row(t.type, t.data, tmp.data(), n);
    for (float &x : tmp) x = f(x);
    Weight w;
    w.data = b_.upload_floats(tmp.data(), tmp.size());
    w.type = TYPE_F32;
    w.n_cols = n;
    w.n_rows = 1;
    w.row_bytes = size_t(n) * 4;
    return w;
}

Weight WeightLoader::get_floats(const std::string &name, std::initializer_list<int64_t> ne) {
    const GGUFTensor &t = require_tensor(f_, name);
    int64_t want[4] = {1, 1, 1, 1};
    size_t i = 0;
    for (int64_t v : ne) {
        if (i == 4) fail(KVFIT_E_INTERNAL, "tensor '%s': more than 4 dimensions asked for", name.c_str());
        want[i++] = v;
    }
    for (int j = 0; j < 4; j++)
        if (t.ne[j] != want[j])
            fail(KVFIT_E_FORMAT, "tensor '%s' has shape [%lld, %lld, %lld, %lld], expected [%lld, %lld, %lld, %lld]",
                 t.name.c_str(), (long long)t.ne[0], (long long)t.ne[1], (long long)t.ne[2], (long long)t.ne[3],
                 (long long)want[0], (long long)want[1], (long long)want[2], (long long)want[3]);
    const int64_t rows = want[1] * want[2] * want[3];
    check_type(t);
    std::vector<float> tmp(size_t(want[0] * rows));
    for (int64_t r = 0; r < rows; r++)
        dequantize_row(t.type, static_cast<const uint8_t *>(t.data) + size_t(r) * row_bytes(t.type, want[0]),
                       tmp.data() + size_t(r * want[0]), want[0]);
    Weight w;
    w.data = b_.upload_floats(tmp.data(), tmp.size());
    w.type = TYPE_F32;
    w.n_cols = want[0];
    w.n_rows = rows;
    w.row_bytes = size_t(want[0]) * 4;
    return w;
}

bool WeightLoader::has(const std::string &name) const { return f_.tensor(name) != nullptr; }

}  // namespace kvfit
