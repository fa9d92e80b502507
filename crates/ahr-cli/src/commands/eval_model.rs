//! `ahr eval-model`.

use std::path::Path;

use ahr_tasks::Task;
use ahr_tasks::jsonl::JsonlDataset;
use ahr_tpa::ChoiceSpec;
use ahr_tpa::checkpoint::load_model;
use anyhow::{Context, Result, anyhow, bail};

use crate::args::Common;
use crate::device::device;
use ahr_train::evaluate::evaluate;
use ahr_train::files::EnvFile;

/// Evaluate a model directory on an env's held-out data or a JSONL file.
pub fn eval_model(
    model_dir: &Path,
    env: Option<&Path>,
    data: Option<&Path>,
    choices: &str,
    out: &Path,
    common: &Common,
) -> Result<()> {
    let dev = device(&common.device)?;
    let spec: ChoiceSpec = choices.parse().map_err(|e: String| anyhow!("--choices: {e}"))?;
    let model = load_model(model_dir, &dev)?;
    spec.choices(model.config(), 1, 1).map_err(|e| anyhow!("--choices: {e}"))?;
    let task = match (env, data) {
        (Some(env), _) => {
            let file = EnvFile::load(env)?;
            Task::load(&file.task).with_context(|| format!("{}: cannot load the task", env.display()))?
        }
        (None, Some(data)) => Task::Jsonl(JsonlDataset::eval_only(data)?),
        (None, None) => bail!("pass --env or --data"),
    };
    if task.vocab_needed() > model.config().vocab_size {
        bail!(
            "the data uses token ids up to {} but the model's vocabulary is {}",
            task.vocab_needed() - 1,
            model.config().vocab_size
        );
    }
    let report = evaluate(&model, &task, spec, 64, &dev)?;
    super::write_json(out, &report)?;
    println!(
        "{spec}: loss {:.4}, accuracy {:.4}, {} KV bytes/token -> {}",
        report.loss,
        report.accuracy,
        report.kv_bytes_per_token,
        out.display()
    );
    Ok(())
}
