//! A rule that reads token ids — the cheap tell a task may leave — run in the rank environment on
//! its held-out sequences: every layer before the last stores each token at HEAD (e.g. `recent:1`,
//! the previous token for the next one), the last layer stores a token at STORE when its id lies
//! in [FROM, TO) (and, given BEFORE, its position is below it) and drops it otherwise. On
//! Zoology-style MQAR, values come from the upper half of the vocabulary and the block sits at
//! the start, so `FROM = V/2` with `BEFORE = 2·D_max` keeps the block's values: the tells a policy
//! that reads its key norm and position can learn (docs/FINDINGS.md, fourteenth session).
//!
//! ```bash
//! cargo run --release -p ahr-eval --example token_rule -- \
//!   policies/models/mqar-mixed envs/mqar-mixed-128-windows.toml 128 recent:2 rank:1 4096 8192 32
//! ```

use std::path::PathBuf;

use ahr_eval::harness::Harness;
use ahr_tpa::{StoreOption, cost};
use anyhow::{Context, Result, bail};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (model, env, sequences, head, store, from, to, before) = match &args[..] {
        [m, e, n, h, s, f, t] => (m, e, n, h, s, f, t, None),
        [m, e, n, h, s, f, t, b] => (m, e, n, h, s, f, t, Some(b)),
        _ => bail!("usage: token_rule MODEL ENV SEQUENCES HEAD STORE FROM TO [BEFORE]"),
    };
    let (model_dir, env_path) = (PathBuf::from(model), PathBuf::from(env));
    let sequences: usize = sequences.parse().context("SEQUENCES")?;
    let option = |s: &str| s.parse::<StoreOption>().map_err(|e| anyhow::anyhow!("{s}: {e}"));
    let (head, store) = (option(head)?, option(store)?);
    let (from, to): (u32, u32) = (from.parse().context("FROM")?, to.parse().context("TO")?);
    let before = before.map_or(Ok(f32::INFINITY), |b| b.parse::<usize>().map(|b| b as f32)).context("BEFORE")?;

    let dev = ahr_tpa::device::from_env();
    let ahr_train::EnvRun { spec, model, task } = ahr_train::EnvRun::load(&model_dir, &env_path, &dev)?;
    let cfg = model.config().clone();
    let index =
        |o: StoreOption| cfg.option_index(o).map_err(|e| anyhow::anyhow!("{o}: {e} (add it to the env's menu)"));
    let (head, store, drop) = (index(head)?, index(store)?, index(StoreOption::Drop)?);
    let layers = cfg.n_layers;
    // Raw observations, one row per stream: the first global feature is the absolute position t.
    let position = 0;

    let h = Harness::new(&model, &task, &spec, sequences, &dev, false)?;
    let (point, _) = h.env_point("token-rule", "", &spec, 1, |obs| {
        let dim = obs.features.len() / obs.len.max(1);
        (0..obs.len)
            .flat_map(|r| {
                let kept = (from..to).contains(&obs.tokens[r]) && obs.features[r * dim + position] < before;
                (0..layers).map(move |l| {
                    if l + 1 < layers {
                        head
                    } else if kept {
                        store
                    } else {
                        drop
                    }
                })
            })
            .collect()
    })?;
    let mem = 100.0 * point.kv_bytes_per_token / cost::exact_bytes_per_token(&cfg) as f64;
    println!("| rule | metric | memory |\n|---|---:|---:|");
    let below = if before.is_finite() { format!(" before position {before}") } else { String::new() };
    println!(
        "| layers < {}: {}; last: ids in [{from}, {to}){below} at {}, others dropped | {:.4} | {mem:.1} % |",
        layers - 1,
        cfg.menu[head],
        cfg.menu[store],
        point.metric
    );
    Ok(())
}
