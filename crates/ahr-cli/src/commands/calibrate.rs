//! `ahr calibrate`: the price on memory at which a policy's deterministic decisions hold a target
//! on the task's training sequences (`ahr_env::calibrate`), written into a copy of the policy.

use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::args::Common;
use crate::device::device;

/// Calibrate the policy in `policy` to `target` (default: its budget) and write it to `out`.
#[allow(clippy::too_many_arguments)]
pub fn calibrate(
    model_dir: &Path,
    env: &Path,
    policy: &Path,
    target: Option<f64>,
    sequences: usize,
    seed: u64,
    out: &Path,
    common: &Common,
) -> Result<()> {
    if out.exists() && std::fs::canonicalize(out).ok() == std::fs::canonicalize(policy).ok() {
        bail!("--out must be another directory than --policy (the policy as trained is kept)");
    }
    let dev = device(&common.device)?;
    let ahr_train::EnvRun { spec, model, task } = ahr_train::EnvRun::load(model_dir, env, &dev)?;
    let fp = ahr_tpa::checkpoint::fingerprint(model_dir)?;
    let (mut manifest, net) = ahr_policy::export::load_policy(policy, model.config(), &fp, &dev)?;
    spec.check_policy(&manifest).map_err(|e| anyhow::anyhow!("policy {}: {e}", policy.display()))?;
    if manifest.evict.is_some() {
        bail!(
            "policy {}: a learned evicter holds its budget by construction; there is nothing to calibrate",
            policy.display()
        );
    }
    let Some(target) = target.or(manifest.budget) else {
        bail!("policy {} has no budget: give the memory target with --target", policy.display());
    };
    let pspec = spec.for_policy(&manifest);
    let (calibration, _) = ahr_env::calibrate(
        &model,
        &task,
        &pspec,
        &net,
        &manifest.norm,
        manifest.policy.window,
        target,
        sequences,
        seed,
        &dev,
        |price, m| eprintln!("price {price:+.5}: {:.3} % of the exact memory", 100.0 * m),
    )
    .with_context(|| format!("calibrating {}", policy.display()))?;
    println!(
        "price {:+.5}: the deterministic policy holds {:.3} % of the exact memory on {sequences} training sequences \
         (uncalibrated {:.3} %, target {:.3} %)",
        calibration.price,
        100.0 * calibration.memory,
        100.0 * calibration.memory_uncalibrated,
        100.0 * target
    );
    manifest.calibration = Some(calibration);
    // The weights are the policy's own; the price travels in the manifest only.
    ahr_policy::export::save_policy(out, &manifest, &net)?;
    println!("calibrated policy: {}", out.display());
    Ok(())
}
