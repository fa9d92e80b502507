// Probe: which operation order reproduces glibc 2.36's expf (the __expf_fma ifunc) bit for bit
// on every float with |x| < 88 and x not NaN.
const T: [u64; 32] = [0x3ff0000000000000, 0x3fefd9b0d3158574, 0x3fefb5586cf9890f, 0x3fef9301d0125b51, 0x3fef72b83c7d517b, 0x3fef54873168b9aa, 0x3fef387a6e756238, 0x3fef1e9df51fdee1, 0x3fef06fe0a31b715, 0x3feef1a7373aa9cb, 0x3feedea64c123422, 0x3feece086061892d, 0x3feebfdad5362a27, 0x3feeb42b569d4f82, 0x3feeab07dd485429, 0x3feea47eb03a5585, 0x3feea09e667f3bcd, 0x3fee9f75e8ec5f74, 0x3feea11473eb0187, 0x3feea589994cce13, 0x3feeace5422aa0db, 0x3feeb737b0cdc5e5, 0x3feec49182a3f090, 0x3feed503b23e255d, 0x3feee89f995ad3ad, 0x3feeff76f2fb5e47, 0x3fef199bdd85529c, 0x3fef3720dcef9069, 0x3fef5818dcfba487, 0x3fef7c97337b9b5f, 0x3fefa4afa2a490da, 0x3fefd0765b6e4540];
fn hx(s: &str) -> f64 { // parse 0x1.xxxp±e
    let s = s.trim_start_matches("0x1.");
    let (m, e) = s.split_once('p').unwrap();
    let mant = u64::from_str_radix(m, 16).unwrap() as f64 / 16f64.powi(m.len() as i32);
    (1.0 + mant) * 2f64.powi(e.parse().unwrap())
}
fn expf(x: f32, variant: u32) -> f32 {
    let n = 32.0;
    let inv = hx("0x1.71547652b82fep+0") * n;
    let c0 = hx("0x1.c6af84b912394p-5") / n / n / n;
    let c1 = hx("0x1.ebfce50fac4f3p-3") / n / n;
    let c2 = hx("0x1.62e42ff0c52d6p-1") / n;
    let shift = hx("0x1.8p+52");
    let xd = x as f64;
    let (kd, ki, r);
    if variant & 2 == 0 {
        let z = inv * xd;
        let k = z + shift;
        ki = k.to_bits();
        kd = k - shift;
        r = z - kd;
    } else {
        let k = inv.mul_add(xd, shift);
        ki = k.to_bits();
        kd = k - shift;
        r = inv.mul_add(xd, -kd);
    }
    let mut t = T[(ki % 32) as usize];
    t = t.wrapping_add(ki << 47);
    let s = f64::from_bits(t);
    let y = if variant & 1 == 0 {
        let z = c0 * r + c1;
        let r2 = r * r;
        let y = c2 * r + 1.0;
        (z * r2 + y) * s
    } else {
        let z = c0.mul_add(r, c1);
        let r2 = r * r;
        let y = c2.mul_add(r, 1.0);
        z.mul_add(r2, y) * s
    };
    y as f32
}
fn main() {
    let variant: u32 = std::env::args().nth(1).unwrap().parse().unwrap();
    let (mut bad, mut n) = (0u64, 0u64);
    for b in 0..=u32::MAX {
        let x = f32::from_bits(b);
        if x.is_nan() || x.abs() >= 88.0 { continue; }
        n += 1;
        if expf(x, variant).to_bits() != x.exp().to_bits() {
            bad += 1;
            if bad <= 3 { println!("x {b:#010x} ({x:e}): ours {:e} libm {:e}", expf(x, variant), x.exp()); }
        }
    }
    println!("variant {variant}: {bad} of {n} differ");
}
