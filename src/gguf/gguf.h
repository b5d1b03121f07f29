// GGUF v2/v3 reader over a read-only memory map. Every offset and size read
// from the file is checked against the mapping before use; a bad file throws
// kvfit::Error (KVFIT_E_IO / KVFIT_E_FORMAT / KVFIT_E_UNSUPPORTED).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace kvfit {

enum class GGUFValueType : uint32_t {
    UINT8 = 0, INT8 = 1, UINT16 = 2, INT16 = 3, UINT32 = 4, INT32 = 5, FLOAT32 = 6,
    BOOL = 7, STRING = 8, ARRAY = 9, UINT64 = 10, INT64 = 11, FLOAT64 = 12,
};

// One metadata value. Scalars are widened into u/i/f; strings and string
// arrays point into the mapping; numeric arrays keep their raw bytes.
struct GGUFValue {
    GGUFValueType type = GGUFValueType::UINT8;
    uint64_t u = 0;            // unsigned ints and bool
    int64_t i = 0;             // every integer type, sign-extended
    double f = 0;              // float types (and ints converted)
    std::string_view str;      // STRING
    GGUFValueType arr_type = GGUFValueType::UINT8;  // ARRAY element type
    uint64_t arr_n = 0;                              // ARRAY length
    const uint8_t *arr_data = nullptr;               // numeric ARRAY raw data
    std::vector<std::string_view> arr_str;           // STRING ARRAY items

    bool is_int() const;
    bool is_float() const;
    std::string to_text() const;  // rendering for kvfit_model_meta
};

struct GGUFTensor {
    std::string name;
    uint32_t type = 0;         // GgmlType id
    int n_dims = 0;
    int64_t ne[4] = {1, 1, 1, 1};  // ne[0] is the contiguous (row) dimension
    uint64_t offset = 0;       // relative to the data section
    size_t nbytes = 0;
    const uint8_t *data = nullptr;  // inside the mapping
    // The data lies in a read-only private mapping of the file, whose pages
    // may be dropped (the kernel reads them again if they are touched).
    bool file_pages = false;
    int64_t n_elements() const { return ne[0] * ne[1] * ne[2] * ne[3]; }
};

class GGUFFile {
public:
    // Opens and validates the whole header and tensor table.
    static std::unique_ptr<GGUFFile> open(const std::string &path);
    // Same over bytes the caller owns (tests); the bytes must outlive the object.
    static std::unique_ptr<GGUFFile> from_memory(const void *data, size_t size);
    ~GGUFFile();
    GGUFFile(const GGUFFile &) = delete;
    GGUFFile &operator=(const GGUFFile &) = delete;

    uint32_t version() const { return version_; }
    const GGUFValue *find(std::string_view key) const;
    const std::vector<std::pair<std::string, GGUFValue>> &metadata() const { return kv_; }

    // Typed getters: nullopt when absent; throw KVFIT_E_FORMAT when the key
    // exists with an incompatible type.
    std::optional<std::string> get_string(std::string_view key) const;
    std::optional<uint64_t> get_uint(std::string_view key) const;  // any non-negative integer
    std::optional<int64_t> get_int(std::string_view key) const;    // any integer
    std::optional<double> get_float(std::string_view key) const;   // float or integer
    std::optional<bool> get_bool(std::string_view key) const;
    std::optional<std::vector<std::string>> get_string_array(std::string_view key) const;
    std::optional<std::vector<float>> get_float_array(std::string_view key) const;
    std::optional<std::vector<int64_t>> get_int_array(std::string_view key) const;

    const std::vector<GGUFTensor> &tensors() const { return tensors_; }
    const GGUFTensor *tensor(std::string_view name) const;

    size_t file_size() const { return size_; }

private:
    GGUFFile() = default;
    void parse();

    const uint8_t *base_ = nullptr;
    size_t size_ = 0;
    bool mapped_ = false;
    uint32_t version_ = 0;
    std::vector<std::pair<std::string, GGUFValue>> kv_;
    std::unordered_map<std::string, size_t> kv_index_;
    std::vector<GGUFTensor> tensors_;
    std::unordered_map<std::string, size_t> tensor_index_;
};

}  // namespace kvfit
