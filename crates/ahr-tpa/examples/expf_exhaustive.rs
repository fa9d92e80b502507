//! Compares `ahr_tpa::expf` — `exp` (scalar), `exp_in_place` and `sigmoid_in_place` (vectorised) —
//! with the C library (`f32::exp`, and burn's CPU sigmoid written with it) on every one of the 2³²
//! inputs, bit for bit (NaNs: both NaN). `cargo run --release -p ahr-tpa --example
//! expf_exhaustive`; prints the mismatches (at most 20) and the counts.
use ahr_tpa::expf::{exp, exp_in_place, sigmoid_in_place};

fn main() {
    let chunk = 1usize << 20;
    let (mut bad, mut shown) = ([0u64; 3], 0);
    let mut buf = vec![0f32; chunk];
    let same = |a: f32, b: f32| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan());
    let sigmoid = |x: f32| if x >= 0.0 { 1.0 / (1.0 + (-x).exp()) } else { x.exp() / (1.0 + x.exp()) };
    for start in (0..1u64 << 32).step_by(chunk) {
        for (i, v) in buf.iter_mut().enumerate() {
            *v = f32::from_bits((start + i as u64) as u32);
        }
        let (mut lanes, mut sig) = (buf.clone(), buf.clone());
        exp_in_place(&mut lanes);
        sigmoid_in_place(&mut sig);
        for (i, ((&x, &y), &g)) in buf.iter().zip(&lanes).zip(&sig).enumerate() {
            let (want, s) = (x.exp(), exp(x));
            let ok = [same(s, want), same(y, want), same(g, sigmoid(x))];
            for (b, ok) in bad.iter_mut().zip(ok) {
                *b += u64::from(!ok);
            }
            if ok.contains(&false) && shown < 20 {
                shown += 1;
                println!(
                    "x {:#010x} ({x:e}): libm {:#010x}, scalar {:#010x}, lanes {:#010x}; sigmoid {:#010x}, lanes {:#010x}",
                    start + i as u64,
                    want.to_bits(),
                    s.to_bits(),
                    y.to_bits(),
                    sigmoid(x).to_bits(),
                    g.to_bits()
                );
            }
        }
    }
    println!(
        "inputs 4294967296, exp scalar mismatches {}, exp vectorised mismatches {}, sigmoid vectorised mismatches {}",
        bad[0], bad[1], bad[2]
    );
}
