//! How much could a budgeted evicter gain by knowing the future? On the held-out sequences of a
//! learned-eviction env (`[env] evict`), rules evict from the full-cache attention maps (one
//! parallel forward per batch, weights averaged over heads, as `tova-full-cache` reads them) at
//! the env's budget, and the sequences are scored through parallel forwards under those
//! evictions: TOVA and `tova-ema` (decay 0.9), which see the queries so far, and an oracle that
//! evicts the held key the next `H` queries will attend to least (their summed weight; `H = all`:
//! every later query). Every row holds the same bytes at every step. The gap between the oracle
//! and `tova-ema` bounds what a better score from causal features can win at this budget (the
//! full-cache maps are a proxy: once keys leave, the weights the rest draw change).
//!
//! ```bash
//! cargo run --release -p ahr-eval --example evict_oracle -- \
//!   policies/models/text-python-wide envs/text-python-short-evict51.toml 64 1,4,16,64,all
//! ```

use std::path::PathBuf;

use ahr_eval::harness::Harness;
use ahr_eval::rules::{Held, NEVER, tova_ema_evictions};
use ahr_eval::{Family, PointKind};
use ahr_tasks::Batch;
use ahr_tpa::{Choices, cost};
use anyhow::{Context, Result, anyhow, bail};

/// Per sequence and layer of `batch`: the full-cache attention `[T, T]`, mean over heads; with
/// `value_aware`, each head's weight times the norm of that head's value (VATP's score, Guo et
/// al. 2024), mean over heads.
fn attention_maps(
    model: &ahr_tpa::Model,
    batch: &Batch,
    dev: &burn::tensor::Device,
    value_aware: bool,
) -> Result<Vec<Vec<Vec<f32>>>> {
    let cfg = model.config();
    let (b_n, t_n) = (batch.batch_size, batch.seq_len);
    let tokens = model.tokens(&batch.inputs, b_n, t_n, dev)?;
    let (_, maps) = model.forward_with_attention_maps(tokens, &Choices::exact(cfg, b_n, t_n))?;
    let mut out = vec![Vec::new(); b_n];
    for map in maps {
        let probs = if value_aware {
            let [b, h, t] = map.value_norms.dims();
            map.probs * map.value_norms.reshape([b, h, 1, t])
        } else {
            map.probs
        };
        let mean = probs.mean_dim(1).reshape([b_n * t_n * t_n]);
        let mean = mean.into_data().try_to_vec::<f32>().map_err(|e| anyhow!("attention maps: {e:?}"))?;
        for (s, m) in mean.chunks(t_n * t_n).enumerate() {
            out[s].push(m.to_vec());
        }
    }
    Ok(out)
}

/// One layer of one sequence evicted by a budgeted rule that scores held key k at query q by the
/// weight the next `horizon` queries give it (`attn` `[T, T]`).
fn oracle_evictions(attn: &[f32], t_n: usize, budget: usize, horizon: usize) -> Vec<u32> {
    // Per key, the prefix sums of its column: future(q, k) = col[min(q + H, T − 1)] − col[q].
    let mut prefix = vec![0f64; t_n * t_n];
    for k in 0..t_n {
        let mut sum = 0.0;
        for q in 0..t_n {
            sum += attn[q * t_n + k] as f64;
            prefix[k * t_n + q] = sum;
        }
    }
    let mut rule = Held::current(budget);
    let mut evicted = vec![NEVER; t_n];
    for q in 0..t_n {
        let end = (q + horizon).min(t_n - 1);
        for k in rule.step(q, |k| (prefix[k * t_n + end] - prefix[k * t_n + q]) as f32) {
            evicted[k] = (q + 1) as u32;
        }
    }
    evicted
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model, env, sequences, horizons] = &args[..] else {
        bail!("usage: evict_oracle MODEL ENV SEQUENCES HORIZONS (comma-separated, `all` = every later query)");
    };
    let sequences: usize = sequences.parse().context("SEQUENCES")?;
    let horizons: Vec<usize> = horizons
        .split(',')
        .map(|h| if h == "all" { Ok(usize::MAX / 2) } else { h.parse().context("HORIZONS") })
        .collect::<Result<_>>()?;
    let dev = ahr_tpa::device::from_env();
    let run = ahr_train::EnvRun::load(&PathBuf::from(model), &PathBuf::from(env), &dev)?;
    let (eviction, store) = run.eviction().map_err(|e| anyhow!("{env}: {e}"))?;
    let ahr_train::EnvRun { spec, model, task } = run;
    let cfg = model.config().clone();
    let h = Harness::new(&model, &task, &spec, sequences, &dev, false)?;
    let exact = cost::exact_bytes_per_token(&cfg) as f64;
    let budget = eviction.budget;

    type Evict = Box<dyn Fn(&[f32], usize, usize) -> Vec<u32>>;
    let mut rules: Vec<(String, bool, Evict)> = Vec::new();
    for value_aware in [false, true] {
        let va = if value_aware { ", weight × value norm" } else { "" };
        rules.push((
            format!("TOVA{va}"),
            value_aware,
            Box::new(move |a: &[f32], t, _| tova_ema_evictions(a, t, budget, 0.0)),
        ));
        for decay in [0.8, 0.9] {
            rules.push((
                format!("tova-ema {decay}{va}"),
                value_aware,
                Box::new(move |a: &[f32], t, _| tova_ema_evictions(a, t, budget, decay)),
            ));
        }
        for &horizon in &horizons {
            let name = if horizon >= usize::MAX / 2 {
                format!("oracle, every later query{va}")
            } else {
                format!("oracle, next {horizon}{va}")
            };
            rules.push((name, value_aware, Box::new(move |a: &[f32], t, _| oracle_evictions(a, t, budget, horizon))));
        }
    }
    // Budgets per layer (`EVICT_SPLITS="31/71,71/31"`: one budget per layer, the same total).
    for split in std::env::var("EVICT_SPLITS").unwrap_or_default().split(',').filter(|s| !s.is_empty()) {
        let budgets: Vec<usize> = split.split('/').map(|b| b.parse().context("EVICT_SPLITS")).collect::<Result<_>>()?;
        if budgets.len() != cfg.n_layers {
            bail!("EVICT_SPLITS: {split} has {} budgets for {} layers", budgets.len(), cfg.n_layers);
        }
        rules.push((
            format!("tova-ema 0.9, budgets {split}"),
            false,
            Box::new(move |a: &[f32], t, l| tova_ema_evictions(a, t, budgets[l], 0.9)),
        ));
    }
    println!(
        "| eviction at budget {budget} ({} held-out sequences, full-cache maps) | metric | memory (of exact) |",
        h.sequences
    );
    println!("|---|---:|---:|");
    for (name, value_aware, evict) in &rules {
        let rule = |b: &Batch| {
            let maps = attention_maps(&model, b, &dev, *value_aware)?;
            let (t_n, l_n) = (b.seq_len, cfg.n_layers);
            let mut ev = vec![NEVER; b.batch_size * t_n * l_n];
            for (s, layers) in maps.iter().enumerate() {
                for (l, attn) in layers.iter().enumerate() {
                    for (t, e) in evict(attn, t_n, l).into_iter().enumerate() {
                        ev[(s * t_n + t) * l_n + l] = e;
                    }
                }
            }
            Ok(Choices::from_fn(b.batch_size, t_n, l_n, |_, _, _| store).with_evictions(ev))
        };
        let p = h.batch_rule_point(name, PointKind::Rule(Family::Tova), "", &rule)?;
        println!("| {name} | {:.4} | {:.4} |", p.metric, p.kv_bytes_per_token / exact);
    }
    Ok(())
}
