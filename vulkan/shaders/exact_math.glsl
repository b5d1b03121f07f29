// The CPU reference's two exponentials, operation for operation, so that the
// shaders give its bits (see src/backend/cpu/ggml_order.h for why bits):
//   exp_ggml  - ggml's AVX-512 vector exp (ggml_v_expf): fmas (fma_rn) and
//               exact scalings only;
//   exp_libm  - the C library's expf (glibc's table-driven algorithm, in
//               double), which the CPU reference calls where llama.cpp does.
//               Without doubles the shader's exp, which rarely differs.
// GLSL has no hex float literals: constants are given by their bits.
// Requires common.glsl.

#define F32C(bits) uintBitsToFloat(bits)

// j * 2^n for integral n in [-192, 192], rounded once (two exact power-of-two
// factors: a shader's ldexp need not handle results outside the normal range).
float scale2(float j, float n) {
    const int a = int(n) / 2, b = int(n) - int(n) / 2;
    precise float t = j * uintBitsToFloat(uint(a + 127) << 23);
    precise float r = t * uintBitsToFloat(uint(b + 127) << 23);
    return r;
}

float exp_ggml(float x) {
    const float r = F32C(0x4b400000u);  // 0x1.8p23
    precise float z = fma_rn(x, F32C(0x3fb8aa3bu), r);
    precise float n = z - r;
    precise float b = fma_rn(-n, F32C(0x35bfbe8eu), fma_rn(-n, F32C(0x3f317200u), x));
    precise float u = b * b;
    precise float j = fma_rn(fma_rn(fma_rn(F32C(0x3c072010u), b, F32C(0x3d2b9f17u)), u, fma_rn(F32C(0x3e2aaf33u), b, F32C(0x3efffedbu))),
                          u, fma_rn(F32C(0x3f7ffff6u), b, 1.0));
    if (abs(n) > 192.0) return n <= 0.0 ? 0.0 : uintBitsToFloat(0x7f800000u);
    return scale2(j, n);
}

#ifdef USE_FP64
// 2^(i/32) with i << 47 subtracted from its bits, i = 0 .. 31 (low, high words).
const uvec2 EXP2_TAB[32] = uvec2[32](
    uvec2(0x00000000u, 0x3ff00000u), uvec2(0xd3158574u, 0x3fefd9b0u), uvec2(0x6cf9890fu, 0x3fefb558u),
    uvec2(0xd0125b51u, 0x3fef9301u), uvec2(0x3c7d517bu, 0x3fef72b8u), uvec2(0x3168b9aau, 0x3fef5487u),
    uvec2(0x6e756238u, 0x3fef387au), uvec2(0xf51fdee1u, 0x3fef1e9du), uvec2(0x0a31b715u, 0x3fef06feu),
    uvec2(0x373aa9cbu, 0x3feef1a7u), uvec2(0x4c123422u, 0x3feedea6u), uvec2(0x6061892du, 0x3feece08u),
    uvec2(0xd5362a27u, 0x3feebfdau), uvec2(0x569d4f82u, 0x3feeb42bu), uvec2(0xdd485429u, 0x3feeab07u),
    uvec2(0xb03a5585u, 0x3feea47eu), uvec2(0x667f3bcdu, 0x3feea09eu), uvec2(0xe8ec5f74u, 0x3fee9f75u),
    uvec2(0x73eb0187u, 0x3feea114u), uvec2(0x994cce13u, 0x3feea589u), uvec2(0x422aa0dbu, 0x3feeace5u),
    uvec2(0xb0cdc5e5u, 0x3feeb737u), uvec2(0x82a3f090u, 0x3feec491u), uvec2(0xb23e255du, 0x3feed503u),
    uvec2(0x995ad3adu, 0x3feee89fu), uvec2(0xf2fb5e47u, 0x3feeff76u), uvec2(0xdd85529cu, 0x3fef199bu),
    uvec2(0xdcef9069u, 0x3fef3720u), uvec2(0xdcfba487u, 0x3fef5818u), uvec2(0x337b9b5fu, 0x3fef7c97u),
    uvec2(0xa2a490dau, 0x3fefa4afu), uvec2(0x5b6e4540u, 0x3fefd076u));

// glibc's expf (the variant for CPUs with FMA): x 32/ln2 = k + r with k the
// nearest integer and r = fma(32/ln2, x, -k), e^x = 2^(k/32) 2^(r/32), the
// first from the table, the second a cubic in r. The product x 32/ln2 is
// taken exactly as p1 + p2 (32/ln2 split into 29 and 24 significant bits), so
// k and r need no double fma; the cubic is evaluated with unfused double
// operations where glibc fuses them. Checked against glibc 2.36 on every
// float: the same bits for all of them.
float exp_libm(float x) {
    const uint ux = floatBitsToUint(x);
    const uint abstop = (ux >> 20) & 0x7ffu;
    if (abstop >= 0x42bu) {  // |x| >= 88, or NaN
        if (ux == 0xff800000u) return 0.0;
        if (abstop >= 0x7f8u) return x + x;
        if (x > F32C(0x42b17217u)) return uintBitsToFloat(0x7f800000u);
        if (x < F32C(0xc2cff1b4u)) return 0.0;
    }
    const double xd = double(x);
    precise double p1 = packDouble2x32(uvec2(0x65000000u, 0x40471547u)) * xd;
    precise double p2 = packDouble2x32(uvec2(0x00000000u, 0x3e55c17fu)) * xd;
    precise double zh = p1 + p2;
    precise double bb = zh - p1;
    precise double e = (p1 - (zh - bb)) + (p2 - bb);  // zh + e = p1 + p2 exactly
    double k = roundEven(zh);
    const double fl = floor(zh);
    precise double frac = zh - fl;
    if (frac == 0.5lf && e != 0.0lf) k = e > 0.0lf ? fl + 1.0lf : fl;
    precise double r = (p1 - k) + p2;
    const uint ki = uint(int(k));
    const uvec2 t = EXP2_TAB[ki & 31u];
    const double s = packDouble2x32(uvec2(t.x, t.y + (ki << 15)));
    precise double c = packDouble2x32(uvec2(0x4b912394u, 0x3ebc6af8u)) * r + packDouble2x32(uvec2(0x50fac4f3u, 0x3f2ebfceu));
    precise double r2 = r * r;
    precise double y = packDouble2x32(uvec2(0xff0c52d6u, 0x3f962e42u)) * r + 1.0lf;
    precise double w = (c * r2 + y) * s;
    return float(w);
}
#else
float exp_libm(float x) { return exp(x); }
#endif
