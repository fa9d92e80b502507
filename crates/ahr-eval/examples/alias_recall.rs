//! Where a model fails on MQAR with key aliases (`aliases = true`): exact-cache accuracy per
//! query, split by whether the query writes its key in the same form as the key's latest
//! assignment (token equality would find it) or in the other form (only the learned pairing
//! does), and, for the latter, whether an older assignment of the key in the query's form exists
//! (a stale value that token equality points to).
//!
//! ```bash
//! cargo run --release -p ahr-eval --example alias_recall -- MODEL envs/mqar-tiny-aliases-512.toml 64
//! ```

use ahr_tasks::{TaskConfig, TokenRole};
use ahr_tpa::ChoiceSpec;
use anyhow::{Context, Result, anyhow, bail};

mod common;

fn main() -> Result<()> {
    let common::HeldOut { env_path, spec, model, batch, dev } = common::held_out("alias_recall")?;
    let TaskConfig::Mqar(mqar) = &spec.task else {
        bail!("{}: an MQAR env is needed", env_path.display());
    };
    let cfg = model.config().clone();
    let (b_n, t_n, v_n) = (batch.batch_size, batch.seq_len, cfg.vocab_size);
    let choices = ChoiceSpec::Exact.choices(&cfg, b_n, t_n).map_err(|e| anyhow!(e))?;
    let tokens = model.tokens(&batch.inputs, b_n, t_n, &dev)?;
    let logits = model.forward(tokens, &choices)?.into_data().try_to_vec::<f32>().map_err(|e| anyhow!("{e:?}"))?;
    let class = |t: u32| mqar.key_class(t);
    // [same form as the latest assignment, other form without / with a same-form stale one]: (right, all)
    let mut tally = [(0usize, 0usize); 3];
    for b in 0..b_n {
        let x = &batch.inputs[b * t_n..(b + 1) * t_n];
        let r = &batch.roles[b * t_n..(b + 1) * t_n];
        // Assignments so far per key class: the key tokens, oldest first.
        let mut seen: std::collections::HashMap<u32, Vec<u32>> = Default::default();
        let mut i = 0;
        while i < t_n {
            match r[i] {
                TokenRole::Key | TokenRole::Stale | TokenRole::Distractor => {
                    seen.entry(class(x[i])).or_default().push(x[i]);
                    i += 2;
                    continue;
                }
                TokenRole::Query => {
                    let forms = seen.get(&class(x[i])).context("a query's key was assigned before")?;
                    let k = if forms.last() == Some(&x[i]) {
                        0
                    } else if forms.contains(&x[i]) {
                        2
                    } else {
                        1
                    };
                    let row = &logits[(b * t_n + i) * v_n..(b * t_n + i + 1) * v_n];
                    let best = (0..v_n).max_by(|&p, &q| row[p].total_cmp(&row[q])).unwrap_or(0);
                    let label = batch.labels[b * t_n + i];
                    tally[k].1 += 1;
                    tally[k].0 += (best as i64 == label) as usize;
                }
                _ => {}
            }
            i += 1;
        }
    }
    println!("{b_n} held-out sequences of {t_n} tokens, exact cache.\n");
    println!("| query writes its key | queries | accuracy |\n|---|---:|---:|");
    let names = [
        "as its latest assignment did",
        "in the other form (no older assignment in this form)",
        "in the other form, as an older (stale) assignment did",
    ];
    for (name, (right, all)) in names.iter().zip(tally) {
        println!("| {name} | {all} | {:.4} |", right as f64 / all.max(1) as f64);
    }
    Ok(())
}
