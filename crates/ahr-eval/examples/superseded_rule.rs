//! What hindsight can buy on MQAR with re-assignments: the best per-layer window rule, and the
//! same rule that also evicts superseded values from the last layer once the context shows them
//! superseded (the judge's `superseded` family, `ahr_eval::rules::superseded_evictions`). A value
//! v written at t (its key at t − 1) is superseded when its key comes back at q and the token
//! after it, at q + 1, is not v (a re-assignment, not a query answered with v): from query q + 2
//! on, v is gone. The rule decides from the tokens seen so far (causal); it
//! reads no role, only token equality in context — what a hindsight decision (a review triggered
//! by the attention a stored token receives when its key returns) could learn. For contrast, the
//! "used once" variant evicts v as soon as its key returns at all (after query q): right only on
//! tasks where each key is queried once, a shortcut a policy should not learn.
//!
//! Rows: layers < last keep each token for HEAD_WINDOW queries at HEAD_STORE; the last layer keeps
//! every token at LAST_STORE (as the judge's `layer-windows` setting `L0: window=W@S; L1:
//! all@S'`), then the two hindsight variants.
//!
//! ```bash
//! cargo run --release -p ahr-eval --example superseded_rule -- \
//!   policies/models/mqar-tiny-updates-1024-ft envs/mqar-tiny-updates-1024.toml 32 12 rank:3 rank:1
//! ```

use std::path::PathBuf;

use ahr_eval::harness::Harness;
use ahr_eval::rules::{NEVER, superseded_evictions, window_evictions};
use ahr_eval::{Family, PointKind};
use ahr_tasks::Batch;
use ahr_tpa::{Choices, StoreOption, cost};
use anyhow::{Context, Result, bail};

/// When the last layer stops seeing each token of one sequence.
#[derive(Clone, Copy, PartialEq)]
enum LastLayer {
    /// Never evicted.
    Keep,
    /// Evicted once superseded (its key returns and a new value follows).
    Superseded,
    /// Evicted once its key returns at all.
    UsedOnce,
}

fn last_layer_evictions(inputs: &[u32], mode: LastLayer) -> Vec<u32> {
    let t_n = inputs.len();
    match mode {
        LastLayer::Keep => vec![NEVER; t_n],
        LastLayer::Superseded => superseded_evictions(inputs),
        LastLayer::UsedOnce => (0..t_n)
            .map(|t| {
                let Some(key) = t.checked_sub(1).map(|k| inputs[k]) else { return NEVER };
                (t + 1..t_n).find(|&q| inputs[q] == key).map_or(NEVER, |q| (q + 1) as u32)
            })
            .collect(),
    }
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model, env, sequences, window, head, last] = &args[..] else {
        bail!("usage: superseded_rule MODEL ENV SEQUENCES HEAD_WINDOW HEAD_STORE LAST_STORE");
    };
    let (model_dir, env_path) = (PathBuf::from(model), PathBuf::from(env));
    let sequences: usize = sequences.parse().context("SEQUENCES")?;
    let window: usize = window.parse().context("HEAD_WINDOW")?;
    let option = |s: &str| s.parse::<StoreOption>().map_err(|e| anyhow::anyhow!("{s}: {e}"));
    let (head, last) = (option(head)?, option(last)?);

    let dev = ahr_tpa::device::from_env();
    let ahr_train::EnvRun { spec, model, task } = ahr_train::EnvRun::load(&model_dir, &env_path, &dev)?;
    let cfg = model.config().clone();
    let index = |o: StoreOption| cfg.option_index(o).map_err(|e| anyhow::anyhow!("{o}: {e}"));
    let (head_index, last_index) = (index(head)?, index(last)?);
    let l_n = cfg.n_layers;
    let h = Harness::new(&model, &task, &spec, sequences, &dev, false)?;
    let exact = cost::exact_bytes_per_token(&cfg) as f64;

    println!("| rule ({} sequences) | metric | memory |\n|---|---:|---:|", h.sequences);
    for (mode, what) in [
        (LastLayer::Keep, "every token"),
        (LastLayer::Superseded, "every token until superseded"),
        (LastLayer::UsedOnce, "every token until its key returns (used once)"),
    ] {
        let rule = |b: &Batch| {
            let (b_n, t_n) = (b.batch_size, b.seq_len);
            let head_ev = window_evictions(t_n, 0, window);
            let mut ev = vec![NEVER; b_n * t_n * l_n];
            for s in 0..b_n {
                let last_ev = last_layer_evictions(&b.inputs[s * t_n..(s + 1) * t_n], mode);
                for t in 0..t_n {
                    for l in 0..l_n {
                        ev[(s * t_n + t) * l_n + l] = if l + 1 < l_n { head_ev[t] } else { last_ev[t] };
                    }
                }
            }
            let store = |_, _, l: usize| if l + 1 < l_n { head_index } else { last_index };
            Ok(Choices::from_fn(b_n, t_n, l_n, store).with_evictions(ev))
        };
        let p = h.batch_rule_point(what, PointKind::Rule(Family::LayerWindows), "", &rule)?;
        println!(
            "| layers < {}: window {window} at `{head}`; last: {what} at `{last}` | {:.4} | {:.1} % |",
            l_n - 1,
            p.metric,
            100.0 * p.kv_bytes_per_token / exact
        );
    }

    // Where the last layer's bytes go: per token role, the share of its time to the end of the
    // sequence that each mode holds it (`ahr analyze`'s "bytes kept", last layer only).
    let batch = task.valid_batch(0, h.sequences);
    if !batch.roles.is_empty() {
        let t_n = batch.seq_len;
        let mut roles = batch.roles.clone();
        roles.sort();
        roles.dedup();
        let names: Vec<&str> = roles.iter().map(|r| r.name()).collect();
        println!("\n| last layer: time held / time to the end | {} |", names.join(" | "));
        println!("|---|{}", "---:|".repeat(roles.len()));
        for (mode, what) in [(LastLayer::Superseded, "until superseded"), (LastLayer::UsedOnce, "used once")] {
            let held = held_by_role(&batch.inputs, &batch.roles, t_n, &roles, |x| last_layer_evictions(x, mode));
            let cells: Vec<String> = held.iter().map(|h| format!("{:.1} %", 100.0 * h)).collect();
            println!("| {what} | {} |", cells.join(" | "));
        }
        // The share of labelled queries whose value the last layer still holds at the query.
        println!("\n| last layer | values held at their query |\n|---|---:|");
        for (mode, what) in [(LastLayer::Superseded, "until superseded"), (LastLayer::UsedOnce, "used once")] {
            let (mut h, mut n) = (0, 0);
            for s in 0..batch.batch_size {
                let cells = s * t_n..(s + 1) * t_n;
                let ev = last_layer_evictions(&batch.inputs[cells.clone()], mode);
                let pairs = ahr_eval::analysis::query_values(
                    &batch.inputs[cells.clone()],
                    &batch.labels[cells.clone()],
                    &batch.roles[cells],
                );
                h += pairs.iter().filter(|&&(p, q)| q < ev[p] as usize).count();
                n += pairs.len();
            }
            println!("| {what} | {:.1} % of {n} |", 100.0 * h as f64 / n.max(1) as f64);
        }
    }
    Ok(())
}

/// Per role in `roles`, the mean over its tokens of the share of the queries from its own to the
/// end of its sequence that it is held (`evictions` of one sequence: gone from that query on).
fn held_by_role(
    inputs: &[u32],
    token_roles: &[ahr_tasks::TokenRole],
    t_n: usize,
    roles: &[ahr_tasks::TokenRole],
    evictions: impl Fn(&[u32]) -> Vec<u32>,
) -> Vec<f64> {
    let mut sums = vec![(0.0, 0usize); roles.len()];
    for (seq, seq_roles) in inputs.chunks(t_n).zip(token_roles.chunks(t_n)) {
        for (t, (&e, role)) in evictions(seq).iter().zip(seq_roles).enumerate() {
            let held = (e as usize).min(t_n) - t;
            let i = roles.iter().position(|r| r == role).expect("every role is listed");
            sums[i].0 += held as f64 / (t_n - t) as f64;
            sums[i].1 += 1;
        }
    }
    sums.into_iter().map(|(s, n)| s / n.max(1) as f64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn used_once_evicts_at_the_first_return() {
        // k=1 v=2 | filler 9 | query 1 → 2 | re-assignment 1 → 3 | query 1 → 3
        let inputs = [1, 2, 9, 1, 2, 1, 3, 1, 3];
        let used = last_layer_evictions(&inputs, LastLayer::UsedOnce);
        assert_eq!((used[1], used[6]), (4, 8));
        assert_eq!(last_layer_evictions(&inputs, LastLayer::Superseded)[1], 7);
        assert!(last_layer_evictions(&inputs, LastLayer::Keep).iter().all(|&e| e == NEVER));
    }

    #[test]
    fn held_by_role_is_the_share_of_the_remaining_queries() {
        use ahr_tasks::TokenRole::{Filler, Value};
        // The value (at 1) is held for 1 of its 3 remaining queries, the filler to the end.
        let inputs = [5, 6, 7, 8];
        let roles = [Filler, Value, Filler, Filler];
        let ev = |_: &[u32]| vec![NEVER, 2, NEVER, NEVER];
        let held = held_by_role(&inputs, &roles, 4, &[Value, Filler], ev);
        assert!((held[0] - 1.0 / 3.0).abs() < 1e-12, "{held:?}");
        assert!((held[1] - 1.0).abs() < 1e-12, "{held:?}");
    }
}
