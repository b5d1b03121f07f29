#include "kv/fold.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "common.h"

namespace kvfit {

int fold_features(FoldMap map, int head_dim) {
    switch (map) {
        case FoldMap::Taylor: return head_dim + 1;
        case FoldMap::RandomFeatures: return head_dim;
        default: return 0;
    }
}

uint64_t fold_state_bytes(FoldMap map, int n_head_kv, int head_dim) {
    const uint64_t F = uint64_t(fold_features(map, head_dim));
    return uint64_t(n_head_kv) * (F * uint64_t(head_dim) + F) * sizeof(float);
}

const float *fold_random_directions(int head_dim) {
    static std::mutex mu;
    static std::map<int, std::unique_ptr<std::vector<float>>> cache;
    std::lock_guard<std::mutex> lock(mu);
    auto &slot = cache[head_dim];
    if (!slot) {
        // N(0, 1) draws: Box-Muller over splitmix64, seed fixed.
        const size_t n = size_t(head_dim) * size_t(head_dim);
        slot = std::make_unique<std::vector<float>>(n);
        uint64_t s = 0x666f6c64ull;
        auto next = [&] {
            uint64_t z = (s += 0x9e3779b97f4a7c15ull);
            z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
            z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
            return double((z ^ (z >> 31)) >> 11) * 0x1.0p-53;
        };
        for (size_t i = 0; i < n; i += 2) {
            const double u1 = 1.0 - next(), u2 = next();
            const double r = std::sqrt(-2.0 * std::log(u1)), th = 6.283185307179586 * u2;
            (*slot)[i] = float(r * std::cos(th));
            if (i + 1 < n) (*slot)[i + 1] = float(r * std::sin(th));
        }
    }
    return slot->data();
}

namespace {

// v rotated to cache position pos by the layer's table.
void rotate_to(const FoldArgs &f, float *v, uint32_t pos) {
    const int half = f.rope.n_dims / 2;
    const float *cs = f.rope_cs + size_t(pos) * size_t(half) * 2;
    for (int i = 0; i < half; i++) {
        const int a = f.rope.mode == RopeMode::Neox ? i : 2 * i, b = f.rope.mode == RopeMode::Neox ? i + half : 2 * i + 1;
        const float x0 = v[a], x1 = v[b], c = cs[2 * i], s = cs[2 * i + 1];
        v[a] = x0 * c - x1 * s;
        v[b] = x0 * s + x1 * c;
    }
}

// Exponents of the random features of x (already scaled by sqrt(scale)).
void feature_exponents(const float *x, int hd, double *e) {
    const float *w = fold_random_directions(hd);
    double nn = 0;
    for (int d = 0; d < hd; d++) nn += double(x[d]) * x[d];
    for (int i = 0; i < hd; i++) {
        double dot = 0;
        for (int d = 0; d < hd; d++) dot += double(w[size_t(i) * hd + d]) * x[d];
        e[i] = dot - nn / 2;
    }
}

}  // namespace

void fold_add_host(const FoldArgs &f, const uint8_t *k_row, const uint8_t *v_row, KVCodec codec, bool hadamard,
                   size_t head_bytes) {
    const int hd = f.head_dim, F = fold_features(f.map, hd);
    std::vector<float> k(static_cast<size_t>(hd)), v(static_cast<size_t>(hd));
    std::vector<double> e(static_cast<size_t>(F));
    for (int g = 0; g < f.n_head_kv; g++) {
        codec_decode(codec, k_row + size_t(g) * head_bytes, k.data(), hd);
        if (hadamard) hadamard_rotate_inv(k.data(), hd);
        codec_decode(codec, v_row + size_t(g) * head_bytes, v.data(), hd);
        float *A = f.mem + size_t(g) * (size_t(F) * hd + size_t(F)), *z = A + size_t(F) * hd;
        if (f.map == FoldMap::Taylor) {
            for (int d = 0; d < hd; d++) A[d] += v[size_t(d)];
            z[0] += 1.0f;
            for (int i = 0; i < hd; i++) {
                const float ki = k[size_t(i)];
                float *row = A + size_t(i + 1) * hd;
                for (int d = 0; d < hd; d++) row[d] += ki * v[size_t(d)];
                z[i + 1] += ki;
            }
        } else {
            const float rs = std::sqrt(f.scale);
            for (float &x : k) x *= rs;
            feature_exponents(k.data(), hd, e.data());
            const float norm = 1.0f / std::sqrt(float(F));
            for (int i = 0; i < F; i++) {
                const float phi = float(std::exp(std::min(e[size_t(i)], 80.0))) * norm;  // (80: stays finite)
                float *row = A + size_t(i) * hd;
                for (int d = 0; d < hd; d++) row[d] += phi * v[size_t(d)];
                z[i] += phi;
            }
        }
    }
}

void fold_read_host(const FoldArgs &f, const float *q, int n_q, const float *stats, float *out) {
    const int hd = f.head_dim, F = fold_features(f.map, hd), group = f.n_head / f.n_head_kv;
    std::vector<float> qr(static_cast<size_t>(hd));
    std::vector<double> num(static_cast<size_t>(hd)), e(static_cast<size_t>(F));
    for (int i = 0; i < n_q; i++) {
        for (int h = 0; h < f.n_head; h++) {
            const float *A = f.mem + size_t(h / group) * (size_t(F) * hd + size_t(F)), *z = A + size_t(F) * hd;
            const size_t row = size_t(i) * size_t(f.n_head) + size_t(h);
            std::copy(q + row * hd, q + (row + 1) * hd, qr.begin());
            rotate_to(f, qr.data(), f.query_pos);
            double fmax, den;  // the fold's part: num and den relative to exp(fmax)
            if (f.map == FoldMap::Taylor) {
                if (z[0] <= 0.0f) continue;  // nothing folded yet
                double mu = 0;
                for (int d = 0; d < hd; d++) mu += double(qr[size_t(d)]) * z[d + 1];
                mu = mu * f.scale / z[0];
                for (int d = 0; d < hd; d++) num[size_t(d)] = (1.0 - mu) * A[d];
                for (int x = 0; x < hd; x++) {
                    const double c = double(qr[size_t(x)]) * f.scale;
                    const float *r = A + size_t(x + 1) * hd;
                    for (int d = 0; d < hd; d++) num[size_t(d)] += c * r[d];
                }
                fmax = mu;
                den = z[0];
            } else {
                if (z[0] <= 0.0f) continue;  // (every feature is positive once a token is folded)
                const float rs = std::sqrt(f.scale);
                for (float &x : qr) x *= rs;
                feature_exponents(qr.data(), hd, e.data());
                fmax = *std::max_element(e.begin(), e.end());
                std::fill(num.begin(), num.end(), 0.0);
                den = 0;
                const double norm = 1.0 / std::sqrt(double(F));
                for (int x = 0; x < F; x++) {
                    const double phi = std::exp(e[size_t(x)] - fmax) * norm;
                    const float *r = A + size_t(x) * hd;
                    for (int d = 0; d < hd; d++) num[size_t(d)] += phi * r[d];
                    den += phi * z[x];
                }
            }
            const double m = stats[row * 2], l = stats[row * 2 + 1];
            const double M = std::max(m, fmax), a = std::exp(m - M) * l, b = std::exp(fmax - M);
            const double total = a + b * den;
            float *o = out + row * hd;
            if (!(total > 0) || !std::isfinite(total)) continue;  // keep the exact part alone
            for (int d = 0; d < hd; d++) o[d] = float((double(o[d]) * a + b * num[size_t(d)]) / total);
        }
    }
}

}  // namespace kvfit
