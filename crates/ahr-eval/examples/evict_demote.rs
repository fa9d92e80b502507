//! Does a key `tova-out` evicts earn its keep at rank 1? Nested ranks let a dense token become a
//! rank-1 factor token instead of leaving: a two-tier cache holds B1 keys dense (with their rank-1
//! factors beside them, so any can be demoted) and the last B2 keys tier 1 let go at rank 1, each
//! leaving when B2 newer ones have joined that tier (first in, first out). Tier 1 is `tova-out`
//! (or `tova-ema`) with its own single-tier cache — its decisions come from the attention of a cache
//! without tier 2, so this is an estimate of what the second tier is worth, not yet a rule that
//! runs on its own cache; the loss is the parallel forward's, with the demotions at their queries
//! (`Choices::with_demotions`). Memory is the judge's measure (time-averaged bytes per token,
//! `cost::sequence_cost_demoted`): a dense tier-1 token is charged with its rank-ρ factors beside
//! it from its step on (a deployed cache must keep them to demote without the token's hidden
//! state), a tier-2 token its factors. The last column is the memory if demoting were free (no
//! factors beside the dense tokens): what a dense-to-rank-ρ demotion would have to cost to pay.
//!
//! `EVICT_TIERS` (`B1:B2` pairs, default `25:0,20:0,15:0,20:26,15:38,12:54,18:16`),
//! `EVICT_DECAY` (default 0.5), `EVICT_SCORE` (`output` or `weight`, default `output`),
//! `EVICT_SHADOW_AGE` (A: only keys tier 1 lets go within A queries of their step are demoted, the
//! others dropped, so the factors need to be kept beside a dense token for its first A queries
//! only — the charge the last column but one counts; default: every key, factors kept throughout),
//! `EVICT_OWN=1` (tier 1 at a factor rank only: run the two tiers with their own cache,
//! `own_cache::tiered_evictions` — the rule then decides on the cache it keeps, with the attention
//! the rank-1 keys draw — instead of the estimate),
//! `EVICT_RANK` (the demoted form's rank, default 1), `EVICT_STORE` (tier 1's storage, default
//! `full`; a rank above `EVICT_RANK` nests it, so no factors are kept beside it).
//!
//! ```bash
//! cargo run --release -p ahr-eval --example evict_demote -- \
//!   policies/models/text-python-wide envs/text-python-short-evict25.toml 64
//! ```

use std::cell::RefCell;
use std::path::PathBuf;

use ahr_eval::harness::Harness;
use ahr_eval::rules::{self, NEVER};
use ahr_eval::{Baseline, Family, PointKind, own_cache};
use ahr_tasks::{Batch, Metrics};
use ahr_tpa::cost::full_cache_steps_per_token;
use ahr_tpa::{Choices, StoreOption};
use anyhow::{Context, Result, bail};

/// Per (sequence, token, layer) of a `[B, T, L]` eviction schedule of tier 1 (`first`), the query
/// from which each key tier 1 let go leaves tier 2 too ([`rules::second_tier`] per layer). Only keys
/// let go within `age` queries of their own step join tier 2 (the others leave at once).
fn second_tier(first: &[u32], [b_n, t_n, l_n]: [usize; 3], b2: usize, age: usize) -> Vec<u32> {
    let mut out = first.to_vec();
    for b in 0..b_n {
        for l in 0..l_n {
            let at = |t: usize| (b * t_n + t) * l_n + l;
            let column: Vec<u32> = (0..t_n).map(|t| first[at(t)]).collect();
            let young = |t: usize| column[t] as usize <= t + age;
            for (t, e) in rules::second_tier(&column, b2, young).into_iter().enumerate() {
                out[at(t)] = e;
            }
        }
    }
    out
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model, env, sequences] = &args[..] else {
        bail!("usage: evict_demote MODEL ENV SEQUENCES");
    };
    let sequences: usize = sequences.parse().context("SEQUENCES")?;
    let var = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.into());
    let tiers: Vec<(usize, usize)> = var("EVICT_TIERS", "25:0,20:0,15:0,20:26,15:38,12:54,18:16")
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| {
            let (a, b) = s.split_once(':').context("EVICT_TIERS: B1:B2 pairs")?;
            Ok((a.trim().parse()?, b.trim().parse()?))
        })
        .collect::<Result<_>>()?;
    let decay: f32 = var("EVICT_DECAY", "0.5").parse().context("EVICT_DECAY")?;
    let output = match var("EVICT_SCORE", "output").as_str() {
        "output" => true,
        "weight" => false,
        other => bail!("EVICT_SCORE: `output` or `weight`, not {other}"),
    };
    let rank: usize = var("EVICT_RANK", "1").parse().context("EVICT_RANK")?;
    let shadow_age: Option<usize> =
        std::env::var("EVICT_SHADOW_AGE").ok().map(|a| a.parse()).transpose().context("EVICT_SHADOW_AGE")?;
    let store: StoreOption = var("EVICT_STORE", "full").parse().map_err(anyhow::Error::msg).context("EVICT_STORE")?;

    let dev = ahr_tpa::device::from_env();
    let ahr_train::EnvRun { spec, model, task } =
        ahr_train::EnvRun::load(&PathBuf::from(model), &PathBuf::from(env), &dev)?;
    let cfg = model.config().clone();
    if rank == 0 || rank > cfg.kv_rank_max {
        bail!("EVICT_RANK: 1 to {}", cfg.kv_rank_max);
    }
    let (form, l_n) = (StoreOption::Rank(rank), cfg.n_layers);
    let h = Harness::new(&model, &task, &spec, sequences, &dev, false)?;
    let first_form = h.rules.config().option_index(store).map_err(anyhow::Error::msg)?;
    if matches!(store, StoreOption::Rank(r) if r <= rank) || store.is_timed() || store == StoreOption::Drop {
        bail!("EVICT_STORE: dense or a rank above EVICT_RANK's {rank}, not {store}");
    }
    let shadow = ahr_tpa::cost::demotion_shadow_bytes(&cfg, store, form) as u64;
    let own = var("EVICT_OWN", "0") == "1";
    if own && shadow > 0 {
        bail!("EVICT_OWN: the cache demotes factor tokens only (EVICT_STORE a rank above EVICT_RANK)");
    }
    let exact = ahr_tpa::cost::exact_bytes_per_token(&cfg) as f64;
    let score = if output { "tova-out" } else { "tova-ema" };
    println!(
        "| tier 1: {score} (decay {decay}) B1 at {store}; tier 2: the last B2 it let go at {form}, {} ({} held-out windows) | bits/byte | memory (of exact) | against the first row, paired (95 %; positive: better) | memory with factors to age {} | memory if demoting were free |",
        if own { "with their own cache" } else { "tier 1 deciding on a cache without tier 2" },
        h.sequences,
        shadow_age.map_or("—".into(), |a| a.to_string()),
    );
    println!("|---|---:|---:|---|---:|---:|");
    let mut first: Option<Vec<Metrics>> = None;
    for &(b1, b2) in &tiers {
        let rule = if output { Baseline::tova_out(b1, store, decay) } else { Baseline::tova_ema(b1, store, decay) };
        // Byte-steps of the factors kept beside tier-1 tokens, over the sequences scored: of the
        // demoted ones (what the harness charges), of every token throughout, of every token to
        // the shadow age.
        let shadow_steps = RefCell::new([0f64; 3]);
        let run = |batch: &Batch| {
            let dims = [batch.batch_size, batch.seq_len, l_n];
            let choices = Choices::from_fn(dims[0], dims[1], l_n, |_, _, _| first_form);
            if own {
                let tiers = own_cache::tiered_evictions(&h.rules, batch, &rule, b2, form, &dev)?;
                return Ok(choices.with_evictions(tiers.evicted_at).with_demotions(tiers.demoted_at, form));
            }
            let tier1 = own_cache::evictions(&h.rules, batch, &rule, &dev)?;
            if b2 == 0 {
                return Ok(choices.with_evictions(tier1));
            }
            let (t_n, age) = (batch.seq_len as u64, shadow_age.unwrap_or(batch.seq_len) as u64);
            let tier2 = second_tier(&tier1, dims, b2, age as usize);
            let demoted: Vec<u32> = tier1.iter().zip(&tier2).map(|(&d, &e)| if d != e { d } else { NEVER }).collect();
            let per = shadow as f64 / full_cache_steps_per_token(batch.seq_len) / batch.seq_len as f64;
            let mut steps = shadow_steps.borrow_mut();
            for (i, (&d, &moved)) in tier1.iter().zip(&demoted).enumerate() {
                let span = (if d == NEVER { t_n } else { u64::from(d) }) - ((i / l_n) % batch.seq_len) as u64;
                steps[0] += if moved != NEVER { span as f64 * per } else { 0.0 };
                steps[1] += span as f64 * per;
                steps[2] += span.min(age + 1) as f64 * per;
            }
            Ok(choices.with_evictions(tier2).with_demotions(demoted, form))
        };
        let name = format!("B1 {b1}, B2 {b2}");
        let p = h.batch_rule_point(&name, PointKind::Rule(Family::TovaOut), "", &run)?;
        let [charged, all, young] = shadow_steps.borrow().map(|x| x / h.sequences as f64 / exact);
        let free = p.kv_bytes_per_token / exact - charged;
        let (memory, to_age) = (free + all, free + young);
        let against = match first.as_ref().and_then(|r| ahr_eval::judge::paired(&p.per_sequence, r, h.metric())) {
            Some(m) => m.to_string(),
            None => "—".into(),
        };
        println!(
            "| {name} | {:.4} | {:.2} % | {against} | {:.2} % | {:.2} % |",
            p.metric,
            100.0 * memory,
            100.0 * to_age,
            100.0 * free
        );
        first.get_or_insert(p.per_sequence);
    }
    Ok(())
}
