//! What the examples that read a model on an MQAR env's held-out sequences share.

use std::path::PathBuf;

use ahr_env::EnvSpec;
use ahr_tasks::batch::Batch;
use ahr_tpa::Model;
use anyhow::{Context, Result, bail};
use burn::tensor::Device;

/// A model on its env's first `SEQUENCES` held-out sequences, with their token roles.
#[allow(dead_code)] // each example reads the fields it needs
pub struct HeldOut {
    pub env_path: PathBuf,
    pub spec: EnvSpec,
    pub model: Model,
    pub batch: Batch,
    pub dev: Device,
}

/// Loads `MODEL ENV SEQUENCES` from the command line (`name` for the usage line); the env's task
/// must define token roles (MQAR).
pub fn held_out(name: &str) -> Result<HeldOut> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model, env, sequences] = &args[..] else {
        bail!("usage: {name} MODEL ENV SEQUENCES");
    };
    let (model_dir, env_path) = (PathBuf::from(model), PathBuf::from(env));
    let sequences: usize = sequences.parse().context("SEQUENCES")?;
    let dev = ahr_tpa::device::from_env();
    let ahr_train::EnvRun { spec, model, task } = ahr_train::EnvRun::load(&model_dir, &env_path, &dev)?;
    let batch = task.valid_batch(0, sequences);
    if batch.roles.is_empty() {
        bail!("{}: the task defines no token roles (an MQAR env is needed)", env_path.display());
    }
    Ok(HeldOut { env_path, spec, model, batch, dev })
}
