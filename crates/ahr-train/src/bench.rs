//! Pretraining throughput, measured the way `ahr bench train` reports it: the same training step
//! of a preset on the same batches, timed after one warm-up step, and the same step in plain
//! PyTorch eager (`bench/pytorch_reference.py`) for a reference.

use std::path::{Path, PathBuf};
use std::time::Instant;

use ahr_tasks::{Batch, Task};
use ahr_tpa::{Model, cost};
use anyhow::{Context, Result, bail};
use burn::tensor::Device;
use serde::Serialize;

use crate::evaluate::HeadAt;
use crate::files::ModelFile;
use crate::pretrain::{StepTimings, optimizer, sample_choices, train_step};

/// One preset on one device.
#[derive(Clone, Debug, Serialize)]
pub struct TrainRun {
    /// The preset file.
    pub model_config: PathBuf,
    /// `cpu`, `tch-cpu`, … or `pytorch-eager` / `pytorch-eager-cuda` (the reference script).
    pub device: String,
    /// Attention family.
    pub attention: String,
    /// Parameters (0 for the reference).
    pub params: usize,
    /// The exact choice's KV bytes per token.
    pub kv_bytes_per_token_exact: usize,
    /// Timed steps.
    pub steps: u64,
    /// Training tokens per second.
    pub tokens_per_sec: f64,
    /// Against the first run of the comparison (set by the caller).
    pub ratio_to_first: f64,
    /// Seconds per step in forward, backward and update.
    pub seconds_per_step: StepTimings,
}

/// Train `path`'s preset for `steps` timed steps (after one warm-up step) on `task`'s batches on
/// `dev` (`name` is how the device is reported).
pub fn train_throughput(
    path: &Path,
    name: &str,
    dev: &Device,
    task: &Task,
    steps: u64,
    head_at: HeadAt,
) -> Result<TrainRun> {
    if steps == 0 {
        bail!("--steps must be at least 1");
    }
    let train_dev = dev.clone().autodiff();
    let file = ModelFile::load(path)?;
    let (cfg, pc) = (&file.model, &file.pretrain);
    if task.vocab_needed() > cfg.vocab_size {
        bail!(
            "{}: vocab_size {} is smaller than the task needs ({})",
            path.display(),
            cfg.vocab_size,
            task.vocab_needed()
        );
    }
    let mut model = Model::new(cfg, &train_dev);
    let params = burn::module::Module::num_params(&model);
    let mut optim = optimizer(pc);
    let mut tokens = 0u64;
    let mut start = Instant::now();
    let mut timings = StepTimings::default();
    for step in 0..=steps {
        if step == 1 {
            // Step 0 warms up allocations and caches; the clock starts after it.
            start = Instant::now();
            tokens = 0;
            timings = StepTimings::default();
        }
        let batch = task.train_batch(0, step, pc.batch_size);
        let choices = sample_choices(cfg, &pc.nested, 0, step, batch.batch_size, batch.seq_len);
        let (next, _, _) = train_step(
            model,
            &mut optim,
            &batch,
            &choices,
            pc.lr_at(step),
            pc.max_grad_norm,
            &train_dev,
            head_at,
            pc.objective,
            &mut timings,
            &ahr_dist::Comm::single(),
        )?;
        model = next;
        tokens += (batch.batch_size * batch.seq_len) as u64;
    }
    let tps = tokens as f64 / start.elapsed().as_secs_f64();
    let per_step = |x: f64| x / steps as f64;
    Ok(TrainRun {
        model_config: path.to_path_buf(),
        device: name.to_string(),
        attention: format!("{:?}", cfg.attention).to_lowercase(),
        params,
        kv_bytes_per_token_exact: cost::exact_bytes_per_token(cfg),
        steps,
        tokens_per_sec: tps,
        ratio_to_first: 1.0,
        seconds_per_step: StepTimings {
            forward: per_step(timings.forward),
            backward: per_step(timings.backward),
            reduce: per_step(timings.reduce),
            update: per_step(timings.update),
        },
    })
}

/// The same training step in plain PyTorch eager (`bench/pytorch_reference.py`, run from the
/// repository root).
#[derive(Debug, Clone)]
pub struct PyTorchReference {
    /// The Python that runs it (with torch installed).
    pub python: PathBuf,
    /// `cpu`, `cuda` or `cuda:N`.
    pub device: String,
}

impl PyTorchReference {
    /// How the reference is reported (`pytorch-eager`, `pytorch-eager-cuda0`).
    pub fn name(&self) -> String {
        match self.device.as_str() {
            "cpu" => "pytorch-eager".to_string(),
            other => format!("pytorch-eager-{}", other.replace(':', "")),
        }
    }

    /// Tokens/s of `path`'s preset for `steps` steps on `task`'s first batch; `envs` are set for
    /// the child process (so both sides of a comparison run with one allocator setting).
    pub fn run(&self, path: &Path, task: &Task, steps: u64, envs: &[(&str, String)]) -> Result<TrainRun> {
        let file = ModelFile::load(path)?;
        let batch = task.train_batch(0, 0, file.pretrain.batch_size);
        let tps = self.tokens_per_sec(&file, &batch, steps, envs)?;
        Ok(TrainRun {
            model_config: path.to_path_buf(),
            device: self.name(),
            attention: format!("{:?}", file.model.attention).to_lowercase(),
            params: 0,
            kv_bytes_per_token_exact: cost::exact_bytes_per_token(&file.model),
            steps,
            tokens_per_sec: tps,
            ratio_to_first: 1.0,
            seconds_per_step: StepTimings::default(),
        })
    }

    fn tokens_per_sec(&self, file: &ModelFile, batch: &Batch, steps: u64, envs: &[(&str, String)]) -> Result<f64> {
        let python = &self.python;
        let script = Path::new("bench/pytorch_reference.py");
        if !script.is_file() {
            bail!("--pytorch: run from the repository root ({} not found)", script.display());
        }
        let tmp = std::env::temp_dir().join(format!("ahr-bench-{}.json", std::process::id()));
        std::fs::write(&tmp, serde_json::to_string(&file.model)?)?;
        let pc = &file.pretrain;
        let exact = if pc.nested.exact_warmup_steps > steps { 1.0 } else { pc.nested.exact_fraction };
        let labelled = (batch.labelled() / batch.batch_size.max(1)).max(1);
        let output = std::process::Command::new(python)
            .arg(script)
            .args(["--config", &tmp.display().to_string()])
            .args(["--batch", &batch.batch_size.to_string(), "--seq-len", &batch.seq_len.to_string()])
            .args(["--labelled", &labelled.to_string(), "--steps", &steps.to_string()])
            .args(["--exact-fraction", &exact.to_string(), "--lr", &pc.learning_rate.to_string()])
            .args(["--device", &self.device])
            .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
            .output()
            .with_context(|| format!("--pytorch: cannot run {}", python.display()))?;
        let _ = std::fs::remove_file(&tmp);
        if !output.status.success() {
            bail!("the PyTorch reference failed: {}", String::from_utf8_lossy(&output.stderr).trim());
        }
        let line = String::from_utf8_lossy(&output.stdout);
        let v: serde_json::Value = serde_json::from_str(line.trim())
            .with_context(|| format!("the PyTorch reference printed `{}`", line.trim()))?;
        v["tokens_per_sec"].as_f64().context("the PyTorch reference printed no tokens_per_sec")
    }
}
