//! A diagnostic for a trained policy: run it on its env's held-out sequences as it is, and again
//! with one exception added by hand — in the last layer, a token whose `surprisal` observation is
//! at most τ is stored at `--store` (kept to the end) whatever the policy chose. If the policy
//! with the exception beats both the policy and the best rule at that memory, PPO stopped one
//! coordinated change short of the rule (docs/FINDINGS.md, "Credit assignment").
//!
//! ```bash
//! cargo run --release -p ahr-eval --example policy_exception -- \
//!   policies/models/mqar-tiny-512 envs/mqar-tiny-restated-128-windows.toml policies/restated-windows-seed1 \
//!   64 rank:1 0.05,0.1,0.2,0.3
//! ```

use std::path::PathBuf;

use ahr_eval::harness::Harness;
use ahr_tpa::{StoreOption, cost};
use anyhow::{Context, Result, bail};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model, env, policy, sequences, store, taus] = &args[..] else {
        bail!("usage: policy_exception MODEL ENV POLICY SEQUENCES STORE TAU[,TAU…]");
    };
    let (model_dir, env_path, policy_dir) = (PathBuf::from(model), PathBuf::from(env), PathBuf::from(policy));
    let sequences: usize = sequences.parse().context("SEQUENCES")?;
    let store: StoreOption = store.parse().map_err(|e| anyhow::anyhow!("STORE: {e}"))?;
    let taus = taus.split(',').map(|t| t.parse::<f32>().context("TAU")).collect::<Result<Vec<_>>>()?;

    let dev = ahr_tpa::device::from_env();
    let ahr_train::EnvRun { spec, model, task } = ahr_train::EnvRun::load(&model_dir, &env_path, &dev)?;
    let cfg = model.config().clone();
    let fp = ahr_tpa::checkpoint::fingerprint(&model_dir)?;
    let (manifest, net) = ahr_policy::export::load_policy(&policy_dir, &cfg, &fp, &dev)?;
    let spec = spec.for_policy(&manifest);
    // The newest step's `surprisal` (older steps of a stacked row are named `t-k.surprisal`).
    let surprisal = manifest
        .obs
        .features
        .iter()
        .position(|f| f == "surprisal")
        .context("the policy's observations have no `surprisal` (version 3 on)")?;
    let option = cfg.option_index(store).map_err(anyhow::Error::msg)?;
    let window = manifest.policy.window.max(1);
    let (per, last, heads) = (manifest.obs.dim(), cfg.n_layers - 1, manifest.dims.heads);

    let h = Harness::new(&model, &task, &spec, sequences, &dev, false)?;
    let exact = cost::exact_bytes_per_token(&cfg) as f64;
    println!("| policy | τ | accuracy | memory |\n|---|---:|---:|---:|");
    for tau in std::iter::once(None).chain(taus.into_iter().map(Some)) {
        let (point, _) = h.env_point("policy", "", &spec, window, |obs| {
            let mut actions = net.act_deterministic(obs, &manifest.norm, &dev);
            debug_assert_eq!(obs.features.len(), obs.len * per);
            for r in 0..obs.len {
                if tau.is_some_and(|tau| obs.features[r * per + surprisal] <= tau) {
                    actions[r * heads + last] = option;
                }
            }
            actions
        })?;
        let tau = tau.map_or("—".to_string(), |t| format!("{t}"));
        let mem = 100.0 * point.kv_bytes_per_token / exact;
        println!("| {} | {tau} | {:.4} | {mem:.1} % |", policy_dir.display(), point.metric);
    }
    Ok(())
}
