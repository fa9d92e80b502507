//! Micro-benchmark of the parallel forward's host attention alone (`host::masked_attention`): ms
//! per call for 8 sequences of 1024 tokens, 4 heads × 16, with every key visible (an exact cache,
//! as a rank environment's baseline forward) and with windows of 16 and 3 % of the keys kept long
//! (a cache at a few per cent of the memory). `cargo run --release --example masked_micro -- [REPS]`.
use ahr_tpa::host::{MaskedInputs, masked_attention};
use std::time::Instant;

fn main() {
    let reps: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(20);
    let [b_n, t_n, h_n, dh] = [8, 1024, 4, 16];
    let n = b_n * t_n * h_n * dh;
    let mut seed = 3u32;
    let mut v = |n: usize| -> Vec<f32> {
        (0..n)
            .map(|_| {
                seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5
            })
            .collect()
    };
    let (q, k, val) = (v(n), v(n), v(n));
    let stored = vec![1.0; b_n * t_n];
    let until: Vec<usize> = (0..b_n * t_n).map(|i| if i % 33 == 0 { t_n } else { i % t_n + 16 }).collect();
    for (name, until) in [("every key visible", None), ("windows of 16, 3 % kept", Some(&until[..]))] {
        let x = MaskedInputs {
            dims: [b_n, t_n, h_n, dh],
            q: q.clone(),
            k_exact: k.clone(),
            v_exact: val.clone(),
            k_stored: k.clone(),
            v_stored: val.clone(),
            stored: &stored,
            until,
            late: None,
            min_exponent: -30.0,
        };
        let mut times: Vec<f64> = (0..reps)
            .map(|_| {
                let t = Instant::now();
                std::hint::black_box(masked_attention(&x));
                t.elapsed().as_secs_f64()
            })
            .collect();
        times.sort_by(f64::total_cmp);
        println!("{name}: {:.2} ms", times[reps / 2] * 1e3);
    }
}
