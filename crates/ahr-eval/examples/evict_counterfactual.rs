//! How much is one eviction decision worth, and does the rule make it well? A counterfactual for
//! the judge's `tova-ema` (decay 0.9, its own cache) on held-out sequences of a learned-eviction
//! env (`[env] evict`): at sampled queries q and in every layer, each of up to CANDIDATES keys the
//! layer holds there (the one just written included) is evicted in place of the rule's victim, and
//! the rule goes on deciding from its own cache after that ([`own_cache::forced_evictions`]: every
//! step holds the rule's number of keys); the sequence is then scored through a parallel forward.
//! Δ(c) is that loss in bits (summed over the sequence) minus the rule's own. Printed: per
//! decision the best Δ and the rank of the rule's victim among the candidates (1: no candidate
//! does better), then per layer and per candidate age a summary, and how much of Δ falls on the
//! next `NEAR` positions (a local effect or a cascade). `EVICT_COUNTERFACTUAL_RAW=FILE` writes every
//! candidate's Δ as JSON lines. The control row (forcing the rule's own victim) must reproduce the
//! rule's evictions and loss, or the run stops.
//!
//! ```bash
//! cargo run --release -p ahr-eval --example evict_counterfactual -- \
//!   policies/models/text-python-wide envs/text-python-short-evict51.toml 16 2 52
//! ```

use std::path::PathBuf;

use ahr_eval::Baseline;
use ahr_eval::harness::schedule_losses;
use ahr_eval::own_cache;
use ahr_tasks::IGNORE;
use anyhow::{Context, Result, anyhow, bail};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// Positions after a decision whose loss is its local effect (`delta_near_bits`).
const NEAR: usize = 32;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model, env, sequences, points, candidates] = &args[..] else {
        bail!(
            "usage: evict_counterfactual MODEL ENV SEQUENCES POINTS CANDIDATES (decision queries per sequence; candidates tried per decision)"
        );
    };
    let sequences: usize = sequences.parse().context("SEQUENCES")?;
    let points: usize = points.parse().context("POINTS")?;
    let tried: usize = candidates.parse().context("CANDIDATES")?;
    let dev = ahr_tpa::device::from_env();
    let run = ahr_train::EnvRun::load(&PathBuf::from(model), &PathBuf::from(env), &dev)?;
    let (eviction, store) = run.eviction().map_err(|e| anyhow!("{env}: {e}"))?;
    let ahr_train::EnvRun { model, task, .. } = run;
    let cfg = model.config().clone();
    let budget = eviction.budget;
    let rule = Baseline::tova_ema(budget, eviction.store, 0.9);
    let l_n = cfg.n_layers;
    let held_out = task.valid_batch(0, sequences);
    let mut rng = StdRng::seed_from_u64(0);
    println!(
        "| sequence | query | layer | candidates tried | rule's loss (bits) | best Δ (bits) | best's age | victim's age | rank of the rule's victim | mean Δ of the others |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut raw = Vec::new();
    let mut decisions = Vec::new();
    for s in 0..held_out.batch_size {
        let seq = held_out.rows(s..s + 1);
        let t_n = seq.seq_len;
        let base = own_cache::evictions(&model, &seq, &rule, &dev)?;
        // Labelled positions, in the order `losses` gives them.
        let labelled: Vec<usize> = (0..t_n).filter(|&t| seq.labels[t] != IGNORE).collect();
        let total = |x: &[f64]| x.iter().sum::<f64>();
        let base_losses = schedule_losses(&model, &seq, store, std::slice::from_ref(&base), &dev)?.remove(0);
        let base_loss = total(&base_losses);
        for _ in 0..points {
            let q = rng.random_range(budget..t_n - 1);
            for l in 0..l_n {
                let at = |k: usize| base[k * l_n + l];
                let victim = (0..=q).find(|&k| at(k) == (q + 1) as u32).context("the rule evicts at every query")?;
                let mut others: Vec<usize> = (0..=q).filter(|&k| k != victim && at(k) > (q + 1) as u32).collect();
                while others.len() + 1 > tried.max(2) {
                    others.swap_remove(rng.random_range(0..others.len()));
                }
                others.sort_unstable();
                // Row 0 forces the rule's own victim: the control, which must give its loss.
                let rows: Vec<usize> = std::iter::once(victim).chain(others.iter().copied()).collect();
                let batch = seq.repeat_each(rows.len());
                let forced: Vec<Option<(usize, usize, usize)>> = rows.iter().map(|&c| Some((q, l, c))).collect();
                let ev = own_cache::forced_evictions(&model, &batch, &rule, &forced, &dev)?;
                let schedules: Vec<Vec<u32>> = ev.chunks(t_n * l_n).map(<[u32]>::to_vec).collect();
                let loss = schedule_losses(&model, &seq, store, &schedules, &dev)?;
                if schedules[0] != base || (total(&loss[0]) - base_loss).abs() > 1e-6 * base_loss {
                    bail!("forcing the rule's own victim changed its evictions");
                }
                let delta: Vec<f64> = loss[1..].iter().map(|x| total(x) - base_loss).collect();
                // The same over the NEAR positions after the decision only (its local effect).
                let near: Vec<f64> = loss[1..]
                    .iter()
                    .map(|x| {
                        labelled
                            .iter()
                            .zip(x.iter().zip(&base_losses))
                            .filter(|(t, _)| **t > q && **t <= q + NEAR)
                            .map(|(_, (a, b))| a - b)
                            .sum()
                    })
                    .collect();
                let (best_i, best) = delta
                    .iter()
                    .copied()
                    .enumerate()
                    .fold((None, 0.0f64), |acc, (i, d)| if d < acc.1 { (Some(i), d) } else { acc });
                let better = delta.iter().filter(|&&d| d < 0.0).count();
                println!(
                    "| {s} | {q} | {l} | {} | {base_loss:.1} | {best:+.3} | {} | {} | {} | {:+.3} |",
                    rows.len(),
                    best_i.map_or("-".into(), |i| (q - others[i]).to_string()),
                    q - victim,
                    better + 1,
                    delta.iter().sum::<f64>() / delta.len().max(1) as f64,
                );
                let tried: Vec<Tried> = others
                    .iter()
                    .zip(delta.iter().zip(&near))
                    .map(|(&c, (&delta, &near))| Tried { age: q - c, delta, near })
                    .collect();
                for t in &tried {
                    raw.push(format!(
                        r#"{{"sequence":{s},"query":{q},"layer":{l},"victim":{victim},"candidate":{},"delta_bits":{:.6},"delta_near_bits":{:.6}}}"#,
                        q - t.age,
                        t.delta,
                        t.near
                    ));
                }
                decisions.push((l, tried));
            }
        }
    }
    summarise(&decisions, l_n);
    if let Ok(path) = std::env::var("EVICT_COUNTERFACTUAL_RAW") {
        std::fs::write(&path, raw.join("\n") + "\n").with_context(|| format!("writing {path}"))?;
    }
    Ok(())
}

/// One candidate tried in place of the rule's victim.
struct Tried {
    /// Queries since it was written.
    age: usize,
    /// Loss of the sequence minus the rule's, bits.
    delta: f64,
    /// The same over the `NEAR` positions after the decision.
    near: f64,
}

/// Per layer: where the rule's victim ranks among the candidates, what the best would have won;
/// per candidate age: what trying such a candidate gave.
fn summarise(decisions: &[(usize, Vec<Tried>)], l_n: usize) {
    let median = |mut x: Vec<f64>| {
        x.sort_by(f64::total_cmp);
        if x.is_empty() { f64::NAN } else { (x[(x.len() - 1) / 2] + x[x.len() / 2]) / 2.0 }
    };
    let mean = |x: &[f64]| x.iter().sum::<f64>() / x.len().max(1) as f64;
    println!(
        "\n| layer | decisions | candidates each | rule's victim: median rank | best | top 5 | best candidate's Δ, mean (bits) | others' Δ, mean of decisions' means | share of candidates better than the victim |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for l in 0..l_n {
        let ds: Vec<&Vec<Tried>> = decisions.iter().filter(|d| d.0 == l).map(|d| &d.1).collect();
        if ds.is_empty() {
            continue;
        }
        let ranks: Vec<f64> = ds.iter().map(|d| 1.0 + d.iter().filter(|t| t.delta < 0.0).count() as f64).collect();
        let best: Vec<f64> = ds.iter().map(|d| d.iter().map(|t| t.delta).fold(0.0, f64::min)).collect();
        let means: Vec<f64> = ds.iter().map(|d| mean(&d.iter().map(|t| t.delta).collect::<Vec<_>>())).collect();
        let (better, all) =
            ds.iter().fold((0, 0), |(b, a), d| (b + d.iter().filter(|t| t.delta < 0.0).count(), a + d.len()));
        println!(
            "| {l} | {} | {} | {:.1} | {} | {} | {:+.3} | {:+.3} | {:.2} |",
            ds.len(),
            ds[0].len() + 1,
            median(ranks.clone()),
            ranks.iter().filter(|&&r| r == 1.0).count(),
            ranks.iter().filter(|&&r| r <= 5.0).count(),
            mean(&best),
            mean(&means),
            better as f64 / all.max(1) as f64
        );
    }
    println!("\n| layer | candidate's age (queries) | candidates | Δ mean (bits) | Δ median | share Δ < 0 |");
    println!("|---:|---|---:|---:|---:|---:|");
    for l in 0..l_n {
        for (lo, hi) in [(0, 0), (1, 3), (4, 15), (16, 63), (64, 255), (256, usize::MAX)] {
            let d: Vec<f64> = decisions
                .iter()
                .filter(|d| d.0 == l)
                .flat_map(|d| d.1.iter())
                .filter(|t| (lo..=hi).contains(&t.age))
                .map(|t| t.delta)
                .collect();
            if d.is_empty() {
                continue;
            }
            let hi = if hi == usize::MAX { "…".into() } else { hi.to_string() };
            let share = d.iter().filter(|&&x| x < 0.0).count() as f64 / d.len() as f64;
            println!("| {l} | {lo}–{hi} | {} | {:+.3} | {:+.3} | {share:.2} |", d.len(), mean(&d), median(d.clone()));
        }
    }
    let all: Vec<&Tried> = decisions.iter().flat_map(|d| d.1.iter()).collect();
    let (d, n): (Vec<f64>, Vec<f64>) = all.iter().map(|t| (t.delta, t.near)).unzip();
    let (md, mn) = (mean(&d), mean(&n));
    let cov: f64 = d.iter().zip(&n).map(|(a, b)| (a - md) * (b - mn)).sum();
    let var = |x: &[f64], m: f64| x.iter().map(|a| (a - m).powi(2)).sum::<f64>();
    println!(
        "\ncorrelation of a candidate's Δ with its Δ over the next {NEAR} positions: {:.3}; mean |Δ| {:.3} bits, over the next {NEAR}: {:.3}",
        cov / (var(&d, md) * var(&n, mn)).sqrt(),
        mean(&d.iter().map(|x| x.abs()).collect::<Vec<_>>()),
        mean(&n.iter().map(|x| x.abs()).collect::<Vec<_>>())
    );
}
