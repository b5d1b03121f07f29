#include "sampler.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "common.h"

namespace kvfit {

namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

using Cand = std::pair<float, int32_t>;

// A strict total order (value descending, then index ascending), so that
// heap selection and sorting leave the same set in the same order with any
// standard library, and ties always favour the lowest token id, as argmax does.
struct Better {
    bool operator()(const Cand &a, const Cand &b) const {
        return a.first > b.first || (a.first == b.first && a.second < b.second);
    }
};

// NaN would break the ordering and poison the softmax; treat it as "never".
inline float sanitize(float x) { return std::isnan(x) ? kNegInf : x; }

// llama.cpp's rule: shrink a positive logit, push a negative one further down.
inline float penalize(float logit, float penalty) { return logit <= 0.0f ? logit * penalty : logit / penalty; }

// 53 random bits -> [0, 1). Done by hand because std::uniform_real_distribution
// is implementation-defined, and the same seed must give the same tokens
// whichever standard library kvfit was built with.
inline double uniform01(std::mt19937_64 &rng) { return double(rng() >> 11) * (1.0 / 9007199254740992.0); }

inline uint32_t float_bits(float f) {
    uint32_t u;
    std::memcpy(&u, &f, sizeof u);
    return u;
}
inline float bits_float(uint32_t u) {
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
}

// exp(x) for x <= 0 (or -inf), all the softmax needs. Written out rather
// than std::exp, an opaque libm call, so that the loop over a whole
// vocabulary vectorises and the result does not depend on libm. Range
// reduction x = n*ln2 + r with |r| <= ln2/2, then Taylor to degree 6
// (relative error below 3e-7). Below -87 the result would be subnormal: it
// is 0, as for -inf. The clamp and the zeroing are integer selects on the
// bit patterns because GCC, honouring FP exceptions, will not vectorise
// float compares used as selects.
inline float exp_nonpos(float x) {
    const uint32_t kMinus87 = 0xC2AE0000u;                       // -87.0f; larger patterns are below it
    const uint32_t under = float_bits(x) > kMinus87 ? ~0u : 0u;  // x < -87 (not +0: its pattern is 0)
    const float xc = bits_float((float_bits(x) & ~under) | (kMinus87 & under));
    const float magic = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
    const float t = xc * 1.44269504f + magic;
    const float n = t - magic;
    const float r = (xc - n * 0.693359375f) - n * -2.12194440e-4f;  // ln2 in two parts
    float p = 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    // t's low mantissa bits hold n (in [-126, 0]); 2^n from n + 127 as exponent.
    const int32_t e = int32_t(float_bits(t) - float_bits(magic)) + 127;
    const float scale = bits_float(uint32_t(e) << 23);
    return bits_float(float_bits(p * scale) & ~under);
}

// Sum of probabilities in double (a float sum loses the tail of a large
// vocabulary), four chains so the additions overlap.
double sum_probs(const Cand *c, size_t m) {
    double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
    size_t i = 0;
    for (; i + 4 <= m; i += 4) {
        s0 += c[i].first;
        s1 += c[i + 1].first;
        s2 += c[i + 2].first;
        s3 += c[i + 3].first;
    }
    for (; i < m; ++i) s0 += c[i].first;
    return (s0 + s1) + (s2 + s3);
}

// Probabilities reaching top-p lie in [0, 1] (the best candidate has exactly
// 1). For non-negative floats the bit pattern grows with the value, so the
// distance below 1.0f's pattern in units of 2^20 ranks them into buckets of
// an eighth of an octave: key 0 holds (0.9375, 1], and 0 lands in the last.
constexpr uint32_t kOneBits = 0x3F800000u;
constexpr uint32_t kBuckets = (kOneBits >> 20) + 1;

inline uint32_t prob_bucket(float pr) {
    const uint32_t bits = float_bits(pr);
    return bits >= kOneBits ? 0 : (kOneBits - bits) >> 20;
}

// Top-p over cand[0, m) holding unnormalised probabilities: returns how many
// to keep, after moving them to the front. When cand is not ranked yet, a
// bucket histogram finds the bucket where the running sum crosses target,
// so only that bucket needs sorting: everything in better buckets is kept
// whole, in an order this code alone decides.
size_t top_p_cut(std::vector<Cand> &cand, size_t m, double target, bool sorted) {
    double cum = 0.0;
    size_t begin = 0, end = m;  // cand[begin, end) is ranked and still to sum
    if (!sorted) {
        double sums[kBuckets] = {};
        for (size_t i = 0; i < m; ++i) sums[prob_bucket(cand[i].first)] += cand[i].first;
        uint32_t b = 0;
        for (; b < kBuckets; ++b) {
            if (cum + sums[b] >= target) break;
            cum += sums[b];
        }
        if (b == kBuckets) return m;  // rounding kept the sum short of target: keep all
        // One three-way pass: better buckets to the front, bucket b to the
        // back, then bucket b swapped in right after the front part.
        size_t lo = 0, hi = m;
        for (size_t i = 0; i < hi;) {
            const uint32_t key = prob_bucket(cand[i].first);
            if (key < b)
                std::swap(cand[lo++], cand[i++]);
            else if (key == b)
                std::swap(cand[--hi], cand[i]);
            else
                ++i;
        }
        const size_t n_b = m - hi;
        const size_t n_move = std::min(hi - lo, n_b);  // only those landing on other buckets move
        for (size_t j = 0; j < n_move; ++j) std::swap(cand[lo + j], cand[m - 1 - j]);
        begin = lo;
        end = lo + n_b;
        std::sort(cand.begin() + std::ptrdiff_t(begin), cand.begin() + std::ptrdiff_t(end), Better());
    }
    for (size_t i = begin; i < end; ++i) {
        cum += cand[i].first;
        if (cum >= target) return i + 1;
    }
    return end;  // short of target only by rounding: keep all that was ranked
}

}  // namespace

int32_t argmax(const float *logits, int32_t n) {
    if (!logits || n <= 0) return -1;
    int32_t best = 0;
    float best_v = sanitize(logits[0]);
    for (int32_t i = 1; i < n; ++i) {
        float v = logits[i];
        if (v > best_v) {  // strict: ties keep the lower index; NaN never wins
            best_v = v;
            best = i;
        }
    }
    return best;
}

Sampler::Sampler(const kvfit_sampler_params &params) : params_(params), rng_(params.seed) {
    const kvfit_sampler_params &p = params_;
    if (std::isnan(p.temperature) || std::isinf(p.temperature))
        fail(KVFIT_E_ARG, "sampler: temperature must be a finite number (got %g)", double(p.temperature));
    // top_p >= 1 (including +inf) means off; below 0 or NaN is meaningless.
    if (!(p.top_p >= 0.0f)) fail(KVFIT_E_ARG, "sampler: top_p must be >= 0 (got %g)", double(p.top_p));
    // min_p <= 0 means off; above 1 would drop even the most likely token.
    if (std::isnan(p.min_p) || p.min_p > 1.0f)
        fail(KVFIT_E_ARG, "sampler: min_p must be <= 1 (got %g)", double(p.min_p));
    if (!(p.repeat_penalty > 0.0f) || std::isinf(p.repeat_penalty))
        fail(KVFIT_E_ARG, "sampler: repeat_penalty must be a finite number > 0 (got %g)", double(p.repeat_penalty));
    if (p.repeat_last_n < 0) fail(KVFIT_E_ARG, "sampler: repeat_last_n must be >= 0 (got %d)", int(p.repeat_last_n));
}

void Sampler::accept(int32_t token) {
    if (params_.repeat_last_n <= 0) return;
    history_.push_back(token);
    while (history_.size() > size_t(params_.repeat_last_n)) history_.pop_front();
}

void Sampler::reset() {
    history_.clear();
    rng_.seed(params_.seed);
}

int32_t Sampler::sample(const float *logits, int32_t n_vocab) {
    if (!logits || n_vocab <= 0) fail(KVFIT_E_ARG, "sampler: no logits (n_vocab = %d)", int(n_vocab));
    const kvfit_sampler_params &p = params_;
    const bool penalize_on = p.repeat_penalty != 1.0f && !history_.empty();

    // Greedy without a penalty needs no scratch at all.
    if (p.temperature <= 0.0f && !penalize_on) return argmax(logits, n_vocab);

    const size_t n = size_t(n_vocab);
    cand_.resize(n);  // grows once; later calls reuse the capacity
    for (size_t i = 0; i < n; ++i) cand_[i] = Cand(sanitize(logits[i]), int32_t(i));

    if (penalize_on) {
        // Computed from the original logit, so a token that occurs several
        // times in the history is penalised once (as llama.cpp does).
        for (int32_t t : history_)
            if (t >= 0 && t < n_vocab) cand_[size_t(t)].first = penalize(sanitize(logits[t]), p.repeat_penalty);
    }

    if (p.temperature <= 0.0f) {
        size_t best = 0;
        for (size_t i = 1; i < n; ++i)
            if (cand_[i].first > cand_[best].first) best = i;
        return cand_[best].second;
    }

    Better better;
    size_t m = n;         // candidates still in play: cand_[0, m)
    bool sorted = false;  // cand_[0, m) in Better order?

    if (p.top_k > 0 && size_t(p.top_k) < n) {
        // Heap selection in place: cand_[0, k) is a heap with the worst
        // of the best k on top, and each later candidate either loses to it
        // (one comparison, the common case) or replaces it. Much cheaper
        // than nth_element over the whole vocabulary when k is small.
        m = size_t(p.top_k);
        auto first = cand_.begin(), heap_end = cand_.begin() + std::ptrdiff_t(m);
        std::make_heap(first, heap_end, better);
        // Later candidates have higher indices than everything in the heap,
        // so under Better they win only with a strictly greater logit.
        float worst = cand_[0].first;
        for (size_t i = m; i < n; ++i) {
            if (cand_[i].first > worst) {
                std::pop_heap(first, heap_end, better);  // worst to heap_end - 1
                std::swap(*(heap_end - 1), cand_[i]);
                std::push_heap(first, heap_end, better);
                worst = cand_[0].first;
            }
        }
        // Ranked best first; with a total order this arrangement does not
        // depend on the standard library.
        std::sort_heap(first, heap_end, better);
        sorted = true;
    }

    // Softmax with temperature, unnormalised: the largest candidate gets
    // exactly 1, so min-p compares against min_p directly. Unsorted means
    // cand_ is still in index order, so a strict ">" scan finds the
    // best-ranked candidate (lowest index among equals).
    size_t max_pos = 0;
    float max_logit = cand_[0].first;
    if (!sorted)
        for (size_t i = 1; i < m; ++i)
            if (cand_[i].first > max_logit) {
                max_logit = cand_[i].first;
                max_pos = i;
            }
    // Degenerate inputs: nothing finite to normalise (all -inf) or an
    // infinite winner. The best-ranked candidate is the only sensible answer.
    if (!std::isfinite(max_logit)) return cand_[max_pos].second;

    // Capped so that a denormal temperature cannot make 0 * inf = NaN.
    const float inv_t = std::min(1.0f / p.temperature, std::numeric_limits<float>::max());
    Cand *c = cand_.data();
    for (size_t i = 0; i < m; ++i) c[i].first = exp_nonpos((c[i].first - max_logit) * inv_t);
    const double total = sum_probs(c, m);
    const size_t n_softmax = m;

    // min-p before top-p: both keep a top prefix of the ranking, so their
    // intersection is the same in either order as long as top-p measures
    // against the total before min-p; filtering first leaves far fewer
    // candidates to sort. The compaction is stable, so order is kept.
    if (p.min_p > 0.0f) {
        size_t w = 0;
        for (size_t i = 0; i < m; ++i)
            if (cand_[i].first >= p.min_p) cand_[w++] = cand_[i];
        m = w;  // >= 1: the top candidate has probability 1 >= min_p
    }

    if (p.top_p < 1.0f) m = top_p_cut(cand_, m, double(p.top_p) * total, sorted);

    // Draw from what is left, renormalised by its own sum.
    const double kept = m == n_softmax ? total : sum_probs(c, m);
    const double r = uniform01(rng_) * kept;
    double cum = 0.0;
    for (size_t i = 0; i < m; ++i) {
        cum += cand_[i].first;
        if (r < cum) return cand_[i].second;
    }
    // r landed on the rounding slack at the very end: take the last
    // candidate that has any probability.
    for (size_t i = m; i-- > 0;)
        if (cand_[i].first > 0.0f) return cand_[i].second;
    return cand_[0].second;
}

}  // namespace kvfit
