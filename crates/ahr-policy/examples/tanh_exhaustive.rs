//! Compares `ahr_policy::tanh` (scalar and vectorised) with the C library's `tanhf` (`f32::tanh`)
//! on every one of the 2³² inputs, bit for bit (NaNs: both NaN). `cargo run --release -p
//! ahr-policy --example tanh_exhaustive`; prints the mismatches (at most 20) and the counts.
use ahr_policy::tanh::{tanh, tanh_in_place};

fn main() {
    let chunk = 1usize << 20;
    let (mut scalar_bad, mut lane_bad, mut shown) = (0u64, 0u64, 0);
    let mut buf = vec![0f32; chunk];
    let same = |a: f32, b: f32| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan());
    for start in (0..1u64 << 32).step_by(chunk) {
        for (i, v) in buf.iter_mut().enumerate() {
            *v = f32::from_bits((start + i as u64) as u32);
        }
        let mut lanes = buf.clone();
        tanh_in_place(&mut lanes);
        for (i, (&x, &y)) in buf.iter().zip(&lanes).enumerate() {
            let want = x.tanh();
            let s = tanh(x);
            if !same(s, want) {
                scalar_bad += 1;
            }
            if !same(y, want) {
                lane_bad += 1;
            }
            if (!same(s, want) || !same(y, want)) && shown < 20 {
                shown += 1;
                println!(
                    "x {:#010x} ({x:e}): libm {:#010x}, scalar {:#010x}, lanes {:#010x}",
                    start + i as u64,
                    want.to_bits(),
                    s.to_bits(),
                    y.to_bits()
                );
            }
        }
    }
    println!("inputs 4294967296, scalar mismatches {scalar_bad}, vectorised mismatches {lane_bad}");
}
