//! Can a review be triggered by attention? On MQAR with re-assignments the decision that pays —
//! evict a value once its key returns with a new value (the judge's `superseded` family) — is due
//! at the moment the value's key returns. This measures whether the last layer's attention marks
//! that moment, under the exact cache: for every token u whose left neighbour returns (first
//! return at q), the weight query q gives u (mean over heads) and whether u is q's most-attended
//! earlier token; against that, the weight u receives from any other query (a trigger at the
//! wrong time), by the token's role. If a spike above a threshold fires at the return and almost
//! nowhere else, a review triggered by received attention can express the rule. Under key
//! aliases (`aliases = true`) a key returns as either of its two forms; returns are found by key
//! class and the tables are also given per form (the same token as before, or its partner).
//!
//! ```bash
//! cargo run --release -p ahr-eval --example attention_spikes -- \
//!   policies/models/mqar-tiny-updates-1024-ft3 envs/mqar-tiny-updates-512.toml 16
//! ```

use ahr_tasks::{TaskConfig, TokenRole};
use ahr_tpa::ChoiceSpec;
use anyhow::{Context, Result, anyhow, bail};

mod common;

/// Spike thresholds reported (mean weight over heads).
const THRESHOLDS: [f32; 4] = [0.1, 0.2, 0.3, 0.5];

/// The first position after `u` that holds the token before `u` (its "key" returning) in either
/// form (`class`: a token's key class, the token itself without aliases), if any.
fn first_return(inputs: &[u32], u: usize, class: impl Fn(u32) -> u32) -> Option<usize> {
    let key = class(inputs[u.checked_sub(1)?]);
    (u + 1..inputs.len()).find(|&q| class(inputs[q]) == key)
}

/// What one token received: at its left neighbour's first return (if any), and the most from
/// any other query.
#[derive(Clone)]
struct Received {
    role: TokenRole,
    at_return: Option<(f32, bool)>,
    /// Whether the key returned as the same token (always, without aliases).
    same_form: bool,
    elsewhere: f32,
    /// Whether u is the most-attended earlier token of some query other than its return.
    top_elsewhere: bool,
}

/// Per token u of one sequence, from the mean-over-heads weights `w[q][u]` (`[T, T]`, row-major).
fn received(inputs: &[u32], roles: &[TokenRole], w: &[f32], class: impl Fn(u32) -> u32) -> Vec<Received> {
    let t_n = inputs.len();
    // Each query's most-attended earlier token (query 0 has none).
    let top: Vec<Option<usize>> =
        (0..t_n).map(|q| (0..q).max_by(|&a, &b| w[q * t_n + a].total_cmp(&w[q * t_n + b]))).collect();
    (1..t_n)
        .map(|u| {
            let ret = first_return(inputs, u, &class);
            let at_return = ret.map(|q| (w[q * t_n + u], top[q] == Some(u)));
            let same_form = ret.is_none_or(|q| inputs[q] == inputs[u - 1]);
            let others = || (u + 1..t_n).filter(|&s| Some(s) != ret);
            let elsewhere = others().map(|s| w[s * t_n + u]).fold(0.0, f32::max);
            let top_elsewhere = others().any(|s| top[s] == Some(u));
            Received { role: roles[u], at_return, same_form, elsewhere, top_elsewhere }
        })
        .collect()
}

fn quantile(xs: &mut [f32], q: f64) -> f32 {
    if xs.is_empty() {
        return f32::NAN;
    }
    xs.sort_by(f32::total_cmp);
    xs[((xs.len() - 1) as f64 * q).round() as usize]
}

fn main() -> Result<()> {
    let common::HeldOut { model, batch, dev, spec, .. } = common::held_out("attention_spikes")?;
    let TaskConfig::Mqar(mqar) = &spec.task else {
        bail!("attention_spikes needs an MQAR env");
    };
    let class = |t: u32| mqar.key_class(t);
    let cfg = model.config().clone();
    let (b_n, t_n) = (batch.batch_size, batch.seq_len);
    let choices = ChoiceSpec::Exact.choices(&cfg, b_n, t_n).map_err(|e| anyhow!(e))?;
    let tokens = model.tokens(&batch.inputs, b_n, t_n, &dev)?;
    let (_, maps) = model.forward_with_attention_maps(tokens, &choices)?;
    let last = maps.last().context("the model has no layers")?;
    let heads = last.probs.dims()[1];
    let mean = last.probs.clone().mean_dim(1); // [B, 1, T, T]
    let w = mean.into_data().try_to_vec::<f32>().map_err(|e| anyhow!("{e:?}"))?;
    let mut all = Vec::new();
    for b in 0..b_n {
        let rows = b * t_n..(b + 1) * t_n;
        let w = &w[b * t_n * t_n..(b + 1) * t_n * t_n];
        all.extend(received(&batch.inputs[rows.clone()], &batch.roles[rows], w, class));
    }

    println!("Last layer ({heads} heads, weights averaged over heads), {b_n} held-out sequences of {t_n} tokens.\n");
    tables(&all);
    if mqar.aliases {
        for (same, name) in [(true, "the same form"), (false, "the other form")] {
            println!("\n### Tokens whose left neighbour (their key, for a value) returns in {name}\n");
            let part: Vec<Received> =
                all.iter().filter(|r| r.at_return.is_some() && r.same_form == same).cloned().collect();
            tables(&part);
        }
    }
    Ok(())
}

/// The per-role table and the threshold table of `all`.
fn tables(all: &[Received]) {
    println!(
        "| role | tokens | left neighbour returns | weight at the return: p10 / p50 / p90 | top of the return's row \
         | most from any other query: p50 / p99 / max | top of another row |"
    );
    println!("|---|---:|---:|---|---:|---|---:|");
    let mut roles: Vec<TokenRole> = all.iter().map(|r| r.role).collect();
    roles.sort();
    roles.dedup();
    for role in roles {
        let rs: Vec<&Received> = all.iter().filter(|r| r.role == role).collect();
        let mut at: Vec<f32> = rs.iter().filter_map(|r| r.at_return.map(|(x, _)| x)).collect();
        let tops = rs.iter().filter(|r| r.at_return.is_some_and(|(_, top)| top)).count();
        let mut other: Vec<f32> = rs.iter().map(|r| r.elsewhere).collect();
        let top_other = rs.iter().filter(|r| r.top_elsewhere).count();
        println!(
            "| {} | {} | {} | {:.3} / {:.3} / {:.3} | {:.1} % | {:.3} / {:.3} / {:.3} | {:.1} % |",
            role.name(),
            rs.len(),
            at.len(),
            quantile(&mut at, 0.1),
            quantile(&mut at, 0.5),
            quantile(&mut at, 0.9),
            100.0 * tops as f64 / at.len().max(1) as f64,
            quantile(&mut other, 0.5),
            quantile(&mut other, 0.99),
            quantile(&mut other, 1.0),
            100.0 * top_other as f64 / rs.len().max(1) as f64,
        );
    }
    println!("\n| threshold | returns caught (weight at the return > threshold) | tokens ever spiking elsewhere |");
    println!("|---:|---:|---:|");
    let returning: Vec<&Received> = all.iter().filter(|r| r.at_return.is_some()).collect();
    for th in THRESHOLDS {
        let caught = returning.iter().filter(|r| r.at_return.is_some_and(|(x, _)| x > th)).count();
        let false_alarm = all.iter().filter(|r| r.elsewhere > th).count();
        println!(
            "| {th} | {:.1} % of {} | {:.1} % of {} |",
            100.0 * caught as f64 / returning.len().max(1) as f64,
            returning.len(),
            100.0 * false_alarm as f64 / all.len().max(1) as f64,
            all.len()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hand-computed on `k=1 v=2 | 9 | 1 → 5`: token 2 (position 1) has its left neighbour 1
    /// return at 3; the filler 9 (position 2) has none (2 never comes back). With query 3 putting
    /// 0.7 on position 1 and query 2 putting 0.4 on it, token 2 is caught at its return (0.7, the
    /// top of row 3) and received 0.4 elsewhere.
    #[test]
    fn weights_at_and_away_from_the_return() {
        let id = |t: u32| t;
        let inputs = [1, 2, 9, 1, 5];
        assert_eq!(
            (first_return(&inputs, 1, id), first_return(&inputs, 2, id), first_return(&inputs, 0, id)),
            (Some(3), None, None)
        );
        let t = inputs.len();
        let mut w = vec![0f32; t * t];
        w[3 * t + 1] = 0.7;
        w[3 * t] = 0.2;
        w[2 * t + 1] = 0.4;
        w[4 * t + 2] = 0.1;
        let roles = [TokenRole::Key, TokenRole::Value, TokenRole::Filler, TokenRole::Query, TokenRole::Value];
        let r = received(&inputs, &roles, &w, id);
        assert_eq!(r[0].at_return, Some((0.7, true)));
        assert_eq!(r[0].elsewhere, 0.4);
        // Row 2's top is position 1 (0.4 against 0): token 2 tops a row other than its return's.
        assert!(r[0].top_elsewhere);
        assert_eq!((r[1].at_return, r[1].elsewhere), (None, 0.1));
        // Row 4's top is position 2 (0.1): the filler tops a row, though nothing returns for it.
        assert!(r[1].top_elsewhere);
        assert!(r[0].same_form);
        // Key 1 returns as its partner 4 (classes 1 ↔ 4): found, in the other form.
        let aliased = [1, 2, 9, 4, 5];
        let class = |t: u32| if t == 4 { 1 } else { t };
        assert_eq!(first_return(&aliased, 1, class), Some(3));
        assert_eq!(first_return(&aliased, 1, id), None);
        let r = received(&aliased, &roles, &w, class);
        assert_eq!(r[0].at_return, Some((0.7, true)));
        assert!(!r[0].same_form);
    }
}
