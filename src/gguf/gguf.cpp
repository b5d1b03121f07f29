#include "gguf/gguf.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "alloc_hook.h"
#include "common.h"
#include "gguf/ggml_types.h"

namespace kvfit {

namespace {

constexpr uint32_t GGUF_MAGIC = 0x46554747;  // "GGUF" little-endian
constexpr uint64_t MAX_STRING = 1u << 30;     // no metadata string is near this
constexpr uint64_t MAX_DIMS = 4;

size_t scalar_size(GGUFValueType t) {
    switch (t) {
        case GGUFValueType::UINT8: case GGUFValueType::INT8: case GGUFValueType::BOOL: return 1;
        case GGUFValueType::UINT16: case GGUFValueType::INT16: return 2;
        case GGUFValueType::UINT32: case GGUFValueType::INT32: case GGUFValueType::FLOAT32: return 4;
        case GGUFValueType::UINT64: case GGUFValueType::INT64: case GGUFValueType::FLOAT64: return 8;
        default: return 0;
    }
}

// Bounds-checked cursor over the file bytes.
class Reader {
public:
    Reader(const uint8_t *base, size_t size) : base_(base), size_(size) {}
    size_t pos() const { return pos_; }
    void need(uint64_t n, const char *what) const {
        if (n > size_ - pos_)
            fail(KVFIT_E_FORMAT, "GGUF truncated: %s needs %llu bytes at offset %zu, file has %zu", what,
                 (unsigned long long)n, pos_, size_);
    }
    template <typename T>
    T read(const char *what) {
        need(sizeof(T), what);
        T v;
        std::memcpy(&v, base_ + pos_, sizeof(T));
        pos_ += sizeof(T);
        return v;
    }
    std::string_view string(const char *what) {
        uint64_t n = read<uint64_t>(what);
        if (n > MAX_STRING) fail(KVFIT_E_FORMAT, "GGUF corrupt: %s has length %llu at offset %zu", what, (unsigned long long)n, pos_ - 8);
        need(n, what);
        std::string_view s(reinterpret_cast<const char *>(base_ + pos_), size_t(n));
        pos_ += size_t(n);
        return s;
    }
    const uint8_t *take(uint64_t n, const char *what) {
        need(n, what);
        const uint8_t *p = base_ + pos_;
        pos_ += size_t(n);
        return p;
    }

private:
    const uint8_t *base_;
    size_t size_;
    size_t pos_ = 0;
};

void read_scalar(Reader &r, GGUFValueType t, GGUFValue &v, const char *what) {
    switch (t) {
        case GGUFValueType::UINT8: v.u = r.read<uint8_t>(what); v.i = int64_t(v.u); break;
        case GGUFValueType::INT8: v.i = r.read<int8_t>(what); v.u = uint64_t(v.i); break;
        case GGUFValueType::UINT16: v.u = r.read<uint16_t>(what); v.i = int64_t(v.u); break;
        case GGUFValueType::INT16: v.i = r.read<int16_t>(what); v.u = uint64_t(v.i); break;
        case GGUFValueType::UINT32: v.u = r.read<uint32_t>(what); v.i = int64_t(v.u); break;
        case GGUFValueType::INT32: v.i = r.read<int32_t>(what); v.u = uint64_t(v.i); break;
        case GGUFValueType::UINT64: v.u = r.read<uint64_t>(what); v.i = int64_t(v.u); break;
        case GGUFValueType::INT64: v.i = r.read<int64_t>(what); v.u = uint64_t(v.i); break;
        case GGUFValueType::FLOAT32: v.f = r.read<float>(what); return;
        case GGUFValueType::FLOAT64: v.f = r.read<double>(what); return;
        case GGUFValueType::BOOL: {
            uint8_t b = r.read<uint8_t>(what);
            if (b > 1) fail(KVFIT_E_FORMAT, "GGUF corrupt: %s is a bool with value %u", what, b);
            v.u = b;
            v.i = b;
            break;
        }
        default: fail(KVFIT_E_FORMAT, "GGUF corrupt: %s has unknown value type %u", what, unsigned(t));
    }
    v.f = double(v.i);
    if (t == GGUFValueType::UINT64) v.f = double(v.u);
}

}  // namespace

bool GGUFValue::is_int() const {
    switch (type) {
        case GGUFValueType::UINT8: case GGUFValueType::INT8: case GGUFValueType::UINT16: case GGUFValueType::INT16:
        case GGUFValueType::UINT32: case GGUFValueType::INT32: case GGUFValueType::UINT64: case GGUFValueType::INT64:
            return true;
        default: return false;
    }
}

bool GGUFValue::is_float() const { return type == GGUFValueType::FLOAT32 || type == GGUFValueType::FLOAT64; }

std::string GGUFValue::to_text() const {
    switch (type) {
        case GGUFValueType::STRING: return std::string(str);
        case GGUFValueType::ARRAY: return strfmt("[%llu items]", (unsigned long long)arr_n);
        case GGUFValueType::BOOL: return u ? "true" : "false";
        case GGUFValueType::FLOAT32: return strfmt("%.9g", f);
        case GGUFValueType::FLOAT64: return strfmt("%.17g", f);
        case GGUFValueType::UINT64: return strfmt("%llu", (unsigned long long)u);
        default: return strfmt("%lld", (long long)i);
    }
}

std::unique_ptr<GGUFFile> GGUFFile::open(const std::string &path) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) fail(KVFIT_E_IO, "cannot open '%s': %s", path.c_str(), strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        ::close(fd);
        fail(KVFIT_E_IO, "'%s' is not a regular file", path.c_str());
    }
    size_t size = size_t(st.st_size);
    if (size < 24) {
        ::close(fd);
        fail(KVFIT_E_FORMAT, "'%s' is too small to be a GGUF file (%zu bytes)", path.c_str(), size);
    }
    std::unique_ptr<GGUFFile> f;
    void *p = MAP_FAILED;
    try {
        f.reset(new GGUFFile());  // first: the mapping is its to release
        check_alloc(size, "the model file's mapping");
        p = mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    } catch (...) {
        ::close(fd);
        throw;
    }
    ::close(fd);
    if (p == MAP_FAILED) fail(KVFIT_E_IO, "cannot map '%s': %s", path.c_str(), strerror(errno));
    f->base_ = static_cast<const uint8_t *>(p);
    f->size_ = size;
    f->mapped_ = true;
    try {
        f->parse();
    } catch (const Error &e) {
        throw Error(e.status(), path + ": " + e.what());
    }
    return f;
}

std::unique_ptr<GGUFFile> GGUFFile::from_memory(const void *data, size_t size) {
    std::unique_ptr<GGUFFile> f(new GGUFFile());
    f->base_ = static_cast<const uint8_t *>(data);
    f->size_ = size;
    f->parse();
    return f;
}

GGUFFile::~GGUFFile() {
    if (mapped_) munmap(const_cast<uint8_t *>(base_), size_);
}

void GGUFFile::parse() {
    Reader r(base_, size_);
    uint32_t magic = r.read<uint32_t>("magic");
    if (magic != GGUF_MAGIC) fail(KVFIT_E_FORMAT, "not a GGUF file (bad magic 0x%08x)", magic);
    version_ = r.read<uint32_t>("version");
    if (version_ == 1) fail(KVFIT_E_UNSUPPORTED, "GGUF version 1 is not supported (re-convert the model)");
    if (version_ != 2 && version_ != 3) fail(KVFIT_E_FORMAT, "unknown GGUF version %u", version_);
    uint64_t n_tensors = r.read<uint64_t>("tensor count");
    uint64_t n_kv = r.read<uint64_t>("metadata count");
    // Each entry takes at least 8 bytes, so counts past the file size are corrupt.
    if (n_tensors > size_ / 8 || n_kv > size_ / 8)
        fail(KVFIT_E_FORMAT, "GGUF corrupt: %llu tensors / %llu metadata entries in a %zu-byte file",
             (unsigned long long)n_tensors, (unsigned long long)n_kv, size_);

    kv_.reserve(size_t(n_kv));
    for (uint64_t k = 0; k < n_kv; k++) {
        std::string key(r.string("metadata key"));
        GGUFValue v;
        v.type = GGUFValueType(r.read<uint32_t>("metadata type"));
        const char *what = key.c_str();
        if (v.type == GGUFValueType::STRING) {
            v.str = r.string(what);
        } else if (v.type == GGUFValueType::ARRAY) {
            v.arr_type = GGUFValueType(r.read<uint32_t>("array type"));
            v.arr_n = r.read<uint64_t>("array length");
            if (v.arr_type == GGUFValueType::STRING) {
                if (v.arr_n > size_ / 8) fail(KVFIT_E_FORMAT, "GGUF truncated or corrupt: array %s claims %llu strings, more than the file can hold", what, (unsigned long long)v.arr_n);
                v.arr_str.reserve(size_t(v.arr_n));
                for (uint64_t j = 0; j < v.arr_n; j++) v.arr_str.push_back(r.string(what));
            } else {
                size_t es = scalar_size(v.arr_type);
                if (es == 0) fail(KVFIT_E_FORMAT, "GGUF corrupt: array %s has element type %u", what, unsigned(v.arr_type));
                if (v.arr_n > (size_ / es)) fail(KVFIT_E_FORMAT, "GGUF truncated or corrupt: array %s claims %llu items, more than the file can hold", what, (unsigned long long)v.arr_n);
                v.arr_data = r.take(v.arr_n * es, what);
            }
        } else {
            read_scalar(r, v.type, v, what);
        }
        if (kv_index_.count(key)) fail(KVFIT_E_FORMAT, "GGUF corrupt: duplicate metadata key '%s'", key.c_str());
        kv_index_[key] = kv_.size();
        kv_.emplace_back(std::move(key), std::move(v));
    }

    uint64_t alignment = 32;
    if (const GGUFValue *a = find("general.alignment")) {
        if (!a->is_int() || a->u == 0 || (a->u & (a->u - 1)) || a->u > 65536)
            fail(KVFIT_E_FORMAT, "GGUF corrupt: general.alignment must be a power of two");
        alignment = a->u;
    }

    tensors_.reserve(size_t(n_tensors));
    for (uint64_t t = 0; t < n_tensors; t++) {
        GGUFTensor ti;
        ti.name = std::string(r.string("tensor name"));
        uint32_t nd = r.read<uint32_t>("tensor dims");
        if (nd == 0 || nd > MAX_DIMS) fail(KVFIT_E_FORMAT, "GGUF corrupt: tensor '%s' has %u dimensions", ti.name.c_str(), nd);
        ti.n_dims = int(nd);
        for (uint32_t d = 0; d < nd; d++) {
            uint64_t ne = r.read<uint64_t>("tensor shape");
            if (ne == 0 || ne > (uint64_t(1) << 40))
                fail(KVFIT_E_FORMAT, "GGUF corrupt: tensor '%s' dimension %u is %llu", ti.name.c_str(), d, (unsigned long long)ne);
            ti.ne[d] = int64_t(ne);
        }
        ti.type = r.read<uint32_t>("tensor type");
        ti.offset = r.read<uint64_t>("tensor offset");
        const TypeInfo *info = type_info(ti.type);
        if (!info) fail(KVFIT_E_FORMAT, "GGUF corrupt: tensor '%s' has unknown type %u", ti.name.c_str(), ti.type);
        if (ti.ne[0] % info->block_size)
            fail(KVFIT_E_FORMAT, "GGUF corrupt: tensor '%s' row of %lld is not a multiple of the %s block size",
                 ti.name.c_str(), (long long)ti.ne[0], info->name);
        // Overflow-safe: every ne <= 2^40 and the product is checked stepwise.
        unsigned __int128 bytes = (unsigned __int128)(ti.ne[0] / info->block_size) * info->block_bytes;
        for (int d = 1; d < 4; d++) bytes *= (unsigned __int128)ti.ne[d];
        if (bytes > size_) fail(KVFIT_E_FORMAT, "GGUF corrupt: tensor '%s' needs more bytes than the file has", ti.name.c_str());
        ti.nbytes = size_t(bytes);
        if (tensor_index_.count(ti.name)) fail(KVFIT_E_FORMAT, "GGUF corrupt: duplicate tensor '%s'", ti.name.c_str());
        tensor_index_[ti.name] = tensors_.size();
        tensors_.push_back(std::move(ti));
    }

    size_t data_start = (r.pos() + alignment - 1) / alignment * alignment;
    if (n_tensors > 0 && data_start > size_) fail(KVFIT_E_FORMAT, "GGUF truncated: no tensor data section");
    for (GGUFTensor &ti : tensors_) {
        if (ti.offset % alignment)
            fail(KVFIT_E_FORMAT, "GGUF corrupt: tensor '%s' offset %llu is not aligned to %llu", ti.name.c_str(),
                 (unsigned long long)ti.offset, (unsigned long long)alignment);
        if (ti.offset > size_ - data_start || ti.nbytes > size_ - data_start - ti.offset)
            fail(KVFIT_E_FORMAT, "GGUF truncated: data of tensor '%s' (%zu bytes at offset %llu) lies outside the file",
                 ti.name.c_str(), ti.nbytes, (unsigned long long)(data_start + ti.offset));
        ti.data = base_ + data_start + ti.offset;
        ti.file_pages = mapped_;
    }
}

const GGUFValue *GGUFFile::find(std::string_view key) const {
    auto it = kv_index_.find(std::string(key));
    return it == kv_index_.end() ? nullptr : &kv_[it->second].second;
}

const GGUFTensor *GGUFFile::tensor(std::string_view name) const {
    auto it = tensor_index_.find(std::string(name));
    return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

static void wrong_type(std::string_view key, const char *want) {
    fail(KVFIT_E_FORMAT, "GGUF metadata '%.*s' is not %s", int(key.size()), key.data(), want);
}

std::optional<std::string> GGUFFile::get_string(std::string_view key) const {
    const GGUFValue *v = find(key);
    if (!v) return std::nullopt;
    if (v->type != GGUFValueType::STRING) wrong_type(key, "a string");
    return std::string(v->str);
}

std::optional<uint64_t> GGUFFile::get_uint(std::string_view key) const {
    const GGUFValue *v = find(key);
    if (!v) return std::nullopt;
    if (!v->is_int() || v->i < 0) wrong_type(key, "a non-negative integer");
    return v->u;
}

std::optional<int64_t> GGUFFile::get_int(std::string_view key) const {
    const GGUFValue *v = find(key);
    if (!v) return std::nullopt;
    if (!v->is_int()) wrong_type(key, "an integer");
    return v->i;
}

std::optional<double> GGUFFile::get_float(std::string_view key) const {
    const GGUFValue *v = find(key);
    if (!v) return std::nullopt;
    if (!v->is_int() && !v->is_float()) wrong_type(key, "a number");
    return v->f;
}

std::optional<bool> GGUFFile::get_bool(std::string_view key) const {
    const GGUFValue *v = find(key);
    if (!v) return std::nullopt;
    if (v->type != GGUFValueType::BOOL) wrong_type(key, "a bool");
    return v->u != 0;
}

std::optional<std::vector<std::string>> GGUFFile::get_string_array(std::string_view key) const {
    const GGUFValue *v = find(key);
    if (!v) return std::nullopt;
    if (v->type != GGUFValueType::ARRAY || v->arr_type != GGUFValueType::STRING) wrong_type(key, "an array of strings");
    return std::vector<std::string>(v->arr_str.begin(), v->arr_str.end());
}

template <typename Out>
static std::vector<Out> numeric_array(const GGUFValue &v, std::string_view key) {
    std::vector<Out> out(size_t(v.arr_n));
    size_t es = scalar_size(v.arr_type);
    for (size_t j = 0; j < out.size(); j++) {
        const uint8_t *p = v.arr_data + j * es;
        switch (v.arr_type) {
            case GGUFValueType::UINT8: out[j] = Out(*p); break;
            case GGUFValueType::INT8: out[j] = Out(int8_t(*p)); break;
            case GGUFValueType::BOOL: out[j] = Out(*p != 0); break;
#define KV_CASE(T, CT) case GGUFValueType::T: { CT x; std::memcpy(&x, p, sizeof x); out[j] = Out(x); break; }
            KV_CASE(UINT16, uint16_t) KV_CASE(INT16, int16_t) KV_CASE(UINT32, uint32_t) KV_CASE(INT32, int32_t)
            KV_CASE(UINT64, uint64_t) KV_CASE(INT64, int64_t) KV_CASE(FLOAT32, float) KV_CASE(FLOAT64, double)
#undef KV_CASE
            default: wrong_type(key, "a numeric array");
        }
    }
    return out;
}

std::optional<std::vector<float>> GGUFFile::get_float_array(std::string_view key) const {
    const GGUFValue *v = find(key);
    if (!v) return std::nullopt;
    if (v->type != GGUFValueType::ARRAY || v->arr_type == GGUFValueType::STRING) wrong_type(key, "a numeric array");
    return numeric_array<float>(*v, key);
}

std::optional<std::vector<int64_t>> GGUFFile::get_int_array(std::string_view key) const {
    const GGUFValue *v = find(key);
    if (!v) return std::nullopt;
    if (v->type != GGUFValueType::ARRAY || v->arr_type == GGUFValueType::STRING ||
        v->arr_type == GGUFValueType::FLOAT32 || v->arr_type == GGUFValueType::FLOAT64)
        wrong_type(key, "an integer array");
    return numeric_array<int64_t>(*v, key);
}

}  // namespace kvfit
