//! Training a rank policy with PPO on the environment an env spec describes, and exporting it
//! (DESIGN.md §5–7): resolve the run (env spec, PPO config, seed, model fingerprint — compared on
//! resume), build the environments, train with checkpoints, export the policy directory and
//! evaluate it deterministically on held-out sequences. [`train_policy_distributed`] runs the same
//! as one rank of a DD-PPO group (rank 0 alone reads and writes files).

use std::path::{Path, PathBuf};

use ahr_dist::{Comm, module_digest, share_files};
use ahr_env::{EnvSpec, PolicyEval, VecEnv, evaluate_policy, make_env};
use ahr_policy::Granularity;
use ahr_policy::export::{FORMAT_VERSION, Manifest, save_policy};
use ahr_ppo::metrics::{Fanout, JsonlSink, MetricsSink, NullSink, TensorBoardSink};
use ahr_ppo::trainer::{IterationReport, TrainError};
use ahr_ppo::{PpoConfig, Trainer};
use ahr_tpa::checkpoint::{fingerprint, write_json};
use anyhow::{Context, Result, bail};
use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::files::{load_env_model, read_toml};

/// Read and check a PPO config file.
pub fn load_ppo_config(path: &Path) -> Result<PpoConfig> {
    let cfg: PpoConfig = read_toml(path)?;
    cfg.validate().map_err(|m| anyhow::anyhow!("{}: {m}", path.display()))?;
    Ok(cfg)
}

/// What defines one policy-training run.
#[derive(Clone, Debug)]
pub struct PolicyRunArgs {
    /// Model directory (from pretraining or a T6 import).
    pub model: PathBuf,
    /// Env spec file.
    pub env: PathBuf,
    /// PPO config file.
    pub config: PathBuf,
    /// Policy directory to export to.
    pub out: PathBuf,
    /// Run directory for TensorBoard logs, metrics and checkpoints (default `runs/<name of out>`).
    pub run_dir: Option<PathBuf>,
    /// Rollout worker threads.
    pub workers: usize,
    /// Seed.
    pub seed: u64,
    /// Continue the run in the run directory from its last checkpoint.
    pub resume: bool,
    /// Override of the config's `total_timesteps`.
    pub total_timesteps: Option<u64>,
    /// Held-out sequences for the final deterministic evaluation (default: all).
    pub eval_examples: Option<usize>,
}

impl PolicyRunArgs {
    /// The run directory: `run_dir`, or `runs/<name of out>`.
    pub fn run_dir(&self) -> PathBuf {
        let name = self.out.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_else(|| "policy".into());
        self.run_dir.clone().unwrap_or_else(|| PathBuf::from("runs").join(name))
    }
}

/// Everything a `train-policy` run is defined by; compared on resume.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResolvedPolicyRun {
    /// PPO config.
    pub ppo: PpoConfig,
    /// Env file.
    pub env: EnvSpec,
    /// Seed.
    pub seed: u64,
    /// Model fingerprint.
    pub model_fingerprint: String,
}

/// The env spec as a PPO config trains on it: a budget and its controller settings given in the
/// PPO config take precedence over the env file's, and a partner baseline pairs the streams.
pub fn merge_ppo(spec: &mut EnvSpec, ppo: &PpoConfig) -> Result<(), ahr_tpa::Invalid> {
    spec.env.paired = ppo.baseline == ahr_ppo::AdvantageBaseline::Partner;
    if ppo.budget.is_some() {
        spec.reward.budget = ppo.budget;
    }
    if ppo.budget_start.is_some() {
        spec.reward.budget_start = ppo.budget_start;
    }
    if let Some(kind) = ppo.budget_kind {
        spec.reward.budget_kind = kind;
    }
    for (from, to) in [
        (ppo.lambda_init, &mut spec.reward.lambda_init),
        (ppo.lambda_lr, &mut spec.reward.lambda_lr),
        (ppo.lambda_kp, &mut spec.reward.lambda_kp),
        (ppo.budget_anneal, &mut spec.reward.budget_anneal),
    ] {
        if let Some(v) = from {
            *to = v;
        }
    }
    spec.validate()
}

/// What a finished run produced.
#[derive(Debug)]
pub struct PolicyRunOutcome {
    /// The exported policy directory.
    pub policy_dir: PathBuf,
    /// The run directory (TensorBoard, metrics, checkpoint, `eval.json`).
    pub run_dir: PathBuf,
    /// The last iteration's report.
    pub last: Option<IterationReport>,
    /// Deterministic held-out evaluation of the exported policy.
    pub eval: PolicyEval,
}

/// Train a rank policy with PPO and export it. `on_iteration` sees every iteration (progress
/// display); checkpoints are written every `checkpoint_every` iterations and at the end.
pub fn train_policy(
    a: &PolicyRunArgs,
    dev: &Device,
    on_iteration: impl FnMut(&IterationReport, u64),
) -> Result<PolicyRunOutcome> {
    let outcome = train_policy_distributed(a, dev, &Comm::single(), on_iteration)?;
    Ok(outcome.run.expect("a single process is rank 0"))
}

/// What one rank of a DD-PPO run ends with.
#[derive(Debug)]
pub struct RankOutcome {
    /// [`ahr_dist::module_digest`] of the final policy: the same on every rank.
    pub policy_digest: u64,
    /// Rank 0's outcome (export and evaluation); `None` on the other ranks.
    pub run: Option<PolicyRunOutcome>,
}

/// [`train_policy`] as one rank of a DD-PPO group: every rank calls it with the same arguments;
/// `total_timesteps` counts all ranks' steps. Rank 0 checks and writes the run directory, logs,
/// checkpoints, exports and evaluates the policy and calls `on_iteration`. On resume the other
/// ranks receive rank 0's checkpoint. An error on one rank leaves the others waiting: end the job
/// with [`Comm::abort`] (the CLI does).
pub fn train_policy_distributed(
    a: &PolicyRunArgs,
    dev: &Device,
    comm: &Comm,
    mut on_iteration: impl FnMut(&IterationReport, u64),
) -> Result<RankOutcome> {
    let mut spec = EnvSpec::load(&a.env)?;
    let model = load_env_model(&a.model, &spec, &a.env, dev)?;
    let fp = fingerprint(&a.model)?;
    let mut ppo = load_ppo_config(&a.config)?;
    merge_ppo(&mut spec, &ppo).map_err(|e| anyhow::anyhow!("{}: {e}", a.config.display()))?;
    if let Some(t) = a.total_timesteps {
        ppo.total_timesteps = t;
    }
    let cfg = model.config().clone();
    let task = ahr_env::load_task(&spec, &a.env, &cfg).map_err(anyhow::Error::msg)?;
    let seq_len = task.train_batch(0, 0, 1).seq_len;
    if spec.env.granularity == Granularity::PerToken && !ppo.num_steps.is_multiple_of(seq_len) {
        bail!(
            "{}: num_steps ({}) must be a multiple of the episode length ({seq_len} tokens)",
            a.config.display(),
            ppo.num_steps
        );
    }
    if spec.env.evict.is_some() {
        let p = &ppo.policy;
        if p.kind != ahr_policy::PolicyKind::Mlp || p.window > 1 || !p.prior.is_empty() || p.prior_table.is_some() {
            bail!(
                "{}: learned eviction ([env] evict) scores candidates with an MLP that starts at TOVA's score \
                 ([policy] prior_logit is its weight): [policy] kind = \"mlp\", window = 1, no prior, no prior_table",
                a.config.display()
            );
        }
    }
    if ppo.calibrate.is_some() && (spec.reward.budget.is_none() || spec.env.evict.is_some()) {
        bail!(
            "{}: calibrate prices the policy to its budget: it needs budget mode (`budget`) and no learned \
             eviction ([env] evict holds its budget by construction)",
            a.config.display()
        );
    }
    // Rank episodes restart at every rollout, so a checkpoint at an iteration boundary resumes exactly.
    ppo.reset_each_iteration = true;
    // The env file's granularity and the policy's window decide the environment (per-layer
    // bandit or per-token decode; stacked observations for attention policies).
    let envs: Vec<Box<dyn VecEnv>> =
        (0..ppo.num_envs).map(|_| make_env(&model, &task, &spec, false, ppo.policy.window, dev)).collect();
    // The rule a prior starts from (one option per action head), checked before anything is written.
    let heads = envs.first().map_or(0, |e| e.heads());
    let prior = (!ppo.policy.prior.is_empty())
        .then(|| {
            let names: Vec<String> = cfg.menu.iter().map(|o| o.to_string()).collect();
            ahr_policy::resolve_prior(&ppo.policy.prior, &names, heads)
        })
        .transpose()
        .map_err(|e| anyhow::anyhow!("{}: {e}", a.config.display()))?;
    let token_prior = ppo
        .policy
        .prior_table
        .as_ref()
        .map(|path| {
            let names: Vec<String> = cfg.menu.iter().map(|o| o.to_string()).collect();
            ahr_policy::PriorTable::load(Path::new(path))?.resolve(&names, cfg.n_layers, cfg.vocab_size)
        })
        .transpose()
        .map_err(|e| anyhow::anyhow!("{}: [policy] prior_table: {e}", a.config.display()))?;
    let run_dir = a.run_dir();
    let resolved =
        ResolvedPolicyRun { ppo: ppo.clone(), env: spec.clone(), seed: a.seed, model_fingerprint: fp.clone() };
    let run_file = run_dir.join("train-policy.json");
    let ckpt = run_dir.join("checkpoint");
    let root = comm.is_root();
    if !root {
        // Nothing to check or write; rank 0 does both.
    } else if a.resume {
        let text = std::fs::read_to_string(&run_file)
            .with_context(|| format!("--resume: cannot read {}", run_file.display()))?;
        let saved: ResolvedPolicyRun =
            serde_json::from_str(&text).with_context(|| format!("{} is corrupt", run_file.display()))?;
        if saved != resolved {
            bail!("--resume: config, env, seed or model differ from the run in {}", run_dir.display());
        }
    } else if ckpt.exists() {
        bail!("{} already holds a run; pass --resume or choose another --run-dir", run_dir.display());
    }
    let mut sink: Box<dyn MetricsSink> = Box::new(NullSink);
    if root {
        std::fs::create_dir_all(&run_dir).with_context(|| format!("cannot create {}", run_dir.display()))?;
        sink = Box::new(Fanout(vec![
            Box::new(TensorBoardSink::new(&run_dir.join("tb"))) as Box<dyn MetricsSink>,
            Box::new(JsonlSink::new(&run_dir.join("metrics.jsonl"))?),
        ]));
        if !a.resume {
            write_json(&run_file, &resolved)?;
        }
    }

    let budget = ahr_env::BudgetController::from_reward(&spec.reward);
    let lambda = ahr_env::initial_lambda(&spec.reward);
    let mut trainer = Trainer::new(ppo.clone(), envs, a.workers, a.seed, lambda, budget, dev.clone())?;
    if let Some(prefer) = &prior {
        trainer = trainer.with_prior(prefer);
    }
    if let Some(prefer) = &token_prior {
        trainer = trainer.with_token_prior(prefer, cfg.n_layers).map_err(anyhow::Error::msg)?;
    }
    let mut trainer = trainer.with_comm(*comm);
    // Records load lazily from their files: a rank's copy of rank 0's checkpoint lives as long as the run.
    let mut _shared_checkpoint = None;
    if a.resume {
        let shared = share_files(comm, &ckpt, &["policy.bpk", "optim.bpk", "state.json"])
            .with_context(|| format!("--resume: reading the checkpoint in {}", ckpt.display()))?;
        trainer.load_checkpoint(shared.dir())?;
        _shared_checkpoint = Some(shared);
    }
    let every = ppo.checkpoint_every;
    let total = trainer.num_iterations();
    let outcome = trainer.train(sink.as_mut(), |t, r| {
        if !root {
            return Ok(());
        }
        on_iteration(r, total);
        if r.iteration % every == 0 || r.iteration == t.num_iterations() {
            t.save_checkpoint(&ckpt)?;
        }
        Ok::<(), TrainError>(())
    })?;
    let policy_digest = module_digest(&trainer.policy());
    if !root {
        return Ok(RankOutcome { policy_digest, run: None });
    }

    let (obs, dims) = trainer.spec();
    let mut manifest = Manifest {
        format_version: FORMAT_VERSION,
        obs: obs.clone(),
        norm: trainer.state().norm.clone(),
        menu: cfg.menu.clone(),
        granularity: spec.env.granularity,
        n_layers: cfg.n_layers,
        policy: ppo.policy.clone(),
        dims,
        model_fingerprint: fp,
        budget: spec.reward.budget,
        review: spec.env.review,
        evict: spec.env.evict,
        data_fingerprint: task.data_fingerprint().map(str::to_string),
        calibration: None,
    };
    let mut net = trainer.policy();
    if let (Some(sequences), Some(budget)) = (ppo.calibrate, spec.reward.budget) {
        let (calibration, _) = ahr_env::calibrate(
            &model,
            &task,
            &spec,
            &net,
            &manifest.norm,
            ppo.policy.window,
            budget,
            sequences,
            a.seed,
            dev,
            |_, _| {},
        )?;
        net = net.with_deploy_shift(calibration.shift());
        manifest.calibration = Some(calibration);
    }
    save_policy(&a.out, &manifest, &net)?;
    let eval = evaluate_policy(&model, &task, &spec, &net, &manifest.norm, ppo.policy.window, a.eval_examples, dev)?;
    write_json(&run_dir.join("eval.json"), &eval)?;
    let run = PolicyRunOutcome { policy_dir: a.out.clone(), run_dir, last: outcome.reports.last().cloned(), eval };
    Ok(RankOutcome { policy_digest, run: Some(run) })
}
