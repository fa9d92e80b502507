//! Which first-layer entries a long read needs: the layers before the last keep a window of
//! `HEAD_WINDOW` queries and, beyond it, every token of the chosen roles (an oracle that reads the
//! task's labels, so no rule a deployment could run); the last layer keeps every token, or every
//! token until the context shows it superseded (`ahr_eval::rules::superseded_evictions`). Where
//! windows up to 64 leave accuracy below the exact cache's and a whole first layer restores it,
//! the rows say which tokens' first-layer entries carry the long reads — what a policy would have
//! to learn to keep, and what a window cannot. A causal contrast heads the table: the layers
//! before the last also keep each token until the context shows it superseded, as the last
//! layer's rule does.
//!
//! With a menu that has `full/W/rank:1` and `recent:W` (W the window), further rows keep the
//! chosen roles' first-layer entries at rank 1 beyond the window instead of dense.
//!
//! ```bash
//! cargo run --release -p ahr-eval --example head_reads -- \
//!   policies/models/mqar-tiny-aliases-512 envs/mqar-tiny-aliases-512-spike-tokens.toml 64 4
//! cargo run --release -p ahr-eval --example head_reads -- \
//!   policies/models/mqar-tiny-aliases-512-fit envs/mqar-tiny-aliases-512-fit-spike-tokens.toml 64 4
//! ```

use std::path::PathBuf;

use ahr_eval::harness::Harness;
use ahr_eval::rules::{NEVER, superseded_evictions, window_evictions};
use ahr_eval::{Family, PointKind};
use ahr_tasks::{Batch, TokenRole};
use ahr_tpa::{Choices, cost};
use anyhow::{Context, Result, bail};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model, env, sequences, window] = &args[..] else {
        bail!("usage: head_reads MODEL ENV SEQUENCES HEAD_WINDOW");
    };
    let (model_dir, env_path) = (PathBuf::from(model), PathBuf::from(env));
    let sequences: usize = sequences.parse().context("SEQUENCES")?;
    let window: usize = window.parse().context("HEAD_WINDOW")?;
    let dev = ahr_tpa::device::from_env();
    let ahr_train::EnvRun { spec, model, task } = ahr_train::EnvRun::load(&model_dir, &env_path, &dev)?;
    let cfg = model.config().clone();
    let exact_index = cfg.option_index(cfg.exact_option()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let l_n = cfg.n_layers;
    let h = Harness::new(&model, &task, &spec, sequences, &dev, false)?;
    let exact = cost::exact_bytes_per_token(&cfg) as f64;

    use TokenRole::{Filler, Key, Query, Stale, Value};
    let role_sets: [(&str, &[TokenRole]); 8] = [
        ("none", &[]),
        ("keys", &[Key]),
        ("values", &[Value]),
        ("queries", &[Query]),
        ("stale", &[Stale]),
        ("keys, stale", &[Key, Stale]),
        ("keys, values, queries, stale", &[Key, Value, Query, Stale]),
        ("every token (filler too)", &[Key, Value, Query, Stale, Filler]),
    ];
    println!("| layers < {}: window {window}, and beyond it | last layer | metric | memory |", l_n - 1);
    println!("|---|---|---:|---:|");
    // A causal contrast: the layers before the last also keep each token until superseded, as
    // the last layer does (`superseded_evictions` on the same tokens).
    for superseded in [false, true] {
        let rule = |b: &Batch| {
            let ev = layered(b, l_n, |x, _| {
                let sup = superseded_evictions(x);
                let head = sup.iter().enumerate().map(|(t, &e)| e.max((t + window + 1) as u32)).collect();
                (head, if superseded { sup } else { vec![NEVER; x.len()] })
            });
            Ok(Choices::from_fn(b.batch_size, b.seq_len, l_n, |_, _, _| exact_index).with_evictions(ev))
        };
        let p = h.batch_rule_point("causal", PointKind::Rule(Family::LayerWindows), "", &rule)?;
        let last = if superseded { "until superseded" } else { "every token" };
        let memory = 100.0 * p.kv_bytes_per_token / exact;
        println!("| (causal) every token until superseded | {last} | {:.4} | {memory:.1} % |", p.metric);
    }
    // Cheap long storage instead of dense: where the menu has `full/W/rank:1` and `recent:W`, the
    // chosen roles' first-layer entries stay dense for the window and at rank 1 after it (others
    // leave with the window); the last layer keeps every token until superseded.
    let named = |n: String| cfg.menu.iter().position(|o| o.to_string() == n);
    if let (Some(demoted), Some(recent)) = (named(format!("full/{window}/rank:1")), named(format!("recent:{window}"))) {
        for (name, roles) in &role_sets[5..] {
            let rule = |b: &Batch| {
                let ev = layered(b, l_n, |x, _| (vec![NEVER; x.len()], superseded_evictions(x)));
                let pick = |s: usize, t: usize, l: usize| match l + 1 < l_n {
                    true if roles.contains(&b.roles[s * b.seq_len + t]) => demoted,
                    true => recent,
                    false => exact_index,
                };
                Ok(Choices::from_fn(b.batch_size, b.seq_len, l_n, pick).with_evictions(ev))
            };
            let p = h.batch_rule_point(name, PointKind::Rule(Family::LayerWindows), "", &rule)?;
            let memory = 100.0 * p.kv_bytes_per_token / exact;
            println!(
                "| {name}: dense for the window, then `rank:1` | until superseded | {:.4} | {memory:.1} % |",
                p.metric
            );
        }
    }
    for superseded in [false, true] {
        for (name, roles) in role_sets {
            let rule = |b: &Batch| {
                let ev = layered(b, l_n, |x, r| {
                    let window_ev = window_evictions(x.len(), 0, window);
                    let head = r.iter().zip(window_ev).map(|(role, e)| if roles.contains(role) { NEVER } else { e });
                    (head.collect(), if superseded { superseded_evictions(x) } else { vec![NEVER; x.len()] })
                });
                Ok(Choices::from_fn(b.batch_size, b.seq_len, l_n, |_, _, _| exact_index).with_evictions(ev))
            };
            let p = h.batch_rule_point(name, PointKind::Rule(Family::LayerWindows), "", &rule)?;
            let last = if superseded { "until superseded" } else { "every token" };
            println!("| {name} | {last} | {:.4} | {:.1} % |", p.metric, 100.0 * p.kv_bytes_per_token / exact);
        }
    }
    Ok(())
}

/// Evictions of a batch (`[stream, token, layer]`) from, per stream, one vector for the layers
/// before the last and one for the last: `per_stream(inputs, roles)` of that stream.
fn layered(b: &Batch, l_n: usize, per_stream: impl Fn(&[u32], &[TokenRole]) -> (Vec<u32>, Vec<u32>)) -> Vec<u32> {
    let t_n = b.seq_len;
    let mut ev = vec![NEVER; b.batch_size * t_n * l_n];
    for s in 0..b.batch_size {
        let cells = s * t_n..(s + 1) * t_n;
        let (head, last) = per_stream(&b.inputs[cells.clone()], &b.roles[cells]);
        for t in 0..t_n {
            for l in 0..l_n {
                ev[(s * t_n + t) * l_n + l] = if l + 1 < l_n { head[t] } else { last[t] };
            }
        }
    }
    ev
}
