//! `exp` and the sigmoid over `f32` slices, vectorised and bit for bit the C library's `expf`.
//!
//! burn's CPU backend evaluates `exp` one element at a time through the C library (in `exp`,
//! `log_softmax` and the sigmoid of SwiGLU's SiLU): ~6 % of a PPO run on 1024-byte text (`perf`,
//! 2026-12-05). glibc 2.36 (Debian 12, this project's machines) computes `expf` with the
//! algorithm of ARM's optimized-routines: `x·32/ln 2 = k + r`, a 32-entry table of `2^(i/32)`, a
//! cubic in `r`, all in `f64`. On a CPU with FMA (every machine this project's results come from)
//! the library runs its FMA build (`__expf_fma`), where the compiler fused the reduction and the
//! cubic's multiply-adds. This module computes the same operations, fused the same way, over
//! whole slices so that the compiler vectorises them (AVX-512 / AVX2 with FMA, through [`pulp`]).
//! The result equals glibc's `expf` on every one of the 2³² inputs (`cargo run --release -p
//! ahr-tpa --example expf_exhaustive`; the tests hold it to bit patterns recorded from glibc), so
//! models and policies compute exactly what they computed with burn's `exp` — on a CPU without FMA
//! too, where the library's other build would round a few inputs differently.

/// `2^(i/32)` for `i` in `0..32`, each as its `f64` bits minus `i << 47` (so that adding `k << 47`
/// for `k ≡ i (mod 32)` scales it by `2^⌊k/32⌋`).
const TABLE: [u64; 32] = [
    0x3ff0000000000000,
    0x3fefd9b0d3158574,
    0x3fefb5586cf9890f,
    0x3fef9301d0125b51,
    0x3fef72b83c7d517b,
    0x3fef54873168b9aa,
    0x3fef387a6e756238,
    0x3fef1e9df51fdee1,
    0x3fef06fe0a31b715,
    0x3feef1a7373aa9cb,
    0x3feedea64c123422,
    0x3feece086061892d,
    0x3feebfdad5362a27,
    0x3feeb42b569d4f82,
    0x3feeab07dd485429,
    0x3feea47eb03a5585,
    0x3feea09e667f3bcd,
    0x3fee9f75e8ec5f74,
    0x3feea11473eb0187,
    0x3feea589994cce13,
    0x3feeace5422aa0db,
    0x3feeb737b0cdc5e5,
    0x3feec49182a3f090,
    0x3feed503b23e255d,
    0x3feee89f995ad3ad,
    0x3feeff76f2fb5e47,
    0x3fef199bdd85529c,
    0x3fef3720dcef9069,
    0x3fef5818dcfba487,
    0x3fef7c97337b9b5f,
    0x3fefa4afa2a490da,
    0x3fefd0765b6e4540,
];
/// `32 / ln 2`.
const INV_LN2_N: f64 = f64::from_bits(0x4047_1547_652b_82fe);
/// `1.5·2⁵²`: adding it rounds to an integer held in the low mantissa bits.
const SHIFT: f64 = f64::from_bits(0x4338_0000_0000_0000);
/// The cubic's coefficients, scaled for `r` in units of `1/32`.
const C0: f64 = f64::from_bits(0x3ebc_6af8_4b91_2394);
const C1: f64 = f64::from_bits(0x3f2e_bfce_50fa_c4f3);
const C2: f64 = f64::from_bits(0x3f96_2e42_ff0c_52d6);
/// Above this `expf` overflows to `+∞` (`≈ ln 2¹²⁸`).
const OVERFLOW_ABOVE: f32 = f32::from_bits(0x42b1_7217);
/// Below this (`≈ −ln 2¹⁵⁰`, negated) `expf` underflows to `+0`.
const UNDERFLOW_BELOW: f32 = -f32::from_bits(0x42cf_f1b4);

/// `expf(x)` as glibc 2.36's FMA build computes it, one element (the branching form;
/// [`exp_in_place`] computes the same over slices).
pub fn exp(x: f32) -> f32 {
    if x.is_nan() {
        return x + x;
    }
    if x > OVERFLOW_ABOVE {
        return f32::INFINITY;
    }
    if x < UNDERFLOW_BELOW {
        return 0.0;
    }
    let (ki, r) = reduce(x);
    cubic(r, scale(ki))
}

/// `x·32/ln 2 = k + r`, `k` rounded to nearest (ties to even) by the shift, fused as the FMA
/// build fuses it: `k` as the bits of the shifted sum, and `r`. The library takes this path for
/// every `x` in `[UNDERFLOW_BELOW, OVERFLOW_ABOVE]` (its special cases only catch `|x| ≥ 88`
/// outside that range).
#[inline(always)]
fn reduce(x: f32) -> (u64, f64) {
    let xd = f64::from(x);
    let kd = INV_LN2_N.mul_add(xd, SHIFT);
    (kd.to_bits(), INV_LN2_N.mul_add(xd, -(kd - SHIFT)))
}

/// `2^(k/32)` from the table.
#[inline(always)]
fn scale(ki: u64) -> f64 {
    f64::from_bits(TABLE[(ki % 32) as usize].wrapping_add(ki << 47))
}

/// `exp(x) = 2^(k/32)·2^(r/32) ≈ s·(C0·r³ + C1·r² + C2·r + 1)`, rounded to `f32`.
#[inline(always)]
fn cubic(r: f64, s: f64) -> f32 {
    let z = C0.mul_add(r, C1);
    let y = C2.mul_add(r, 1.0);
    (z.mul_add(r * r, y) * s) as f32
}

/// The special cases as selects: `+∞` above, `+0` below the range (a NaN compares false with
/// both and stays NaN through the main path).
#[inline(always)]
fn special(x: f32, y: f32) -> f32 {
    let y = if x > OVERFLOW_ABOVE { f32::INFINITY } else { y };
    if x < UNDERFLOW_BELOW { 0.0 } else { y }
}

/// Elements per pass: each of [`exp_chunk`]'s three loops is a straight loop over this many
/// lanes, which the compiler vectorises — except the table's lookups, which it would turn into a
/// gather (slow on the CPUs it assumes) and so keeps scalar, leaving the whole function unvectorised
/// when written per element.
const W: usize = 16;

/// [`exp`] of `W` elements, the reduction and the cubic vectorised, the lookups scalar.
#[inline(always)]
fn exp_chunk(x: &[f32; W]) -> [f32; W] {
    let (mut ki, mut r, mut s, mut y) = ([0u64; W], [0f64; W], [0f64; W], [0f32; W]);
    for i in 0..W {
        (ki[i], r[i]) = reduce(x[i]);
    }
    for i in 0..W {
        s[i] = scale(ki[i]);
    }
    for i in 0..W {
        y[i] = special(x[i], cubic(r[i], s[i]));
    }
    y
}

/// The sigmoid as burn's CPU backend computes it (`1 / (1 + e^−x)` for `x ≥ 0`, `e^x / (1 + e^x)`
/// below) from `e` = `exp(−|x|)`.
#[inline(always)]
fn sigmoid_from(x: f32, e: f32) -> f32 {
    if x >= 0.0 { 1.0 / (1.0 + e) } else { e / (1.0 + e) }
}

/// `expf` of every element of `xs`, in place; vectorised where the CPU has AVX2 and FMA.
pub fn exp_in_place(xs: &mut [f32]) {
    map_in_place(xs, Map::Exp);
}

/// burn's CPU sigmoid of every element of `xs`, in place, with [`exp_in_place`]'s `exp`.
pub fn sigmoid_in_place(xs: &mut [f32]) {
    map_in_place(xs, Map::Sigmoid);
}

#[derive(Clone, Copy)]
enum Map {
    Exp,
    Sigmoid,
}

impl Map {
    #[inline(always)]
    fn chunk(self, xs: &mut [f32; W]) {
        match self {
            Map::Exp => *xs = exp_chunk(xs),
            Map::Sigmoid => {
                let e = exp_chunk(&xs.map(|x| if x >= 0.0 { -x } else { x }));
                for (x, e) in xs.iter_mut().zip(e) {
                    *x = sigmoid_from(*x, e);
                }
            }
        }
    }

    #[inline(always)]
    fn one(self, x: f32) -> f32 {
        match self {
            Map::Exp => exp(x),
            Map::Sigmoid => sigmoid_from(x, exp(if x >= 0.0 { -x } else { x })),
        }
    }

    #[inline(always)]
    fn slice(self, xs: &mut [f32]) {
        let (chunks, tail) = xs.as_chunks_mut::<W>();
        for c in chunks {
            self.chunk(c);
        }
        for x in tail {
            *x = self.one(*x);
        }
    }
}

/// `map` over `xs` compiled for AVX-512 or AVX2 with FMA; one element at a time elsewhere (the
/// same bits: `mul_add` is then the C library's exact `fma`).
fn map_in_place(xs: &mut [f32], map: Map) {
    #[cfg(target_arch = "x86_64")]
    {
        if let Some(simd) = pulp::x86::V4::try_new() {
            return simd.vectorize(
                #[inline(always)]
                || map.slice(xs),
            );
        }
        if let Some(simd) = pulp::x86::V3::try_new() {
            return simd.vectorize(
                #[inline(always)]
                || map.slice(xs),
            );
        }
    }
    for x in xs {
        *x = map.one(*x);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(x, expf(x))` as glibc 2.36's `expf` gives them (bits; Debian 12, x86-64 with FMA): both
    /// signs of zero, tiny and table-edge arguments, the two inputs where an unfused reduction
    /// rounds differently (3.2564632e1, −6.309946e1), the overflow and underflow edges, subnormal
    /// results, ±∞.
    const GLIBC: [(u32, u32); 36] = [
        (0x00000000, 0x3f800000), // exp(0e0)
        (0x80000000, 0x3f800000), // exp(-0e0)
        (0x3f800000, 0x402df854), // exp(1e0)
        (0xbf800000, 0x3ebc5ab2), // exp(-1e0)
        (0x2edbe6ff, 0x3f800000), // exp(1e-10)
        (0x00000001, 0x3f800000), // exp(1e-45)
        (0x3e800000, 0x3fa45af2), // exp(2.5e-1)
        (0xc0000000, 0x3e0a9555), // exp(-2e0)
        (0x3c321643, 0x3f81661e), // exp(1.0869565e-2)
        (0x3cb17218, 0x3f82cd87), // exp(2.166085e-2)
        (0x3d31f79f, 0x3f85af1f), // exp(4.344904e-2)
        (0x40490fdb, 0x41b92025), // exp(3.1415927e0)
        (0x41200000, 0x46ac14ee), // exp(1e1)
        (0xc1200000, 0x383e6bce), // exp(-1e1)
        (0x42280000, 0x5dc1192b), // exp(4.2e1)
        (0xc2280000, 0x2129b229), // exp(-4.2e1)
        (0x4202422f, 0x56fc9f1c), // exp(3.2564632e1)
        (0xc27c65d9, 0x11fa2993), // exp(-6.309946e1)
        (0x42aeac4f, 0x7e7fffb4), // exp(8.733654e1)
        (0x42b00000, 0x7ef882b7), // exp(8.8e1)
        (0xc2b00000, 0x0041edc4), // exp(-8.8e1)
        (0x42b17217, 0x7f7fff84), // exp(8.872283e1)
        (0x42b17218, 0x7f800000), // exp(8.872284e1)
        (0xc2ae0000, 0x00b33687), // exp(-8.7e1)
        (0xc2b8aa3b, 0x0000ddb0), // exp(-9.233248e1)
        (0xc2c80000, 0x0000001b), // exp(-1e2)
        (0xc2ce8ed0, 0x00000001), // exp(-1.0327893e2)
        (0xc2cff1b4, 0x00000001), // exp(-1.0397208e2)
        (0xc2cff1b5, 0x00000000), // exp(-1.03972084e2)
        (0xc2d00000, 0x00000000), // exp(-1.04e2)
        (0xce6e6b28, 0x00000000), // exp(-1e9)
        (0x4e6e6b28, 0x7f800000), // exp(1e9)
        (0x7f7fffff, 0x7f800000), // exp(3.4028235e38)
        (0xff7fffff, 0x00000000), // exp(-3.4028235e38)
        (0x7f800000, 0x7f800000), // exp(inf)
        (0xff800000, 0x00000000), // exp(-inf)
    ];

    fn same(a: f32, b: f32) -> bool {
        a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
    }

    #[test]
    fn both_forms_give_glibcs_bits_on_the_fixture() {
        let xs: Vec<f32> = GLIBC.iter().map(|&(x, _)| f32::from_bits(x)).collect();
        // Twice over, so that the fixture runs through whole chunks and through the scalar tail.
        let mut lanes: Vec<f32> = xs.iter().chain(&xs).copied().collect();
        exp_in_place(&mut lanes);
        for (i, (&(x, want), &x_f)) in GLIBC.iter().zip(&xs).enumerate() {
            assert_eq!(exp(x_f).to_bits(), want, "scalar exp({x:#010x})");
            assert_eq!(lanes[i].to_bits(), want, "vectorised exp({x:#010x})");
            assert_eq!(lanes[i + xs.len()].to_bits(), want, "vectorised exp({x:#010x}), second pass");
        }
        let mut nan = [f32::NAN, -f32::NAN];
        exp_in_place(&mut nan);
        assert!(nan.iter().all(|x| x.is_nan()) && exp(f32::NAN).is_nan());
    }

    /// A spread of 2¹⁸ bit patterns over every sign and exponent, then 2¹⁷ evenly spaced
    /// arguments from −104 to 89 (where the results are finite and not zero).
    fn spread() -> Vec<f32> {
        (0..1u32 << 18)
            .map(|i| f32::from_bits(i.wrapping_mul(16_411)))
            .chain((0..1u32 << 17).map(|i| -104.0 + i as f32 * (193.0 / 131_072.0)))
            .collect()
    }

    /// On the spread, the scalar form's outputs hash to what glibc 2.36's `expf` gave there
    /// (SHA-256 of the output bits, NaNs as `0x7fc00000`; recorded on Debian 12), so a change of a
    /// single bit anywhere fails.
    #[test]
    fn the_scalar_form_gives_glibcs_bits_on_the_spread() {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for y in spread().into_iter().map(exp) {
            h.update(if y.is_nan() { 0x7fc0_0000 } else { y.to_bits() }.to_le_bytes());
        }
        let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "37b17a8a4c79f49cae348d2af42055bf26eaa14c956a74e708a35620d6c978c6");
    }

    /// Both vectorised functions equal their scalar forms on the spread, on arguments of every
    /// table slot and on lengths that leave a scalar tail; the sigmoid is burn's CPU formula.
    #[test]
    fn the_vectorised_forms_equal_the_scalar_ones() {
        let xs = spread();
        let sigmoid = |x: f32| if x >= 0.0 { 1.0 / (1.0 + exp(-x)) } else { exp(x) / (1.0 + exp(x)) };
        for len in [xs.len(), 1, 15, 17, 1000] {
            let (mut e, mut g) = (xs[..len].to_vec(), xs[..len].to_vec());
            exp_in_place(&mut e);
            sigmoid_in_place(&mut g);
            let bad = xs[..len].iter().zip(&e).filter(|&(&x, &y)| !same(exp(x), y)).count();
            assert_eq!(bad, 0, "exp: {bad} of {len} differ");
            let bad = xs[..len].iter().zip(&g).filter(|&(&x, &y)| !same(sigmoid(x), y)).count();
            assert_eq!(bad, 0, "sigmoid: {bad} of {len} differ");
        }
    }
}
