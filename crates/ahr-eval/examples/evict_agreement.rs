//! How far a learned evicter (`[env] evict`) has moved from the rule it starts at: its evictions,
//! run deterministically in its environment on the held-out sequences, against `tova-ema` at
//! [`ahr_policy::evict::SMOOTH_DECAY`] with its own cache on the same sequences. Prints, per layer,
//! the share of tokens whose eviction query differs and the share one keeps to the end while the
//! other evicts it.
//!
//! ```bash
//! cargo run --release -p ahr-eval --example evict_agreement -- \
//!   policies/models/text-python-wide envs/text-python-short-evict51.toml \
//!   policies/text-python-wide-evict51-seed1 64
//! ```

use std::path::PathBuf;

use ahr_eval::Baseline;
use ahr_eval::baseline::Scores;
use ahr_eval::rules::NEVER;
use anyhow::{Context, Result, bail};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model_dir, env, policy, sequences] = &args[..] else {
        bail!("usage: evict_agreement MODEL ENV POLICY SEQUENCES");
    };
    let sequences: usize = sequences.parse().context("SEQUENCES")?;
    let dev = ahr_tpa::device::from_env();
    let run = ahr_train::EnvRun::load(&PathBuf::from(model_dir), &PathBuf::from(env), &dev)?;
    let (eviction, _) = run.eviction().map_err(|e| anyhow::anyhow!("{env}: {e}"))?;
    let ahr_train::EnvRun { spec, model, task } = run;
    let cfg = model.config().clone();
    let fp = ahr_tpa::checkpoint::fingerprint(&PathBuf::from(model_dir))?;
    let (manifest, net) = ahr_policy::export::load_policy(&PathBuf::from(policy), &cfg, &fp, &dev)?;
    spec.check_policy(&manifest).map_err(anyhow::Error::msg)?;
    let streams = spec.env.streams;
    let episodes = sequences.div_ceil(streams);
    let mut env = ahr_env::make_env(&model, &task, &spec, true, 1, &dev);
    let stats = ahr_env::run_episodes(env.as_mut(), episodes * streams, 0, |obs| {
        net.act_deterministic(obs, &manifest.norm, &dev)
    })?;
    let rule = Baseline::Tova {
        budget: eviction.budget,
        store: eviction.store,
        scores: Scores::Cache,
        decay: ahr_policy::evict::SMOOTH_DECAY,
    };
    let l_n = cfg.n_layers;
    // Per layer: tokens compared, eviction query differs, evicted by exactly one of the two.
    let mut counts = vec![(0usize, 0usize, 0usize); l_n];
    for e in 0..episodes {
        let batch = task.valid_batch(e as u64, streams);
        let t_n = batch.seq_len;
        let judged = ahr_eval::own_cache::evictions(&model, &batch, &rule, &dev)?;
        for (b, ep) in stats[e * streams..(e + 1) * streams].iter().enumerate() {
            let mut learned = vec![NEVER; t_n * l_n];
            for &(l, k, at) in &ep.evictions {
                learned[k * l_n + l] = at as u32;
            }
            for k in 0..t_n {
                for (l, c) in counts.iter_mut().enumerate() {
                    let (a, r) = (learned[k * l_n + l], judged[(b * t_n + k) * l_n + l]);
                    c.0 += 1;
                    c.1 += usize::from(a != r);
                    c.2 += usize::from((a == NEVER) != (r == NEVER));
                }
            }
        }
    }
    println!("| layer | tokens | eviction query differs | kept to the end by one only |\n|---|---:|---:|---:|");
    for (l, (n, differs, one)) in counts.iter().enumerate() {
        let pct = |x: usize| 100.0 * x as f64 / (*n).max(1) as f64;
        println!("| {l} | {n} | {:.2} % | {:.2} % |", pct(*differs), pct(*one));
    }
    Ok(())
}
