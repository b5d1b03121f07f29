// Helpers shared by the compute shaders: byte access into uint buffers (KV
// rows and weight blocks are not 4-byte aligned, and 8/16-bit storage is an
// optional feature), exact half/bfloat16 conversions done with integer
// arithmetic (the built-in ones may flush subnormals or round differently
// from the CPU reference), and workgroup reductions with and without
// subgroup operations.
//
// Every shader's workgroup size is specialization constant 0 (WG).

#ifdef USE_SUBGROUP
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#endif

layout(constant_id = 0) const uint WG = 64;
layout(local_size_x_id = 0) in;

// Byte `off` / the 16-bit value at even byte `off` of a uint array.
#define LOAD_U8(buf, off) ((buf[(off) >> 2] >> (((off) & 3u) * 8u)) & 0xffu)
#define LOAD_U16(buf, off) ((buf[(off) >> 2] >> (((off) & 2u) * 8u)) & 0xffffu)
// Sign-extended int8 at byte `off`.
#define LOAD_I8(buf, off) (int(LOAD_U8(buf, off) << 24) >> 24)

float half_to_float(uint h) {
    const uint sign = (h & 0x8000u) << 16;
    const uint e = (h >> 10) & 0x1fu;
    const uint m = h & 0x3ffu;
    if (e == 0u) {
        // zero or subnormal: m * 2^-24, exact in float
        const float v = float(m) * 5.9604644775390625e-8;
        return (h & 0x8000u) != 0u ? -v : v;
    }
    if (e == 31u) return uintBitsToFloat(sign | 0x7f800000u | (m << 13));
    return uintBitsToFloat(sign | ((e + 112u) << 23) | (m << 13));
}

// Round to nearest even; overflow to inf, NaN stays NaN (as the CPU's fp32_to_fp16).
uint float_to_half(float f) {
    const uint x = floatBitsToUint(f);
    const uint sign = (x >> 16) & 0x8000u;
    uint a = x & 0x7fffffffu;
    if (a >= 0x7f800000u) return sign | 0x7c00u | (a > 0x7f800000u ? 0x200u : 0u);
    if (a >= 0x477ff000u) return sign | 0x7c00u;
    if (a < 0x38800000u) {
        // subnormal half: let a float add align the half ulp and round
        precise float t = uintBitsToFloat(a) + 0.5;
        return sign | (floatBitsToUint(t) - 0x3f000000u);
    }
    a += 0xc8000fffu + ((a >> 13) & 1u);
    return sign | ((a >> 13) & 0xffffu);
}

// a / b and sqrt(a) correctly rounded, as the CPU reference computes them in
// float: a shader's float division and square root need not be (Vulkan
// allows 2.5 and 3 ulp), and one ulp moves a quantization code or scale.
// Taken through doubles where the device has them (rounding the double
// result to float gives the correctly rounded float: 53 >= 2 * 24 + 2 bits);
// else the float operations, which rarely differ.
float div_rn(float a, float b) {
#ifdef USE_FP64
    return float(double(a) / double(b));
#else
    return a / b;
#endif
}
float sqrt_rn(float a) {
#ifdef USE_FP64
    return float(sqrt(double(a)));
#else
    return sqrt(a);
#endif
}

// fma(a, b, c) rounded once, as the CPU's std::fma and FMA instructions do.
// A shader's fma() need not be fused (lavapipe multiplies and adds). Where
// the host found it fused (fma_probe.comp) it is used as it is; else, with
// doubles, fma is computed from the exact product a*b (48 bits fit a double):
// s = a*b + c rounded to double, e its exact error (Knuth's two-sum); s
// rounded to float is the correctly rounded result unless s lies exactly
// halfway between two floats, when e tells which side the exact sum is on.
// (Results in the float subnormal range are rounded as if normal.)
layout(constant_id = 30) const bool FMA_FUSED = false;

#ifdef USE_FP64
float fma_rn(float a, float b, float c) {
    if (FMA_FUSED) {
        precise float f = fma(a, b, c);
        return f;
    }
    precise double p = double(a) * double(b);
    precise double s = p + double(c);
    precise double bb = s - p;
    precise double e = (p - (s - bb)) + (double(c) - bb);
    const uvec2 u = unpackDouble2x32(s);
    if ((u.x & 0x1fffffffu) == 0x10000000u && e != 0.0lf) {
        const uvec2 lo = uvec2(u.x & 0xe0000000u, u.y);
        const uvec2 hi = uvec2(lo.x + 0x20000000u, lo.y + (lo.x == 0xe0000000u ? 1u : 0u));
        return float(packDouble2x32((e > 0.0lf) == (s > 0.0lf) ? hi : lo));
    }
    return float(s);
}
#else
float fma_rn(float a, float b, float c) { return fma(a, b, c); }
#endif

float bf16_to_float(uint h) { return uintBitsToFloat(h << 16); }

uint float_to_bf16(float f) {
    const uint x = floatBitsToUint(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (x >> 16) | 64u;
    return (x + (0x7fffu + ((x >> 16) & 1u))) >> 16;
}

// Workgroup-wide sum and max of one value per invocation, returned to all.
// Callers must reach them in uniform control flow.
shared float red_[WG];

#ifdef USE_SUBGROUP
float wg_sum(float v) {
    v = subgroupAdd(v);
    if (subgroupElect()) red_[gl_SubgroupID] = v;
    barrier();
    float s = 0.0;
    for (uint i = 0; i < gl_NumSubgroups; i++) s += red_[i];
    barrier();
    return s;
}
float wg_max(float v) {
    v = subgroupMax(v);
    if (subgroupElect()) red_[gl_SubgroupID] = v;
    barrier();
    float s = red_[0];
    for (uint i = 1; i < gl_NumSubgroups; i++) s = max(s, red_[i]);
    barrier();
    return s;
}
#else
// Shared-memory tree; WG is a power of two.
float wg_sum(float v) {
    const uint t = gl_LocalInvocationID.x;
    red_[t] = v;
    barrier();
    for (uint s = WG / 2; s > 0; s >>= 1) {
        if (t < s) red_[t] += red_[t + s];
        barrier();
    }
    const float r = red_[0];
    barrier();
    return r;
}
float wg_max(float v) {
    const uint t = gl_LocalInvocationID.x;
    red_[t] = v;
    barrier();
    for (uint s = WG / 2; s > 0; s >>= 1) {
        if (t < s) red_[t] = max(red_[t], red_[t + s]);
        barrier();
    }
    const float r = red_[0];
    barrier();
    return r;
}
#endif
