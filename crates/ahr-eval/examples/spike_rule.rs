//! What spike reviews can express, before any training: a hand-written rule in the rank
//! environment with `review = "spike"`. Layers before the last write every token as HEAD; the
//! last writes every token as LAST; a spike review in the last layer drops its token when the
//! token that followed the query it topped surprised the model (`surprisal` above θ: the query
//! leaned on the token and the context went elsewhere — a re-assignment after a returning key,
//! random filler after a recurring neighbour), and keeps it otherwise. This is what the judge's
//! `superseded` family does from token equality, read instead from the model's attention and
//! its own surprise, which a server can compute for any task; a policy trained with spike
//! reviews can learn it (or better). One row per (θ, least spike weight), with the environment's
//! accounting (pooled accuracy, time-averaged memory relative to the exact cache). The judge's
//! `spike` family is the same rule run with its own cache (a test ties the two together).
//!
//! ```bash
//! cargo run --release -p ahr-eval --example spike_rule -- \
//!   policies/models/mqar-tiny-updates-1024-ft3 envs/mqar-tiny-updates-512-spike.toml 64 recent:4 rank:1 0.3,0.5,inf 0,0.5
//! ```

use std::path::PathBuf;

use ahr_env::evaluate_rule;
use ahr_eval::own_cache::spike_actions;
use ahr_tpa::{ReviewAt, StoreOption};
use anyhow::{Context, Result, bail};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model, env, sequences, head, last, thetas, weights] = &args[..] else {
        bail!(
            "usage: spike_rule MODEL ENV SEQUENCES HEAD_STORE LAST_STORE THETAS WEIGHTS \
             (comma-separated; `inf` = never drop)"
        );
    };
    let (model_dir, env_path) = (PathBuf::from(model), PathBuf::from(env));
    let sequences: usize = sequences.parse().context("SEQUENCES")?;
    let list = |what: &str, s: &str| -> Result<Vec<f32>> {
        s.split(',').map(|x| x.trim().parse::<f32>().with_context(|| format!("{what}: {x}"))).collect()
    };
    let (thetas, weights) = (list("THETAS", thetas)?, list("WEIGHTS", weights)?);
    let option = |s: &str| s.parse::<StoreOption>().map_err(|e| anyhow::anyhow!("{s}: {e}"));
    let (head, last) = (option(head)?, option(last)?);

    let dev = ahr_tpa::device::from_env();
    let ahr_train::EnvRun { spec, model, task } = ahr_train::EnvRun::load(&model_dir, &env_path, &dev)?;
    if spec.env.review != Some(ReviewAt::SPIKE) {
        bail!("{}: the rule needs review = \"spike\"", env_path.display());
    }
    let cfg = model.config().clone();
    let index = |o: StoreOption| cfg.option_index(o).map_err(|e| anyhow::anyhow!("{o}: {e}"));
    let l_n = cfg.n_layers;
    let mut writes = vec![index(head)?; l_n];
    writes[l_n - 1] = index(last)?;
    let drop = index(StoreOption::Drop)?;
    let names = ahr_env::make_env(&model, &task, &spec, true, 1, &dev).obs_spec().features;

    println!(
        "| θ (surprisal, / ln V) | spike weight ≥ | accuracy | memory (% of exact) | sequences | dropped |\n\
         |---|---:|---:|---:|---:|---:|"
    );
    for (theta, weight) in thetas.iter().flat_map(|&t| weights.iter().map(move |&w| (t, w))) {
        let eval = evaluate_rule(&model, &task, &spec, 1, Some(sequences), &dev, |obs| {
            spike_actions(obs, &names, &writes, drop, weight, theta).expect("spike observations")
        })?;
        let dropped: u64 = eval.option_counts[l_n - 1][drop];
        let kept: u64 = eval.option_counts[l_n - 1].iter().sum();
        println!(
            "| {theta} | {weight} | {:.4} | {:.1} | {} | {:.1} % of last-layer tokens |",
            eval.accuracy,
            100.0 * eval.mem_frac,
            eval.sequences,
            100.0 * dropped as f64 / kept.max(1) as f64
        );
    }
    Ok(())
}
