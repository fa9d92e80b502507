//! Nested-rank pretraining (DESIGN.md §3): AdamW, warmup + cosine, global grad-norm clipping, a
//! storage choice sampled per (token, layer) every step, periodic validation, atomic checkpoints
//! and exact resume. Batches and choices at step `s` depend only on (seed, s), so a resumed run
//! follows the same trajectory as an uninterrupted one.
//!
//! Data-parallel over processes (DESIGN.md §11, [`run_distributed`]): every rank draws the same
//! global batch and choices, keeps its contiguous shard of the sequences, and the gradients are
//! summed over ranks before clipping and AdamW, each rank's loss being its shard's summed
//! log-likelihood over the *global* number of labelled positions — so N ranks take the step one
//! process takes on the whole batch (up to float summation order). Rank 0 alone reads and writes
//! files; the others receive the initial weights and any checkpoint from it.

use std::path::{Path, PathBuf};
use std::time::Instant;

use ahr_dist::{Comm, all_reduce_grads, broadcast_module, module_digest, share_files};
use ahr_tasks::Task;
use ahr_tasks::batch::{Split, rng_for};
use ahr_tpa::checkpoint::{load_record, save_model, save_record, write_json};
use ahr_tpa::grad::clip_global_norm;
use ahr_tpa::{ChoiceSpec, Choices, Invalid, Model, ModelConfig};
use anyhow::{Context, Result, bail};
use burn::module::Module;
use burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::Device;
use rand::RngExt;
use serde::{Deserialize, Serialize};

use crate::evaluate::{EvalReport, HeadAt, evaluate, label_logprobs_with};
use crate::files::{EnvFile, ModelFile};

/// How storage choices are sampled during pretraining.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NestedConfig {
    /// Fraction of sequences trained with the exact choice everywhere.
    pub exact_fraction: f64,
    /// Sampling weight per menu option for the other sequences (empty = uniform).
    pub option_weights: Vec<f64>,
    /// Steps trained with the exact choice only before nested sampling starts: the model
    /// first learns the task (MQAR's induction circuit), then the low-rank options.
    pub exact_warmup_steps: u64,
}

impl Default for NestedConfig {
    fn default() -> Self {
        Self { exact_fraction: 0.5, option_weights: Vec::new(), exact_warmup_steps: 0 }
    }
}

/// What a pretraining step minimises.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Objective {
    /// The task's loss over labelled positions under sampled storage choices (nested training).
    #[default]
    Task,
    /// Factor fitting: the menu's `rank:ρ` options' K/V fitted to the exact option's by squared
    /// error, layer inputs and teachers from the exact forward ([`Model::factor_fit_loss`]). Only
    /// the key/value factor projections move, so the exact choice answers as before; what a model
    /// trained with the exact choice alone needs to get working rank options back.
    FactorFit,
    /// Factor fitting with each key's error counted by the attention scores it moves under the
    /// batch's exact queries (per head `ΔKᵀ·E[q qᵀ]·ΔK`): error in directions no query reads is
    /// free. Values as in `factor-fit`.
    ScoreFit,
}

impl Objective {
    /// One of the factor-fitting objectives.
    pub fn fits_factors(self) -> bool {
        matches!(self, Objective::FactorFit | Objective::ScoreFit)
    }
}

/// The pretraining recipe (`[pretrain]` in a model preset).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PretrainConfig {
    /// Optimizer steps.
    pub steps: u64,
    /// Sequences per step.
    pub batch_size: usize,
    /// Peak learning rate.
    pub learning_rate: f64,
    /// Final learning rate as a fraction of the peak (cosine floor).
    pub min_lr_ratio: f64,
    /// Linear warmup steps.
    pub warmup_steps: u64,
    /// AdamW decoupled weight decay.
    pub weight_decay: f64,
    /// AdamW β1.
    pub beta1: f64,
    /// AdamW β2.
    pub beta2: f64,
    /// Global gradient-norm clip (0 = off).
    pub max_grad_norm: f64,
    /// Validate (exact choice) every this many steps (0 = only at the end).
    pub eval_every: u64,
    /// Checkpoint every this many steps.
    pub checkpoint_every: u64,
    /// Sequences per evaluation batch.
    pub eval_batch_size: usize,
    /// Storage-choice sampling.
    pub nested: NestedConfig,
    /// What each step minimises (`"task"`, `"factor-fit"` or `"score-fit"`).
    pub objective: Objective,
}

impl Default for PretrainConfig {
    fn default() -> Self {
        Self {
            steps: 2000,
            batch_size: 32,
            learning_rate: 1e-3,
            min_lr_ratio: 0.1,
            warmup_steps: 100,
            weight_decay: 0.1,
            beta1: 0.9,
            beta2: 0.95,
            max_grad_norm: 1.0,
            eval_every: 250,
            checkpoint_every: 250,
            eval_batch_size: 64,
            nested: NestedConfig::default(),
            objective: Objective::Task,
        }
    }
}

impl PretrainConfig {
    /// Check ranges against the model's menu.
    pub fn validate(&self, model: &ModelConfig) -> std::result::Result<(), Invalid> {
        for (name, v) in [
            ("batch_size", self.batch_size as u64),
            ("eval_batch_size", self.eval_batch_size as u64),
            ("checkpoint_every", self.checkpoint_every),
        ] {
            if v == 0 {
                return Err(Invalid::new(format!("`{name}`"), "must be at least 1, found 0"));
            }
        }
        if self.learning_rate.is_nan() || self.learning_rate <= 0.0 {
            return Err(Invalid::new("`learning_rate`", format!("must be > 0, found {}", self.learning_rate)));
        }
        for (name, v) in [("min_lr_ratio", self.min_lr_ratio), ("nested.exact_fraction", self.nested.exact_fraction)] {
            if !(0.0..=1.0).contains(&v) {
                return Err(Invalid::new(format!("`{name}`"), format!("must lie in [0, 1], found {v}")));
            }
        }
        if self.objective.fits_factors() && model.fit_ranks().is_empty() {
            return Err(Invalid::new(
                "`objective`",
                "factor fitting needs `rank:ρ` options below the exact option in the model's menu",
            ));
        }
        let w = &self.nested.option_weights;
        if !w.is_empty()
            && (w.len() != model.menu.len() || w.iter().any(|x| x.is_nan() || *x < 0.0) || w.iter().sum::<f64>() <= 0.0)
        {
            return Err(Invalid::new(
                "`nested.option_weights`",
                format!("needs one non-negative weight per menu option ({}), not all zero", model.menu.len()),
            ));
        }
        Ok(())
    }

    /// Settings that run but undo what nested pretraining is for, to say before a run starts:
    /// with `nested.exact_fraction = 1` only the exact choice trains, so a menu's `rank:ρ` options
    /// get no useful gradient — weight decay shrinks their factor projections and the residual
    /// stream moves away from them (a model that lost them this way answered ~0 at every rank and
    /// did not recover in 1500 nested steps: docs/BENCHMARKS.md, "Key aliases").
    pub fn warnings(&self, model: &ModelConfig) -> Vec<String> {
        let factors = model.menu.iter().any(|o| matches!(o, ahr_tpa::StoreOption::Rank(_)));
        if factors && self.nested.exact_fraction >= 1.0 && self.objective == Objective::Task {
            vec![format!(
                "nested.exact_fraction = 1 trains the exact choice only: the menu's rank options get no training{}, \
                 so they may stop working; keep it below 1 in some stage after this one",
                if self.weight_decay > 0.0 { " (and weight decay shrinks their factors)" } else { "" }
            )]
        } else {
            Vec::new()
        }
    }

    /// The choice periodic validation runs under: the exact one, or under factor fitting (which
    /// leaves it unchanged) the lowest rank fitted.
    pub fn validation_spec(&self, model: &ModelConfig) -> ChoiceSpec {
        match (self.objective, model.fit_ranks().iter().min()) {
            (o, Some(&r)) if o.fits_factors() => ChoiceSpec::Uniform(ahr_tpa::StoreOption::Rank(r)),
            _ => ChoiceSpec::Exact,
        }
    }

    /// Learning rate at `step`: linear warmup, then cosine down to `min_lr_ratio · lr`.
    pub fn lr_at(&self, step: u64) -> f64 {
        let peak = self.learning_rate;
        if step < self.warmup_steps {
            return peak * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let span = self.steps.saturating_sub(self.warmup_steps).max(1) as f64;
        let progress = ((step - self.warmup_steps) as f64 / span).min(1.0);
        let floor = peak * self.min_lr_ratio;
        floor + 0.5 * (peak - floor) * (1.0 + (std::f64::consts::PI * progress).cos())
    }
}

/// Options of one `ahr pretrain` invocation.
#[derive(Clone, Debug)]
pub struct PretrainArgs {
    /// Model preset file.
    pub model_config: PathBuf,
    /// Env spec file.
    pub env: PathBuf,
    /// Run directory.
    pub out: PathBuf,
    /// Override of `[pretrain] steps`.
    pub steps: Option<u64>,
    /// Seed of data, choices and initialisation.
    pub seed: u64,
    /// Continue from `out/checkpoint`.
    pub resume: bool,
    /// Start from this model directory's weights (same model config, the RoPE base aside) instead
    /// of a fresh initialisation: fine-tuning, e.g. onto a harder task variant or, with a larger
    /// `rope_base`, onto reading further back.
    pub init: Option<PathBuf>,
    /// Stop after this many steps in this invocation, leaving a checkpoint to `--resume` from.
    pub stop_after: Option<u64>,
}

/// What the step callback of [`run`] sees after every optimizer step.
#[derive(Clone, Debug, Serialize)]
pub struct StepReport {
    /// Steps done (1-based).
    pub step: u64,
    /// Steps of the whole run.
    pub total_steps: u64,
    /// Training loss of this step.
    pub loss: f64,
    /// Learning rate of this step.
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Training tokens per second in this invocation.
    pub tokens_per_sec: f64,
    /// Held-out validation under the exact choice, on validation steps.
    pub validation: Option<EvalReport>,
}

/// Everything that defines a run; written to `pretrain.json` and compared on `--resume`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResolvedRun {
    /// Model preset (with overrides applied).
    pub model_file: ModelFile,
    /// Env spec.
    pub env: EnvFile,
    /// Seed.
    pub seed: u64,
    /// Fingerprint of the model directory the weights started from (`--init`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct TrainState {
    step: u64,
    tokens: u64,
}

const CHECKPOINT_DIR: &str = "checkpoint";

/// Storage choices for a training batch: whole sequences at the exact option with probability
/// `exact_fraction`, otherwise an independent draw per (token, layer).
pub fn sample_choices(
    cfg: &ModelConfig,
    nested: &NestedConfig,
    seed: u64,
    step: u64,
    batch: usize,
    seq_len: usize,
) -> Choices {
    let mut rng = rng_for(seed ^ 0x6368_6f69_6365_7300, Split::Train, step);
    let weights =
        if nested.option_weights.is_empty() { vec![1.0; cfg.menu.len()] } else { nested.option_weights.clone() };
    let exact_fraction = if step < nested.exact_warmup_steps { 1.0 } else { nested.exact_fraction };
    let exact_rows: Vec<bool> = (0..batch).map(|_| rng.random::<f64>() < exact_fraction).collect();
    let mut choices = Choices::sample(batch, seq_len, cfg.n_layers, &weights, &mut rng);
    for (b, _) in exact_rows.iter().enumerate().filter(|(_, e)| **e) {
        for t in 0..seq_len {
            for l in 0..cfg.n_layers {
                choices.set(b, t, l, cfg.exact_index());
            }
        }
    }
    choices
}

/// Wall-clock seconds spent in each phase of training steps (for `ahr bench train`).
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct StepTimings {
    /// Forward pass and loss, read back to the host.
    pub forward: f64,
    /// Backward pass.
    pub backward: f64,
    /// Summing the gradients over ranks (0 in one process).
    pub reduce: f64,
    /// Global grad-norm clipping and the AdamW update.
    pub update: f64,
}

/// One optimizer step on `batch`: `objective`'s loss (over labelled positions under `choices`, or
/// the factor fit over every position), backward, global grad-norm clipping, AdamW. Returns the new model, the loss and the gradient norm before
/// clipping; adds each phase's time to `timings`.
///
/// Data-parallel: with a `comm` of several ranks, `batch` and `choices` are this rank's shard of
/// the global batch; the loss is the shard's summed log-likelihood over the global labelled count
/// and the gradients are summed over ranks before clipping, so every rank takes the same step
/// (the returned loss is the global mean). Every rank must call it at every step.
pub fn train_step(
    model: Model,
    optim: &mut ModuleOptimizer,
    batch: &ahr_tasks::Batch,
    choices: &Choices,
    lr: f64,
    max_grad_norm: f64,
    device: &Device,
    head_at: HeadAt,
    objective: Objective,
    timings: &mut StepTimings,
    comm: &Comm,
) -> Result<(Model, f64, f64)> {
    let t0 = Instant::now();
    let loss = match objective {
        Objective::Task => task_loss(&model, batch, choices, device, head_at, comm)?,
        Objective::FactorFit | Objective::ScoreFit => {
            let tokens = model.tokens(&batch.inputs, batch.batch_size, batch.seq_len, device)?;
            let scores = objective == Objective::ScoreFit;
            let loss = model.factor_fit_loss(tokens, &model.config().fit_ranks(), scores)?;
            match comm.is_distributed() {
                // Each shard's mean weighted by its share of the sequences: the global mean.
                true => loss * (batch.batch_size as f64 / comm.sum(batch.batch_size as f64)) as f32,
                false => loss,
            }
        }
    };
    let loss_value = comm.sum(loss.clone().into_scalar::<f32>() as f64);
    if !loss_value.is_finite() {
        bail!("loss became {loss_value} (lr {lr:.2e}); lower learning_rate");
    }
    let t1 = Instant::now();
    let grads = loss.backward();
    let t2 = Instant::now();
    let mut grads = GradientsParams::from_grads(grads, &model);
    all_reduce_grads(comm, &model, &mut grads);
    let t3 = Instant::now();
    let grad_norm = clip_global_norm(&model, &mut grads, max_grad_norm);
    let model = optim.step(lr, model, grads);
    let t4 = Instant::now();
    timings.forward += (t1 - t0).as_secs_f64();
    timings.backward += (t2 - t1).as_secs_f64();
    timings.reduce += (t3 - t2).as_secs_f64();
    timings.update += (t4 - t3).as_secs_f64();
    Ok((model, loss_value, grad_norm))
}

/// The task's loss: mean negative log-likelihood over the batch's labelled positions (a shard's
/// sum over the global count when data-parallel).
fn task_loss(
    model: &Model,
    batch: &ahr_tasks::Batch,
    choices: &Choices,
    device: &Device,
    head_at: HeadAt,
    comm: &Comm,
) -> Result<burn::tensor::Tensor<1>> {
    let labelled = comm.sum(batch.labelled() as f64);
    if labelled == 0.0 {
        bail!("the training batch has no labelled positions");
    }
    Ok(match label_logprobs_with(model, batch, choices, device, head_at)? {
        // One process: the mean, exactly as always (runs and their resumes stay bit-identical).
        Some((logp, _, _)) if !comm.is_distributed() => logp.mean().neg(),
        Some((logp, _, _)) => logp.sum().neg() / labelled as f32,
        None => bail!("this rank's shard of the training batch has no labelled positions; use a larger batch_size"),
    })
}

/// AdamW as configured by the recipe.
pub fn optimizer(pc: &PretrainConfig) -> ModuleOptimizer {
    AdamWConfig::new()
        .with_beta_1(pc.beta1 as f32)
        .with_beta_2(pc.beta2 as f32)
        .with_epsilon(1e-8)
        .with_weight_decay(pc.weight_decay as f32)
        .init()
}

/// Result of a pretraining run.
#[derive(Debug)]
pub struct PretrainOutcome {
    /// Steps done in this invocation.
    pub steps_run: u64,
    /// Final validation under the exact choice (`None` when stopped early by `stop_after`).
    pub final_eval: Option<EvalReport>,
    /// Training tokens per second in this invocation.
    pub tokens_per_sec: f64,
    /// [`ahr_dist::module_digest`] of the weights at the end of this invocation: the same on
    /// every rank of a data-parallel run.
    pub param_digest: u64,
}

fn save_checkpoint(dir: &Path, model: &Model, optim: &ModuleOptimizer, state: &TrainState) -> Result<()> {
    let tmp = dir.join(format!("{CHECKPOINT_DIR}.tmp"));
    let old = dir.join(format!("{CHECKPOINT_DIR}.old"));
    let live = dir.join(CHECKPOINT_DIR);
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    save_record(model.clone(), &tmp.join("model.bpk"))?;
    optim.save(tmp.join("optim.bpk")).map_err(|e| anyhow::anyhow!("saving optimizer state: {e}"))?;
    write_json(&tmp.join("state.json"), state)?;
    // Swap directories so that a crash leaves either the old or the new checkpoint whole.
    let _ = std::fs::remove_dir_all(&old);
    if live.exists() {
        std::fs::rename(&live, &old)?;
    }
    std::fs::rename(&tmp, &live)?;
    let _ = std::fs::remove_dir_all(&old);
    Ok(())
}

fn checkpoint_dir(out: &Path) -> Option<PathBuf> {
    [CHECKPOINT_DIR, "checkpoint.old"].iter().map(|n| out.join(n)).find(|p| p.join("state.json").is_file())
}

/// Build the resolved run from the files and flags.
pub fn resolve(args: &PretrainArgs) -> Result<(ResolvedRun, Task)> {
    let mut model_file = ModelFile::load(&args.model_config)?;
    if let Some(steps) = args.steps {
        model_file.pretrain.steps = steps;
    }
    let env = EnvFile::load(&args.env)?;
    let task = ahr_env::load_task(&env, &args.env, &model_file.model)
        .map_err(|e| anyhow::anyhow!("{e} ({})", args.model_config.display()))?;
    let init = match &args.init {
        Some(dir) => Some(ahr_tpa::checkpoint::fingerprint(dir).with_context(|| format!("--init {}", dir.display()))?),
        None => None,
    };
    Ok((ResolvedRun { model_file, env, seed: args.seed, init }, task))
}

/// Run (or resume) pretraining; writes the model directory, metrics and the rank curve to `out`.
/// `on_step` sees every step (progress display, early logging); it cannot change the run.
pub fn run(args: &PretrainArgs, device: &Device, on_step: impl FnMut(&StepReport)) -> Result<PretrainOutcome> {
    run_distributed(args, device, &Comm::single(), on_step)
}

/// [`run`] as one rank of a data-parallel group (module docs): every rank calls it with the same
/// arguments; rank 0 alone reads checkpoints, writes files and calls `on_step`. An error on one
/// rank leaves the others waiting in a collective: end the job with [`Comm::abort`] (the CLI does).
pub fn run_distributed(
    args: &PretrainArgs,
    device: &Device,
    comm: &Comm,
    mut on_step: impl FnMut(&StepReport),
) -> Result<PretrainOutcome> {
    let (run, task) = resolve(args)?;
    let out = &args.out;
    let cfg = run.model_file.model.clone();
    let pc = run.model_file.pretrain.clone();
    if pc.batch_size < comm.size() {
        bail!(
            "batch_size {} is smaller than the number of ranks ({}): every rank needs a sequence",
            pc.batch_size,
            comm.size()
        );
    }
    let train_device = device.clone().autodiff();
    device.seed(run.seed);

    let mut model = Model::new(&cfg, &train_device);
    let mut optim = optimizer(&pc);
    let mut state = TrainState { step: 0, tokens: 0 };
    let run_file = out.join("pretrain.json");
    // Records load lazily from their files: a rank's copy of rank 0's checkpoint lives as long as the run.
    let shared_checkpoint;
    if args.resume {
        let mut ckpt = PathBuf::new();
        if comm.is_root() {
            let saved: ResolvedRun = serde_json::from_str(
                &std::fs::read_to_string(&run_file)
                    .with_context(|| format!("--resume: cannot read {}", run_file.display()))?,
            )
            .with_context(|| format!("--resume: {} is corrupt", run_file.display()))?;
            if saved != run {
                bail!(
                    "--resume: the model preset, env or seed differ from the run in {} (see {}); start a new --out instead",
                    out.display(),
                    run_file.display()
                );
            }
            ckpt = checkpoint_dir(out).with_context(|| format!("--resume: no checkpoint in {}", out.display()))?;
        }
        shared_checkpoint = share_files(comm, &ckpt, &["model.bpk", "optim.bpk", "state.json"])?;
        let ckpt = shared_checkpoint.dir();
        model = load_record(model, &ckpt.join("model.bpk"))?;
        optim = optim
            .load(ckpt.join("optim.bpk"))
            .map_err(|e| anyhow::anyhow!("{}: {e}", ckpt.join("optim.bpk").display()))?;
        state = serde_json::from_str(&std::fs::read_to_string(ckpt.join("state.json"))?)
            .with_context(|| format!("{}: corrupt", ckpt.join("state.json").display()))?;
    } else if comm.is_root() {
        if out.join(CHECKPOINT_DIR).exists() {
            bail!("{} already holds a run; pass --resume to continue it or choose another --out", out.display());
        }
        if let Some(dir) = &args.init {
            let from = ahr_tpa::ModelConfig::load_json(&dir.join(ahr_tpa::checkpoint::CONFIG_FILE))?;
            // The RoPE base may change (long-context fine-tuning raises it: no weight depends on it).
            let shape = ahr_tpa::ModelConfig { rope_base: cfg.rope_base, ..from };
            if shape != cfg {
                bail!(
                    "--init {}: its model config differs from {}'s; fine-tuning needs the same shape \
                     (only rope_base may change)",
                    dir.display(),
                    args.model_config.display()
                );
            }
            if from.rope_base != cfg.rope_base && pc.objective.fits_factors() {
                bail!(
                    "--init {}: factor fitting keeps the exact choice's answers, so the RoPE base must stay {} \
                     ({} says {})",
                    dir.display(),
                    from.rope_base,
                    args.model_config.display(),
                    cfg.rope_base
                );
            }
            model = load_record(model, &dir.join(ahr_tpa::checkpoint::WEIGHTS_FILE))?;
        }
        std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
        write_json(&run_file, &run)?;
    }
    // Rank 0's weights everywhere (fresh, `--init` or resumed alike).
    model = broadcast_module(comm, model);
    let mut metrics_log = match comm.is_root() {
        true => Some(std::fs::OpenOptions::new().create(true).append(true).open(out.join("metrics.jsonl"))?),
        false => None,
    };

    let start = Instant::now();
    let rate = |tokens: u64| tokens as f64 / start.elapsed().as_secs_f64().max(1e-9);
    let (start_step, start_tokens) = (state.step, state.tokens);
    let eval_model = |m: &Model| evaluate(&m.valid(), &task, pc.validation_spec(&cfg), pc.eval_batch_size, device);

    let stop_at = args.stop_after.map_or(pc.steps, |n| (start_step + n).min(pc.steps));
    while state.step < stop_at {
        let step = state.step;
        let batch = task.train_batch(run.seed, step, pc.batch_size);
        let choices = sample_choices(&cfg, &pc.nested, run.seed, step, batch.batch_size, batch.seq_len);
        let tokens = (batch.batch_size * batch.seq_len) as u64;
        let (batch, choices) = match comm.is_distributed() {
            true => (batch.rows(comm.shard(batch.batch_size)), choices.rows(comm.shard(batch.batch_size))),
            false => (batch, choices),
        };
        let lr = pc.lr_at(step);
        let (next, loss_value, grad_norm) = train_step(
            model,
            &mut optim,
            &batch,
            &choices,
            lr,
            pc.max_grad_norm,
            &train_device,
            HeadAt::Labelled,
            pc.objective,
            &mut StepTimings::default(),
            comm,
        )
        .with_context(|| format!("step {step}; resume from {}", out.join(CHECKPOINT_DIR).display()))?;
        model = next;
        state.step += 1;
        state.tokens += tokens;
        let tps = rate(state.tokens - start_tokens);
        let mut line = serde_json::json!({"step": state.step, "loss": loss_value, "lr": lr, "grad_norm": grad_norm, "tokens_per_sec": tps});

        let last = state.step == pc.steps;
        let checkpoint = state.step.is_multiple_of(pc.checkpoint_every) || last || state.step == stop_at;
        if checkpoint && comm.is_distributed() && !comm.agree(module_digest(&model)) {
            bail!("step {}: the ranks' parameters differ; data-parallel steps must stay identical", state.step);
        }
        let Some(metrics_log) = metrics_log.as_mut() else { continue };
        let mut validation = None;
        if pc.eval_every > 0 && state.step.is_multiple_of(pc.eval_every) && !last {
            let r = eval_model(&model)?;
            line["valid_loss"] = r.loss.into();
            line["valid_accuracy"] = r.accuracy.into();
            validation = Some(r);
        }
        on_step(&StepReport {
            step: state.step,
            total_steps: pc.steps,
            loss: loss_value,
            lr,
            grad_norm,
            tokens_per_sec: tps,
            validation,
        });
        use std::io::Write;
        writeln!(metrics_log, "{line}")?;
        if checkpoint {
            save_checkpoint(out, &model, &optim, &state)?;
        }
    }
    if state.step < pc.steps || !comm.is_root() {
        return Ok(PretrainOutcome {
            steps_run: state.step - start_step,
            final_eval: None,
            tokens_per_sec: rate(state.tokens - start_tokens),
            param_digest: module_digest(&model),
        });
    }
    let tokens_per_sec = rate(state.tokens - start_tokens);
    let param_digest = module_digest(&model);

    let model = model.valid();
    save_model(&model, out)?;
    let mut curve = serde_json::Map::new();
    let mut final_eval = None;
    for spec in ChoiceSpec::rank_curve(&cfg) {
        let r = evaluate(&model, &task, spec, pc.eval_batch_size, device)?;
        curve.insert(spec.to_string(), serde_json::to_value(&r).expect("report should serialise"));
        if spec == ChoiceSpec::Exact {
            final_eval = Some(r);
        }
    }
    write_json(&out.join("rank_curve.json"), &curve)?;
    Ok(PretrainOutcome { steps_run: state.step - start_step, final_eval, tokens_per_sec, param_digest })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_then_decays_to_the_floor() {
        let pc = PretrainConfig {
            steps: 110,
            warmup_steps: 10,
            learning_rate: 1.0,
            min_lr_ratio: 0.1,
            ..Default::default()
        };
        assert!((pc.lr_at(0) - 0.1).abs() < 1e-12);
        assert!((pc.lr_at(9) - 1.0).abs() < 1e-12);
        assert!((pc.lr_at(10) - 1.0).abs() < 1e-12);
        assert!((pc.lr_at(60) - 0.55).abs() < 1e-12);
        assert!((pc.lr_at(110) - 0.1).abs() < 1e-12);
    }

    #[test]
    fn choices_mix_exact_rows_and_sampled_rows() {
        let cfg = ModelConfig::tiny();
        let nested = NestedConfig { exact_fraction: 0.5, ..Default::default() };
        let c = sample_choices(&cfg, &nested, 1, 0, 40, 9);
        assert_eq!(c, sample_choices(&cfg, &nested, 1, 0, 40, 9));
        let exact_rows =
            (0..40).filter(|&b| (0..9).all(|t| (0..2).all(|l| c.get(b, t, l) == cfg.exact_index()))).count();
        assert!((10..=30).contains(&exact_rows), "{exact_rows} exact rows of 40");
        let only_drop =
            NestedConfig { exact_fraction: 0.0, option_weights: vec![1.0, 0.0, 0.0, 0.0, 0.0], exact_warmup_steps: 3 };
        let c = sample_choices(&cfg, &only_drop, 1, 3, 4, 9);
        assert!((0..4).all(|b| (0..9).all(|t| c.get(b, t, 0) == 0)));
        let warm = sample_choices(&cfg, &only_drop, 1, 2, 4, 9);
        assert_eq!(warm, Choices::exact(&cfg, 4, 9), "exact only during the warmup");
    }

    #[test]
    fn factor_fit_needs_rank_options_and_validates_under_the_lowest() {
        let cfg = ModelConfig::tiny();
        let fit = PretrainConfig { objective: Objective::FactorFit, ..Default::default() };
        assert_eq!(cfg.fit_ranks(), vec![1, 2, 3]);
        assert!(fit.validate(&cfg).is_ok());
        assert_eq!(fit.validation_spec(&cfg).to_string(), "uniform:rank:1");
        assert_eq!(PretrainConfig::default().validation_spec(&cfg), ChoiceSpec::Exact);
        // Exact-only factor fitting trains the options, so nothing to warn about.
        let exact_only = NestedConfig { exact_fraction: 1.0, ..Default::default() };
        assert!(PretrainConfig { nested: exact_only, ..fit.clone() }.warnings(&cfg).is_empty());
        let dense = ModelConfig { menu: vec![ahr_tpa::StoreOption::Drop, ahr_tpa::StoreOption::Full], ..cfg };
        let err = fit.validate(&dense).unwrap_err().to_string();
        assert!(err.contains("factor fitting") && err.contains("rank"), "{err}");
        let scores = PretrainConfig { objective: Objective::ScoreFit, ..Default::default() };
        assert!(scores.validate(&dense).is_err());
        assert_eq!(scores.validation_spec(&cfg).to_string(), "uniform:rank:1");
    }

    #[test]
    fn exact_only_training_of_a_menu_with_ranks_is_warned_about() {
        let cfg = ModelConfig::tiny();
        assert!(cfg.menu.iter().any(|o| matches!(o, ahr_tpa::StoreOption::Rank(_))));
        let exact_only = |wd: f64| PretrainConfig {
            weight_decay: wd,
            nested: NestedConfig { exact_fraction: 1.0, ..Default::default() },
            ..Default::default()
        };
        let w = exact_only(0.1).warnings(&cfg);
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("rank options") && w[0].contains("weight decay"), "{w:?}");
        assert!(!exact_only(0.0).warnings(&cfg)[0].contains("weight decay"));
        assert!(PretrainConfig::default().warnings(&cfg).is_empty(), "nested by default: nothing to say");
        // A menu without factor options has nothing to lose.
        let dense = ModelConfig { menu: vec![ahr_tpa::StoreOption::Drop, ahr_tpa::StoreOption::Full], ..cfg };
        assert!(exact_only(0.1).warnings(&dense).is_empty());
    }
}
