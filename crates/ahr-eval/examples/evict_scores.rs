//! Which score should a budgeted evicter use? Hand-written scores over the candidates a
//! learned-eviction environment (`[env] evict`) shows, run deterministically in that environment on
//! the held-out sequences: each layer over its budget evicts the candidate with the highest
//! eviction score. `now` is TOVA (the least weight from the current query); `prev`, `ema`, `max`,
//! `mean` are the same idea over the previous query, an exponential mean (decay 0.8), the
//! largest and the mean weight drawn; `total` is H2O's score without its recent window (the least
//! total weight); `now+prev`, `now+ema`: the sum of the two features (geometric means of the
//! weights), and so on; `smooth` the exponential mean of the log weights at the env's decay (the
//! judge's `tova-ema` at that decay, where the learned evicter starts). With `EVICT_CLASS_BIAS`
//! (comma-separated β) also `smooth` with a byte-class bias, the rule a practitioner adds once the
//! byte table has shown that classes matter: whitespace or punctuation kept longer (`smooth −
//! β·class`), letters and digits evicted sooner (`smooth + β·class`); β = 0.1 weighs a class like a
//! factor e in the smoothed weight. `sampled κ` (κ from
//! `EVICT_KAPPAS`, comma-separated; default 2, 4, 8) draws the eviction with probability ∝ w^−κ,
//! w the current query's weight (seed 0). Every rule holds the same bytes at every step.
//!
//! ```bash
//! cargo run --release -p ahr-eval --example evict_scores -- \
//!   policies/models/text-python-wide envs/text-python-short-evict51.toml 64
//! ```

use std::path::PathBuf;

use ahr_policy::evict::{CANDIDATE_FEATURES, PRIOR_SCALE, candidates, evict_by};
use anyhow::{Context, Result, bail};
use rand::SeedableRng;
use rand::rngs::StdRng;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model, env, sequences] = &args[..] else {
        bail!("usage: evict_scores MODEL ENV SEQUENCES");
    };
    let sequences: usize = sequences.parse().context("SEQUENCES")?;
    let dev = ahr_tpa::device::from_env();
    let run = ahr_train::EnvRun::load(&PathBuf::from(model), &PathBuf::from(env), &dev)?;
    let (eviction, _) = run.eviction().map_err(|e| anyhow::anyhow!("{env}: {e}"))?;
    let ahr_train::EnvRun { spec, model, task } = run;
    let (heads, slots) = (model.config().n_layers, eviction.slots());
    let col = |name: &str| CANDIDATE_FEATURES.iter().position(|&c| c == name).expect("a candidate feature");
    let (smooth, now, prev, ema) = (col("smooth"), col("now"), col("prev"), col("ema"));
    let (max, mean, total) = (col("max"), col("mean"), col("total"));
    type Score = Box<dyn Fn(&[f32]) -> f32>;
    let rules: Vec<(&str, Score)> = vec![
        ("now (TOVA)", Box::new(move |x: &[f32]| x[now])),
        ("prev", Box::new(move |x: &[f32]| x[prev])),
        ("ema", Box::new(move |x: &[f32]| x[ema])),
        ("max", Box::new(move |x: &[f32]| x[max])),
        ("mean", Box::new(move |x: &[f32]| x[mean])),
        ("total (H2O, no window)", Box::new(move |x: &[f32]| -x[total])),
        ("now+prev", Box::new(move |x: &[f32]| x[now] + x[prev])),
        ("now+ema", Box::new(move |x: &[f32]| x[now] + x[ema])),
        ("now+prev+ema", Box::new(move |x: &[f32]| x[now] + x[prev] + x[ema])),
        ("2 now+ema", Box::new(move |x: &[f32]| 2.0 * x[now] + x[ema])),
        ("now+2 ema", Box::new(move |x: &[f32]| x[now] + 2.0 * x[ema])),
        ("prev+ema", Box::new(move |x: &[f32]| x[prev] + x[ema])),
    ];
    let mut rules: Vec<(String, Score)> = rules.into_iter().map(|(n, s)| (n.to_string(), s)).collect();
    rules.push((format!("smooth (tova-ema, decay {})", eviction.decay), Box::new(move |x: &[f32]| x[smooth])));
    let biases: Vec<f32> = match std::env::var("EVICT_CLASS_BIAS") {
        Ok(v) => v.split(',').filter(|s| !s.is_empty()).map(|s| s.parse()).collect::<Result<_, _>>()?,
        Err(_) => Vec::new(),
    };
    for beta in biases {
        for (class, sign) in [("space", -1.0f32), ("punct", -1.0), ("alnum", 1.0)] {
            let c = col(class);
            let name = format!("smooth {} {beta}·{class}", if sign < 0.0 { "−" } else { "+" });
            rules.push((name, Box::new(move |x: &[f32]| x[smooth] + sign * beta * x[c])));
        }
    }
    println!(
        "| eviction score ({sequences} held-out sequences, budget {}) | bits/byte | memory (of exact) |",
        eviction.budget
    );
    println!("|---|---:|---:|");
    for (name, score) in &rules {
        let e = ahr_env::evaluate_rule(&model, &task, &spec, 1, Some(sequences), &dev, |obs| {
            evict_by(obs, heads, slots, &|_, x| score(x))
        })?;
        println!("| {name} | {:.4} | {:.4} |", e.task_loss / std::f64::consts::LN_2, e.mem_frac);
    }
    let kappas: Vec<f32> = match std::env::var("EVICT_KAPPAS") {
        Ok(v) => v.split(',').filter(|s| !s.is_empty()).map(|s| s.parse()).collect::<Result<_, _>>()?,
        Err(_) => vec![2.0, 4.0, 8.0],
    };
    for kappa in kappas {
        let mut rng = StdRng::seed_from_u64(0);
        let e = ahr_env::evaluate_rule(&model, &task, &spec, 1, Some(sequences), &dev, |obs| {
            let mut probs = Vec::with_capacity(obs.len * heads * slots);
            for (mask, features) in candidates(obs, heads, slots) {
                let logit = |j: usize| kappa * PRIOR_SCALE * features[j][now];
                let top = (0..slots).filter(|&j| mask[j]).map(logit).fold(f32::MIN, f32::max);
                probs.extend((0..slots).map(|j| if mask[j] { (logit(j) - top).exp() } else { 0.0 }));
            }
            ahr_policy::dist::sample_host(&probs, slots, &mut rng)
        })?;
        println!("| sampled κ = {kappa} | {:.4} | {:.4} |", e.task_loss / std::f64::consts::LN_2, e.mem_frac);
    }
    Ok(())
}
