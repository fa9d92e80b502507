//! Time per element of the C library's `expf` (one call per element, as burn's CPU backend makes
//! them) against `ahr_tpa::expf::exp_in_place`, and of burn's CPU sigmoid against
//! `sigmoid_in_place`, on 2²⁰ arguments in [−20, 6) (median of 21 passes). `cargo run --release -p
//! ahr-tpa --example expf_speed`.
use ahr_tpa::expf::{exp_in_place, sigmoid_in_place};
use std::time::Instant;

fn main() {
    let n = 1usize << 20;
    let xs: Vec<f32> =
        (0..n).map(|i| (i.wrapping_mul(2_654_435_761) % 1_000_003) as f32 / 1_000_003.0 * 26.0 - 20.0).collect();
    let time = |f: &dyn Fn(&mut [f32])| {
        let mut ns: Vec<f64> = (0..21)
            .map(|_| {
                let mut buf = xs.clone();
                let t = Instant::now();
                f(&mut buf);
                std::hint::black_box(&buf);
                t.elapsed().as_secs_f64() * 1e9 / n as f64
            })
            .collect();
        ns.sort_by(f64::total_cmp);
        ns[10]
    };
    let library_exp = |b: &mut [f32]| b.iter_mut().for_each(|x| *x = x.exp());
    let library_sigmoid = |b: &mut [f32]| {
        b.iter_mut().for_each(|x| *x = if *x >= 0.0 { 1.0 / (1.0 + (-*x).exp()) } else { x.exp() / (1.0 + x.exp()) })
    };
    let (le, ve) = (time(&library_exp), time(&exp_in_place));
    let (ls, vs) = (time(&library_sigmoid), time(&sigmoid_in_place));
    println!("exp:     library {le:.2} ns/element, vectorised {ve:.2} ({:.1}x)", le / ve);
    println!("sigmoid: library {ls:.2} ns/element, vectorised {vs:.2} ({:.1}x)", ls / vs);
}
