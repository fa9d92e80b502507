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
//! ```bash
//! cargo run --release -p ahr-eval --example head_reads -- \
//!   policies/models/mqar-tiny-aliases-512 envs/mqar-tiny-aliases-512-spike-tokens.toml 64 4
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
    let mut rows = Vec::new();
    // A causal contrast: the layers before the last also keep each token until superseded, as
    // the last layer does (`superseded_evictions` on the same tokens).
    for superseded in [false, true] {
        let rule = |b: &Batch| {
            let (b_n, t_n) = (b.batch_size, b.seq_len);
            let mut ev = vec![NEVER; b_n * t_n * l_n];
            for s in 0..b_n {
                let x = &b.inputs[s * t_n..(s + 1) * t_n];
                let sup = superseded_evictions(x);
                for t in 0..t_n {
                    for l in 0..l_n {
                        ev[(s * t_n + t) * l_n + l] = match l + 1 < l_n {
                            true => sup[t].max((t + window + 1) as u32),
                            false if superseded => sup[t],
                            false => NEVER,
                        };
                    }
                }
            }
            Ok(Choices::from_fn(b_n, t_n, l_n, |_, _, _| exact_index).with_evictions(ev))
        };
        let p = h.batch_rule_point("causal", PointKind::Rule(Family::LayerWindows), "", &rule)?;
        let last = if superseded { "until superseded" } else { "every token" };
        rows.push(format!(
            "| (causal) every token until superseded | {last} | {:.4} | {:.1} % |",
            p.metric,
            100.0 * p.kv_bytes_per_token / exact
        ));
    }
    println!("| layers < {}: window {window}, and beyond it | last layer | metric | memory |", l_n - 1);
    println!("|---|---|---:|---:|");
    for row in rows {
        println!("{row}");
    }
    for superseded in [false, true] {
        for (name, roles) in role_sets {
            let rule = |b: &Batch| {
                let (b_n, t_n) = (b.batch_size, b.seq_len);
                let head_ev = window_evictions(t_n, 0, window);
                let mut ev = vec![NEVER; b_n * t_n * l_n];
                for s in 0..b_n {
                    let x = &b.inputs[s * t_n..(s + 1) * t_n];
                    let last_ev = if superseded { superseded_evictions(x) } else { vec![NEVER; t_n] };
                    for t in 0..t_n {
                        let kept = roles.contains(&b.roles[s * t_n + t]);
                        for l in 0..l_n {
                            ev[(s * t_n + t) * l_n + l] = match (l + 1 < l_n, kept) {
                                (true, true) => NEVER,
                                (true, false) => head_ev[t],
                                (false, _) => last_ev[t],
                            };
                        }
                    }
                }
                Ok(Choices::from_fn(b_n, t_n, l_n, |_, _, _| exact_index).with_evictions(ev))
            };
            let p = h.batch_rule_point(name, PointKind::Rule(Family::LayerWindows), "", &rule)?;
            let last = if superseded { "until superseded" } else { "every token" };
            println!("| {name} | {last} | {:.4} | {:.1} % |", p.metric, 100.0 * p.kv_bytes_per_token / exact);
        }
    }
    Ok(())
}
