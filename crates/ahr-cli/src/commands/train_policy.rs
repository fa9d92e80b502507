//! `ahr train-policy` and `ahr cartpole`: PPO runs.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use ahr_env::{EnvSpec, History, LayerEnv, RankEnv, VecEnv};
use ahr_policy::Granularity;
use ahr_policy::export::{FORMAT_VERSION, Manifest, save_policy};
use ahr_ppo::metrics::{Fanout, JsonlSink, MetricsSink, TensorBoardSink};
use ahr_ppo::trainer::{Budget, IterationReport, TrainError};
use ahr_ppo::{PpoConfig, Trainer};
use ahr_tasks::Task;
use ahr_tpa::checkpoint::fingerprint;
use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use crate::args::{Common, TrainPolicyArgs};
use crate::cartpole::CartPoleVec;
use crate::device::device;
use crate::files::load_env_model;

/// Read a PPO config file.
pub fn load_ppo_config(path: &Path) -> Result<PpoConfig> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let cfg: PpoConfig = toml::from_str(&text).with_context(|| format!("{}: invalid PPO config", path.display()))?;
    cfg.validate().map_err(|m| anyhow::anyhow!("{}: {m}", path.display()))?;
    Ok(cfg)
}

fn progress_bar(iterations: u64) -> ProgressBar {
    let pb = if std::io::stderr().is_terminal() { ProgressBar::new(iterations) } else { ProgressBar::hidden() };
    pb.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}")
            .expect("template should parse"),
    );
    pb
}

fn sinks(run_dir: &Path) -> Result<Fanout> {
    std::fs::create_dir_all(run_dir).with_context(|| format!("cannot create {}", run_dir.display()))?;
    Ok(Fanout(vec![
        Box::new(TensorBoardSink::new(&run_dir.join("tb"))) as Box<dyn MetricsSink>,
        Box::new(JsonlSink::new(&run_dir.join("metrics.jsonl"))?),
    ]))
}

fn describe(r: &IterationReport) -> String {
    format!(
        "return {:.3} | mem {:.3} | acc {:.3} | λ {:.3} | {:.0} SPS",
        r.episodic_return, r.mem_frac, r.accuracy, r.lambda_mem, r.sps
    )
}

/// A rank environment of the env file's granularity (`held_out`: episodes from the held-out set),
/// stacking the last `window` observations when the policy attends over them.
pub fn make_env(
    model: &ahr_tpa::Model,
    task: &Task,
    spec: &EnvSpec,
    held_out: bool,
    window: usize,
    dev: &burn::tensor::Device,
) -> Box<dyn VecEnv> {
    let (m, t, r, s, d) = (model.clone(), task.clone(), spec.reward.clone(), spec.env.streams, dev.clone());
    let env: Box<dyn VecEnv> = match (spec.env.granularity, held_out) {
        (Granularity::PerToken, false) => Box::new(RankEnv::new(m, t, r, s, d)),
        (Granularity::PerToken, true) => Box::new(RankEnv::new(m, t, r, s, d).held_out()),
        (Granularity::PerLayer, false) => Box::new(LayerEnv::new(m, t, r, s, d)),
        (Granularity::PerLayer, true) => Box::new(LayerEnv::new(m, t, r, s, d).held_out()),
    };
    if window > 1 { Box::new(History::new(env, window)) } else { env }
}

/// Everything a `train-policy` run is defined by; compared on `--resume`.
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

/// Train a rank policy with PPO and export it.
pub fn train_policy(a: &TrainPolicyArgs, common: &Common) -> Result<()> {
    let dev = device(&common.device)?;
    let mut spec = EnvSpec::load(&a.env)?;
    let model = load_env_model(&a.model, &spec, &a.env, &dev)?;
    let fp = fingerprint(&a.model)?;
    let mut ppo = load_ppo_config(&a.config)?;
    if ppo.budget.is_some() {
        spec.reward.budget = ppo.budget;
    }
    // The PPO config's budget settings override the env file's.
    if let Some(kind) = ppo.budget_kind {
        spec.reward.budget_kind = kind;
    }
    for (from, to) in [
        (ppo.lambda_init, &mut spec.reward.lambda_init),
        (ppo.lambda_lr, &mut spec.reward.lambda_lr),
        (ppo.lambda_kp, &mut spec.reward.lambda_kp),
    ] {
        if let Some(v) = from {
            *to = v;
        }
    }
    if let Some(t) = a.total_timesteps {
        ppo.total_timesteps = t;
    }
    let task = Task::load(&spec.task).with_context(|| format!("{}: cannot load the task", a.env.display()))?;
    let cfg = model.config().clone();
    if task.vocab_needed() > cfg.vocab_size {
        bail!("{} needs a vocabulary of {} but the model has {}", a.env.display(), task.vocab_needed(), cfg.vocab_size);
    }
    let seq_len = task.train_batch(0, 0, 1).seq_len;
    if spec.env.granularity == Granularity::PerToken && ppo.num_steps % seq_len != 0 {
        bail!(
            "{}: num_steps ({}) must be a multiple of the episode length ({seq_len} tokens)",
            a.config.display(),
            ppo.num_steps
        );
    }
    // Rank episodes restart at every rollout, so a checkpoint at an iteration boundary resumes exactly.
    ppo.reset_each_iteration = true;
    let name = a.out.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_else(|| "policy".into());
    let run_dir = a.run_dir.clone().unwrap_or_else(|| PathBuf::from("runs").join(&name));
    let resolved =
        ResolvedPolicyRun { ppo: ppo.clone(), env: spec.clone(), seed: a.seed, model_fingerprint: fp.clone() };
    let run_file = run_dir.join("train-policy.json");
    let ckpt = run_dir.join("checkpoint");
    if a.resume {
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
    eprintln!(
        "run directory: {} (TensorBoard: tensorboard --logdir {})",
        run_dir.display(),
        run_dir.join("tb").display()
    );
    let mut sink = sinks(&run_dir)?;
    if !a.resume {
        crate::commands::write_json(&run_file, &resolved)?;
    }

    // The env file's granularity and the policy's window decide the environment (per-layer
    // bandit or per-token decode; stacked observations for attention policies).
    let envs: Vec<Box<dyn VecEnv>> =
        (0..ppo.num_envs).map(|_| make_env(&model, &task, &spec, false, ppo.policy.window, &dev)).collect();
    let budget = spec.reward.budget.map(|target| Budget {
        target,
        lr: spec.reward.lambda_lr,
        kp: spec.reward.lambda_kp,
        two_sided: spec.reward.budget_kind == ahr_env::BudgetKind::Target,
    });
    let lambda = if budget.is_some() { spec.reward.lambda_init } else { spec.reward.lambda_mem };
    let mut trainer = Trainer::new(ppo.clone(), envs, a.workers, a.seed, lambda, budget, dev.clone())?;
    if a.resume {
        trainer.load_checkpoint(&ckpt)?;
    }
    let pb = progress_bar(trainer.num_iterations());
    pb.set_position(trainer.state().iteration);
    let every = ppo.checkpoint_every;
    let outcome = trainer.train(&mut sink, |t, r| {
        pb.set_position(r.iteration);
        pb.set_message(describe(r));
        if r.iteration % every == 0 || r.iteration == t.num_iterations() {
            t.save_checkpoint(&ckpt)?;
        }
        Ok::<(), TrainError>(())
    })?;
    pb.finish_and_clear();

    let (obs, dims) = trainer.spec();
    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        obs: obs.clone(),
        norm: trainer.state().norm.clone(),
        menu: cfg.menu.iter().map(|o| o.to_string()).collect(),
        granularity: spec.env.granularity,
        n_layers: cfg.n_layers,
        policy: ppo.policy.clone(),
        dims,
        model_fingerprint: fp,
        budget: spec.reward.budget,
    };
    let net = trainer.policy();
    save_policy(&a.out, &manifest, &net)?;
    if let Some(last) = outcome.reports.last() {
        println!("iteration {}: {}", last.iteration, describe(last));
    }
    let eval = evaluate_policy(&model, &task, &spec, &net, &manifest.norm, ppo.policy.window, a.eval_examples, &dev);
    crate::commands::write_json(&run_dir.join("eval.json"), &eval)?;
    println!(
        "held-out ({} sequences, deterministic): accuracy {:.4}, loss {:.4}, {:.1} KV bytes/token = {:.3} of exact",
        eval.sequences, eval.accuracy, eval.task_loss, eval.kv_bytes_per_token, eval.mem_frac
    );
    println!("policy: {}  run: {}", a.out.display(), run_dir.display());
    Ok(())
}

/// Deterministic held-out evaluation of a rank policy (`eval.json` in the run directory).
#[derive(Debug, Serialize)]
pub struct PolicyEval {
    /// Held-out sequences evaluated.
    pub sequences: usize,
    /// Accuracy over labelled positions.
    pub accuracy: f64,
    /// Mean task loss over labelled positions.
    pub task_loss: f64,
    /// KV bytes charged relative to the exact choice (the reward's memory term).
    pub mem_frac: f64,
    /// The cache's peak bytes relative to the exact choice's (= `mem_frac` unless options expire).
    pub peak_frac: f64,
    /// KV bytes per token over all layers: the cache's peak over the sequence length (the
    /// measure every baseline of `ahr eval` is reported in).
    pub kv_bytes_per_token: f64,
    /// Attention FLOPs relative to the exact choice.
    pub flops_frac: f64,
    /// Chosen options per layer, `[layer][option]`, with the menu.
    pub option_counts: Vec<Vec<u64>>,
    /// Chosen options by token position, summed over layers and sequences, `[position][option]`.
    pub options_by_position: Vec<Vec<u64>>,
    /// The menu.
    pub menu: Vec<String>,
}

/// Run the policy deterministically over held-out sequences (the model's fixed held-out set).
pub fn evaluate_policy(
    model: &ahr_tpa::Model,
    task: &Task,
    spec: &EnvSpec,
    net: &ahr_policy::ActorCritic,
    norm: &ahr_policy::RunningNorm,
    window: usize,
    max_sequences: Option<usize>,
    dev: &burn::tensor::Device,
) -> PolicyEval {
    evaluate_rule(model, task, spec, window, max_sequences, dev, |obs| net.act_deterministic(obs, norm, dev))
}

/// Run any rule (observations → one menu index per row and layer) over held-out sequences in
/// the rank environment of `spec`, with the environment's accounting.
pub fn evaluate_rule(
    model: &ahr_tpa::Model,
    task: &Task,
    spec: &EnvSpec,
    window: usize,
    max_sequences: Option<usize>,
    dev: &burn::tensor::Device,
    act: impl FnMut(&ahr_policy::ObsBatch) -> Vec<usize>,
) -> PolicyEval {
    let streams = spec.env.streams;
    let sequences = max_sequences.unwrap_or(task.valid_examples()).min(task.valid_examples()).max(1);
    let episodes = sequences.div_ceil(streams) * streams;
    let mut env = make_env(model, task, spec, true, window, dev);
    let stats = ahr_ppo::evaluate::evaluate_with(env.as_mut(), episodes, 0, act);
    let n = stats.len() as f64;
    let mean = |f: &dyn Fn(&ahr_env::EpisodeStats) -> f64| stats.iter().map(f).sum::<f64>() / n;
    let cfg = model.config();
    let (mem_frac, peak_frac) = (mean(&|e| e.mem_frac), mean(&|e| e.peak_frac));
    let mut option_counts = vec![vec![0u64; cfg.menu.len()]; cfg.n_layers];
    let mut options_by_position: Vec<Vec<u64>> = Vec::new();
    for e in &stats {
        if options_by_position.len() < e.position_counts.len() {
            options_by_position.resize(e.position_counts.len(), vec![0; cfg.menu.len()]);
        }
        for (t, row) in e.position_counts.iter().enumerate() {
            for (o, c) in row.iter().enumerate() {
                options_by_position[t][o] += c;
            }
        }
        for (l, row) in e.option_counts.iter().enumerate() {
            for (o, c) in row.iter().enumerate() {
                option_counts[l][o] += c;
            }
        }
    }
    PolicyEval {
        sequences: stats.len(),
        accuracy: mean(&|e| e.accuracy),
        task_loss: mean(&|e| e.task_loss),
        mem_frac,
        peak_frac,
        kv_bytes_per_token: peak_frac * ahr_tpa::cost::exact_bytes_per_token(cfg) as f64,
        flops_frac: mean(&|e| e.flops_frac),
        option_counts,
        options_by_position,
        menu: cfg.menu.iter().map(|o| o.to_string()).collect(),
    }
}

/// What `ahr cartpole` writes.
#[derive(Debug, Serialize)]
pub struct CartPoleReport {
    /// Mean return of the last 20 finished episodes.
    pub episodic_return_last20: f64,
    /// Environment steps.
    pub env_steps: u64,
    /// Rollout steps per second.
    pub sps: f64,
    /// Seed.
    pub seed: u64,
}

/// Train PPO on CartPole-v1.
pub fn cartpole(
    config: &Path,
    seed: u64,
    workers: usize,
    out: Option<&Path>,
    common: &Common,
) -> Result<CartPoleReport> {
    let dev = device(&common.device)?;
    let ppo = load_ppo_config(config)?;
    let envs: Vec<Box<dyn VecEnv>> =
        (0..ppo.num_envs).map(|_| Box::new(CartPoleVec::new(1)) as Box<dyn VecEnv>).collect();
    let mut trainer = Trainer::new(ppo, envs, workers, seed, 0.0, None, dev)?;
    let pb = progress_bar(trainer.num_iterations());
    let mut sink = ahr_ppo::metrics::NullSink;
    let outcome = trainer.train(&mut sink, |_, r| {
        pb.set_position(r.iteration);
        pb.set_message(format!("return {:.1} | {:.0} SPS", r.episodic_return, r.sps));
        Ok::<(), TrainError>(())
    })?;
    pb.finish_and_clear();
    let eps = &outcome.last_episodes;
    let last: Vec<f64> = eps.iter().rev().take(20).map(|e| e.ret).collect();
    let report = CartPoleReport {
        episodic_return_last20: last.iter().sum::<f64>() / last.len().max(1) as f64,
        env_steps: trainer.state().global_step,
        sps: outcome.rollout_sps,
        seed,
    };
    println!(
        "CartPole-v1 seed {seed}: mean return of the last 20 episodes {:.1} after {} steps ({:.0} SPS)",
        report.episodic_return_last20, report.env_steps, report.sps
    );
    if let Some(out) = out {
        crate::commands::write_json(out, &report)?;
    }
    Ok(report)
}
