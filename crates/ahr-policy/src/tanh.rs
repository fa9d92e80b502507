//! `tanh` for the policy network, vectorised and bit for bit the function every committed policy
//! was trained with.
//!
//! burn's CPU backend evaluates `tanh` one element at a time through the C library (`tanhf`,
//! which calls `expm1f`), and its autodiff evaluates it again in the backward pass. On glibc 2.36
//! (Debian 12, this project's machines) those two scalar calls were 63 % of a PPO update's time and
//! ~12 % of a rollout worker's (`perf`, 2026-12-05). This module computes the same function — the
//! fdlibm algorithm glibc 2.36 ships for `tanhf` and `expm1f`: the same float operations in the
//! same order, every branch taken as a per-lane select — over whole slices, so the compiler
//! vectorises it (AVX-512 / AVX2 through [`pulp`]). The result equals glibc's `tanhf` for every
//! one of the 2³² inputs (checked exhaustively: `cargo run --release -p ahr-policy --example
//! tanh_exhaustive`; the tests hold it to bit patterns recorded from glibc), so policies train
//! and act exactly as before — and no longer depend on the C library's version.

/// `ln 2` split so that `k·LN2_HI` is exact for the `k` used here.
const LN2_HI: f32 = f32::from_bits(0x3f31_7180);
const LN2_LO: f32 = f32::from_bits(0x3717_f7d1);
const INV_LN2: f32 = f32::from_bits(0x3fb8_aa3b);
/// Coefficients of the rational approximation of `expm1` on `[−ln2/2, ln2/2]`.
const Q1: f32 = f32::from_bits(0xbd08_8889);
const Q2: f32 = f32::from_bits(0x3ad0_0d01);
const Q3: f32 = f32::from_bits(0xb8a6_70cd);
const Q4: f32 = f32::from_bits(0x3686_7e54);
const Q5: f32 = f32::from_bits(0xb457_edbb);

/// `tanh(x)`, one element (the branching form of the algorithm; [`tanh_in_place`] computes the
/// same value without branches).
pub fn tanh(x: f32) -> f32 {
    let jx = x.to_bits();
    let ix = jx & 0x7fff_ffff;
    let z = if ix >= 0x7f80_0000 {
        // ±inf → ±1; NaN stays NaN.
        return if jx >> 31 == 0 { 1.0 / x + 1.0 } else { 1.0 / x - 1.0 };
    } else if ix == 0 {
        return x;
    } else if ix < 0x2400_0000 {
        // |x| < 2⁻⁵⁵.
        return x * (1.0 + x);
    } else if ix >= 0x41b0_0000 {
        // |x| ≥ 22: ±1 (1 − 10⁻³⁰ rounds to 1).
        1.0 - 1.0e-30
    } else if ix >= 0x3f80_0000 {
        let t = expm1(2.0 * x.abs());
        1.0 - 2.0 / (t + 2.0)
    } else {
        let t = expm1(-2.0 * x.abs());
        -t / (t + 2.0)
    };
    if jx >> 31 == 0 { z } else { -z }
}

/// `exp(x) − 1` for the arguments [`tanh`] passes: `x ∈ [2, 44)` or `x ∈ (−2, −2⁻⁵⁴]`.
fn expm1(x: f32) -> f32 {
    let hx = x.to_bits() & 0x7fff_ffff;
    let positive = x.to_bits() >> 31 == 0;
    let (x, c, k) = if hx > 0x3eb1_7218 {
        // |x| > ln2/2: x = k·ln2 + r.
        let (hi, lo, k) = if hx < 0x3f85_1592 {
            // |x| < 3·ln2/2.
            if positive { (x - LN2_HI, LN2_LO, 1) } else { (x + LN2_HI, -LN2_LO, -1) }
        } else {
            let k = (INV_LN2 * x + if positive { 0.5 } else { -0.5 }) as i32;
            let t = k as f32;
            (x - t * LN2_HI, t * LN2_LO, k)
        };
        let r = hi - lo;
        (r, (hi - r) - lo, k)
    } else if hx < 0x3300_0000 {
        // |x| < 2⁻²⁵.
        return x;
    } else {
        (x, 0.0, 0)
    };
    let hfx = 0.5 * x;
    let hxs = x * hfx;
    let r1 = 1.0 + hxs * (Q1 + hxs * (Q2 + hxs * (Q3 + hxs * (Q4 + hxs * Q5))));
    let t = 3.0 - r1 * hfx;
    let e = hxs * ((r1 - t) / (6.0 - x * t));
    if k == 0 {
        return x - (x * e - hxs);
    }
    let e = (x * (e - c) - c) - hxs;
    match k {
        -1 => 0.5 * (x - e) - 0.5,
        1 if x < -0.25 => -2.0 * (e - (x + 0.5)),
        1 => 1.0 + 2.0 * (x - e),
        _ if k <= -2 || k > 56 => scale(1.0 - (e - x), k) - 1.0,
        _ if k < 23 => scale(f32::from_bits(0x3f80_0000 - (0x0100_0000 >> k)) - (e - x), k),
        _ => scale((x - (e + f32::from_bits(((0x7f - k) as u32) << 23))) + 1.0, k),
    }
}

/// `y·2^k` by adding `k` to the exponent field (no rounding; the callers' `y` keep it normal).
fn scale(y: f32, k: i32) -> f32 {
    f32::from_bits(y.to_bits().wrapping_add((k as u32) << 23))
}

/// [`tanh`] of every element of `xs`, in place, vectorised.
pub fn tanh_in_place(xs: &mut [f32]) {
    pulp::Arch::new().dispatch(InPlace(xs));
}

struct InPlace<'a>(&'a mut [f32]);

impl pulp::WithSimd for InPlace<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        for x in self.0.iter_mut() {
            *x = tanh_lane(*x);
        }
    }
}

/// [`tanh`] with every branch computed and selected, so that a loop over it vectorises (the
/// selects become blends). Each path's operations are [`tanh`]'s, in its order.
#[inline(always)]
fn tanh_lane(x: f32) -> f32 {
    let jx = x.to_bits();
    let ix = jx & 0x7fff_ffff;
    let a = f32::from_bits(ix);
    let big = ix >= 0x3f80_0000;
    // The argument of expm1 and its reduction.
    let u = if big { 2.0 * a } else { -2.0 * a };
    let hu = u.to_bits() & 0x7fff_ffff;
    let near = hu < 0x3f85_1592; // |u| < 3·ln2/2 (then k = ±1)
    // `(int)` of the scaled argument: truncated as a float, then read as an integer by adding
    // 1.5·2²³ (exact for the |k| ≤ 64 this domain has; `as i32` would not vectorise).
    let tk = (INV_LN2 * u + if big { 0.5 } else { -0.5 }).trunc();
    let kf = ((tk + 12_582_912.0).to_bits() as i32).wrapping_sub(0x4b40_0000);
    let hi = if near { if big { u - LN2_HI } else { u + LN2_HI } } else { u - tk * LN2_HI };
    let lo = if near { if big { LN2_LO } else { -LN2_LO } } else { tk * LN2_LO };
    let reduced = hu > 0x3eb1_7218;
    let k = if !reduced {
        0
    } else if near {
        if big { 1 } else { -1 }
    } else {
        kf
    };
    let r = hi - lo;
    let c = if reduced { (hi - r) - lo } else { 0.0 };
    let x1 = if reduced { r } else { u };
    let hfx = 0.5 * x1;
    let hxs = x1 * hfx;
    let r1 = 1.0 + hxs * (Q1 + hxs * (Q2 + hxs * (Q3 + hxs * (Q4 + hxs * Q5))));
    let t = 3.0 - r1 * hfx;
    let e0 = hxs * ((r1 - t) / (6.0 - x1 * t));
    let e = (x1 * (e0 - c) - c) - hxs;
    // Shift counts kept in range on the lanes whose path does not use them.
    let (small, large) = (k.clamp(1, 22) as u32, k.clamp(23, 56) as u32);
    let shift = (k as u32) << 23;
    let scaled = |y: f32| f32::from_bits(y.to_bits().wrapping_add(shift));
    let m = if k == 0 {
        x1 - (x1 * e0 - hxs)
    } else if k == -1 {
        0.5 * (x1 - e) - 0.5
    } else if k == 1 {
        if x1 < -0.25 { -2.0 * (e - (x1 + 0.5)) } else { 1.0 + 2.0 * (x1 - e) }
    } else if k <= -2 || k > 56 {
        scaled(1.0 - (e - x1)) - 1.0
    } else if k < 23 {
        scaled(f32::from_bits(0x3f80_0000 - (0x0100_0000u32 >> small)) - (e - x1))
    } else {
        scaled((x1 - (e + f32::from_bits((0x7f - large) << 23))) + 1.0)
    };
    let t = if hu < 0x3300_0000 { u } else { m };
    // One division for both forms (`1 − 2/(t + 2)`, `−t/(t + 2)`): each lane divides its own.
    let q = (if big { 2.0 } else { -t }) / (t + 2.0);
    let z = if big { 1.0 - q } else { q };
    // |x| ≥ 22, infinities included: ±1.
    let z = if ix >= 0x41b0_0000 { 1.0 - 1.0e-30 } else { z };
    let z = if jx >> 31 == 0 { z } else { -z };
    if ix > 0x7f80_0000 {
        x + x
    } else if ix == 0 {
        x
    } else if ix < 0x2400_0000 {
        x * (1.0 + x)
    } else {
        z
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(input, glibc 2.36's tanhf(input))` as bit patterns, recorded on this project's machine
    /// (Debian 12): every branch of the algorithm, subnormals, the ±1 saturation and infinities.
    const GLIBC: [(u32, u32); 40] = [
        (0x00000000, 0x00000000), // tanh(0e0)
        (0x80000000, 0x80000000), // tanh(-0e0)
        (0x000116c2, 0x000116c2), // tanh(1e-40)
        (0x8020aac8, 0x8020aac8), // tanh(-3e-39)
        (0x1e3ce508, 0x1e3ce508), // tanh(1e-20)
        (0x32abcc77, 0x32abcc77), // tanh(2e-8)
        (0xb22bcc77, 0xb22bcc77), // tanh(-1e-8)
        (0x38d1b717, 0x38d1b718), // tanh(1e-4)
        (0x3dcccccd, 0x3dcc1ebc), // tanh(1e-1)
        (0xbe317050, 0xbe2faf12), // tanh(-1.7328e-1)
        (0x3e99999a, 0x3e9526ed), // tanh(3e-1)
        (0x3eb1719f, 0x3eaaaa3f), // tanh(3.4657e-1)
        (0x3f000000, 0x3eec9a9f), // tanh(5e-1)
        (0xbf05158c, 0xbef486ef), // tanh(-5.1986e-1)
        (0x3f400000, 0x3f22991f), // tanh(7.5e-1)
        (0x3f666666, 0x3f375f4c), // tanh(9e-1)
        (0x3f7fffff, 0x3f42f7d5), // tanh(9.9999994e-1)
        (0x3f800000, 0x3f42f7d6), // tanh(1e0)
        (0xbf800000, 0xbf42f7d6), // tanh(-1e0)
        (0x3fa00000, 0x3f59291e), // tanh(1.25e0)
        (0x3fc00000, 0x3f67b7cc), // tanh(1.5e0)
        (0x40000000, 0x3f76ca83), // tanh(2e0)
        (0xc0400000, 0xbf7ebbe9), // tanh(-3e0)
        (0x40900000, 0x3f7fefd4), // tanh(4.5e0)
        (0x40f66666, 0x3f7ffff9), // tanh(7.7e0)
        (0x41100000, 0x3f7fffff), // tanh(9e0)
        (0xc1380000, 0xbf800000), // tanh(-1.15e1)
        (0x41700000, 0x3f800000), // tanh(1.5e1)
        (0x418a6666, 0x3f800000), // tanh(1.73e1)
        (0x41980000, 0x3f800000), // tanh(1.9e1)
        (0x419d999a, 0x3f800000), // tanh(1.97e1)
        (0x41a00000, 0x3f800000), // tanh(2e1)
        (0xc1af3333, 0xbf800000), // tanh(-2.19e1)
        (0x41afffff, 0x3f800000), // tanh(2.1999998e1)
        (0x41b00000, 0x3f800000), // tanh(2.2e1)
        (0x41f00000, 0x3f800000), // tanh(3e1)
        (0xd01502f9, 0xbf800000), // tanh(-1e10)
        (0x7f7fffff, 0x3f800000), // tanh(3.4028235e38)
        (0x7f800000, 0x3f800000), // tanh(inf)
        (0xff800000, 0xbf800000), // tanh(-inf)
    ];

    #[test]
    fn both_forms_give_glibcs_bits_on_the_fixture() {
        let xs: Vec<f32> = GLIBC.iter().map(|&(x, _)| f32::from_bits(x)).collect();
        let mut lanes = xs.clone();
        tanh_in_place(&mut lanes);
        for ((&(x, want), &x_f), &lane) in GLIBC.iter().zip(&xs).zip(&lanes) {
            assert_eq!(tanh(x_f).to_bits(), want, "scalar tanh({x:#010x})");
            assert_eq!(lane.to_bits(), want, "vectorised tanh({x:#010x})");
        }
        let mut nan = [f32::NAN, -f32::NAN];
        tanh_in_place(&mut nan);
        assert!(nan.iter().all(|x| x.is_nan()) && tanh(f32::NAN).is_nan());
    }

    /// A spread of 2¹⁸ bit patterns over every sign and exponent.
    fn spread() -> Vec<f32> {
        (0..1u32 << 18).map(|i| f32::from_bits(i.wrapping_mul(16_411))).collect()
    }

    /// On the spread, the scalar form's outputs hash to what glibc 2.36's `tanhf` gave there
    /// (SHA-256 of the output bits, NaNs as `0x7fc00000`; recorded on Debian 12), so a change of a
    /// single bit anywhere fails.
    #[test]
    fn the_scalar_form_gives_glibcs_bits_on_the_spread() {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for y in spread().into_iter().map(tanh) {
            h.update(if y.is_nan() { 0x7fc0_0000 } else { y.to_bits() }.to_le_bytes());
        }
        let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "fb44b7e27ecfc138a27bb34c62ea6bb61cec1a757046e15add9c7a3f104c9d50");
    }

    /// The vectorised form equals the scalar one on the spread and on lengths that leave a scalar
    /// tail.
    #[test]
    fn the_vectorised_form_equals_the_scalar_one() {
        let xs = spread();
        for len in [xs.len(), 1, 15, 17, 1000] {
            let mut lanes = xs[..len].to_vec();
            tanh_in_place(&mut lanes);
            let bad = xs[..len]
                .iter()
                .zip(&lanes)
                .filter(|&(&x, &y)| tanh(x).to_bits() != y.to_bits() && !(x.is_nan() && y.is_nan()))
                .count();
            assert_eq!(bad, 0, "{bad} of {len} differ");
        }
    }
}
