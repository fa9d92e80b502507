//! ns per element of `ahr_policy::tanh::tanh_in_place` against the C library's `tanhf`
//! (`f32::tanh`, what burn's CPU backend calls) on a `[2048, 64]` buffer of pre-activations in
//! [−4.25, 4.25) (a PPO minibatch of the policy's hidden layer), checking the bits agree.
//! `cargo run --release -p ahr-policy --example tanh_speed`
use std::time::Instant;

fn main() {
    let n = 2048 * 64;
    let xs: Vec<f32> = (0..n).map(|i| ((i * 7919) % 10007) as f32 / 1177.3 - 4.25).collect();
    for round in 1..=5 {
        let t = Instant::now();
        let mut libm = Vec::new();
        for _ in 0..20 {
            libm = xs.iter().map(|x| x.tanh()).collect();
        }
        let libm_ns = t.elapsed().as_secs_f64() / 20.0 / n as f64 * 1e9;
        let t = Instant::now();
        let mut ours = xs.clone();
        for _ in 0..20 {
            ours.copy_from_slice(&xs);
            ahr_policy::tanh::tanh_in_place(&mut ours);
        }
        let ours_ns = t.elapsed().as_secs_f64() / 20.0 / n as f64 * 1e9;
        assert!(libm.iter().zip(&ours).all(|(a, b)| a.to_bits() == b.to_bits()), "bits differ");
        println!(
            "round {round}: tanhf {libm_ns:.2} ns/element, tanh_in_place {ours_ns:.2} ns/element, {:.1}x",
            libm_ns / ours_ns
        );
    }
}
