//! Command-line arguments (clap derive).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// ahr: train rank policies for Adaptive Hybrid-Rank Tensor Product Attention.
#[derive(Debug, Parser)]
#[command(name = "ahr", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Rollout workers by default: one per available core (1 and N workers give the same numbers).
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Options every command shares.
#[derive(Debug, Args, Clone)]
pub struct Common {
    /// Device: `cpu` (burn's pure-Rust flex backend); with the `tch` feature also `tch-cpu` and
    /// `tch-cuda[:N]` (libtorch).
    #[arg(long, default_value = "cpu", env = "AHR_DEVICE", global = true)]
    pub device: String,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// The main job on the built-in default: take the shipped mqar model (or pretrain the preset
    /// with `--pretrain`), train a rank policy, evaluate it against the baselines and print the
    /// Pareto table.
    Quickstart {
        /// Output directory (model, policy, evaluation).
        #[arg(long, default_value = "runs/quickstart")]
        out: PathBuf,
        /// Pretrain the mqar preset here (about 22 min on 2 cores) instead of starting from the
        /// model shipped in the binary (`policies/models/mqar`, the same preset and seed).
        #[arg(long)]
        pretrain: bool,
        /// Held-out sequences per evaluated point (default: 256).
        #[arg(long, default_value_t = 256)]
        sequences: usize,
        /// Rollout worker threads for policy training (default: the available cores).
        #[arg(long, default_value_t = default_workers())]
        workers: usize,
        /// Shared options.
        #[command(flatten)]
        common: Common,
    },
    /// Pretrain a model with nested-rank training; writes a model directory and its rank curve.
    Pretrain {
        /// Model preset (`configs/model/<m>.toml`).
        #[arg(long)]
        model_config: PathBuf,
        /// Env spec (`envs/<e>.toml`).
        #[arg(long)]
        env: PathBuf,
        /// Run directory (becomes the model directory).
        #[arg(long)]
        out: PathBuf,
        /// Override the preset's step count.
        #[arg(long)]
        steps: Option<u64>,
        /// Seed of initialisation, data and sampled choices.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Continue the run in `--out` from its last checkpoint.
        #[arg(long)]
        resume: bool,
        /// Start from this model directory's weights (same model config): fine-tuning.
        #[arg(long)]
        init: Option<PathBuf>,
        /// Stop after this many steps in this invocation (resume later with --resume).
        #[arg(long)]
        stop_after: Option<u64>,
        /// Shared options.
        #[command(flatten)]
        common: Common,
    },
    /// Evaluate a model under one storage choice on held-out data.
    EvalModel {
        /// Model directory.
        #[arg(long)]
        model: PathBuf,
        /// Env spec whose held-out data to use.
        #[arg(long, conflicts_with = "data", required_unless_present = "data")]
        env: Option<PathBuf>,
        /// A JSONL file of `{"inputs": […], "labels": […]}` lines.
        #[arg(long)]
        data: Option<PathBuf>,
        /// `exact` or `uniform:<option>` (e.g. `uniform:rank:2`).
        #[arg(long, default_value = "exact")]
        choices: String,
        /// Output JSON file.
        #[arg(long)]
        out: PathBuf,
        /// Shared options.
        #[command(flatten)]
        common: Common,
    },
    /// Import a model trained with the official TPA code (tensorgi/T6).
    ImportT6 {
        /// T6 weights (`.safetensors`).
        #[arg(long)]
        weights: PathBuf,
        /// T6 `GPTConfig` as JSON.
        #[arg(long)]
        config: PathBuf,
        /// Model directory to write.
        #[arg(long)]
        out: PathBuf,
        /// Shared options.
        #[command(flatten)]
        common: Common,
    },
    /// Print the logits of a token sequence as JSON, for comparison with other implementations.
    Logits {
        /// Model directory.
        #[arg(long)]
        model: PathBuf,
        /// Comma-separated token ids.
        #[arg(long)]
        tokens: String,
        /// `exact` or `uniform:<option>`.
        #[arg(long, default_value = "exact")]
        choices: String,
        /// Output JSON file.
        #[arg(long)]
        out: PathBuf,
        /// Shared options.
        #[command(flatten)]
        common: Common,
    },
    /// Run a prompt and decode greedily, a policy choosing every token's storage; report the
    /// cache bytes against the exact choice and a dense MHA cache.
    Generate {
        /// Model directory.
        #[arg(long)]
        model: PathBuf,
        /// Policy directory (default: the exact choice for every token).
        #[arg(long)]
        policy: Option<PathBuf>,
        /// Prompt text, fed as bytes (byte-level models).
        #[arg(long, conflicts_with = "tokens", required_unless_present = "tokens")]
        prompt: Option<String>,
        /// Prompt as comma-separated token ids.
        #[arg(long)]
        tokens: Option<String>,
        /// Tokens to generate.
        #[arg(long, default_value_t = 32)]
        max_new_tokens: usize,
        /// Also write the report as JSON.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Shared options.
        #[command(flatten)]
        common: Common,
    },
    /// Compare policies and baseline cache rules on held-out data; write metrics.json,
    /// pareto.csv, pareto.md and a Pareto plot (pareto.svg, pareto.png).
    Eval {
        /// Model directory; repeat to add further models (e.g. MHA, GQA) as points.
        #[arg(long = "model", required = true)]
        models: Vec<PathBuf>,
        /// Env spec whose held-out data to use.
        #[arg(long)]
        env: PathBuf,
        /// Policy directory for the first model (repeatable).
        #[arg(long = "policy")]
        policies: Vec<PathBuf>,
        /// Rule families, comma-separated (each also with its kept tokens at every cheaper menu
        /// option). Omitted: every family but the opt-in ones (`Family::opt_in`): `token-table`
        /// (its fit takes hours at 1024 tokens), `token-entropy` (`token-class` with each class
        /// split by the model's uncertainty: twice the classes to fit), `tova-tiers` (two-tier
        /// eviction: settings only where the menu holds two factor ranks), `tova-class` (a byte
        /// class kept longer: byte text), `tova-layers` and `tova-pooled`, in report order.
        #[arg(long, value_delimiter = ',')]
        baselines: Vec<String>,
        /// Held-out sequences per point (default: all).
        #[arg(long)]
        sequences: Option<usize>,
        /// Fixed memory targets besides each policy's own, as fractions of the exact choice's
        /// bytes (comma-separated; each family is searched at each; `none`: the policies' own
        /// targets only).
        #[arg(long, value_delimiter = ',', default_value = "0.1,0.25,0.5")]
        fractions: Vec<String>,
        /// Training sequences the fitted vocabulary rules (`token-class`, `token-table`, `token-entropy`) are
        /// fitted on, comma-separated: one fit per count, the settings of every fit judged
        /// (default: each family's own, 16 and 64).
        #[arg(long, value_delimiter = ',')]
        fit_sequences: Vec<usize>,
        /// Rounds of a fitted rule's greedy search from each start (default: 2; past the second
        /// it stops once a round measures no better).
        #[arg(long)]
        fit_rounds: Option<usize>,
        /// Keep the fitted rules' measurements (loss and bytes of every setting tried on the
        /// training sequences) in files in this directory, so a later judge or `fit-rule` on the
        /// same model and task measures each setting once (a killed fit goes on from there; the
        /// results do not depend on it).
        #[arg(long)]
        fit_cache: Option<PathBuf>,
        /// Per-token tables judged as further settings of `token-table`, comma-separated files or
        /// directories of `*.json` (e.g. an earlier judge's `tables/`, where every run writes the
        /// settings its vocabulary fits found, or `ahr fit-rule`'s output): a verdict against the
        /// settings every run found, paired.
        #[arg(long, value_delimiter = ',')]
        rule_tables: Vec<PathBuf>,
        /// Threads evaluating points side by side (default: the available cores; the numbers do
        /// not depend on it).
        #[arg(long, default_value_t = default_workers())]
        workers: usize,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// Shared options.
        #[command(flatten)]
        common: Common,
    },
    /// Fit the judge's vocabulary rule (`token-class`) at one memory target on the task's
    /// training sequences and write it as a per-token table a policy can start from
    /// (`[policy] prior_table`).
    FitRule {
        /// Model directory.
        #[arg(long)]
        model: PathBuf,
        /// Env spec (task and menu; the rule uses the policies' menu only).
        #[arg(long)]
        env: PathBuf,
        /// The vocabulary rule: `token-class` (frequent tokens one by one, the rest in ranges) or
        /// `token-table` (every token seen often enough a class of its own).
        #[arg(long, default_value = "token-class")]
        family: String,
        /// Memory target as a fraction of the exact choice's bytes.
        #[arg(long)]
        fraction: f64,
        /// Keep the fit's measurements in files in this directory (as `ahr eval --fit-cache`).
        #[arg(long)]
        fit_cache: Option<PathBuf>,
        /// Threads measuring settings side by side (the result does not depend on it).
        #[arg(long, default_value_t = default_workers())]
        workers: usize,
        /// Table file to write (JSON).
        #[arg(long)]
        out: PathBuf,
        /// Shared options.
        #[command(flatten)]
        common: Common,
    },
    /// Price a policy's deterministic decisions so that they hold a memory target on the task's
    /// training sequences, and write the calibrated policy to `--out` (a budget-mode policy meets
    /// its budget while sampling; its most probable options hold another memory).
    Calibrate {
        /// Model directory.
        #[arg(long)]
        model: PathBuf,
        /// Env spec the policy runs in.
        #[arg(long)]
        env: PathBuf,
        /// The policy to calibrate.
        #[arg(long)]
        policy: PathBuf,
        /// Memory target as a fraction of the exact choice's bytes (default: the policy's budget).
        #[arg(long)]
        target: Option<f64>,
        /// Training sequences the memory is measured on.
        #[arg(long, default_value_t = 64)]
        sequences: usize,
        /// Seed of the training stream those sequences come from.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Policy directory to write (not `--policy`'s).
        #[arg(long)]
        out: PathBuf,
        /// Shared options.
        #[command(flatten)]
        common: Common,
    },
    /// Explain a per-token policy: options per layer, bytes kept against position, entropy, token
    /// role or frequency and difficulty, feature ablations, other policies (e.g. per-layer mode)
    /// and longer sequences; writes report.md, analysis.json and PNG plots.
    Analyze {
        /// Model directory.
        #[arg(long)]
        model: PathBuf,
        /// The per-token policy to explain.
        #[arg(long)]
        policy: PathBuf,
        /// Env spec whose held-out data to use.
        #[arg(long)]
        env: PathBuf,
        /// Further policies to evaluate on the same data (repeatable), e.g. a per-layer one.
        #[arg(long)]
        compare: Vec<PathBuf>,
        /// Held-out sequences per evaluation.
        #[arg(long, default_value_t = 256)]
        sequences: usize,
        /// Sequence-length multiples for length generalisation, comma-separated (`none` to skip).
        #[arg(long, value_delimiter = ',', default_value = "2,4")]
        lengths: Vec<String>,
        /// Skip the feature ablations.
        #[arg(long)]
        no_ablation: bool,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// Shared options.
        #[command(flatten)]
        common: Common,
    },
    /// Train a rank policy with PPO on a frozen model and export it to `--out`.
    TrainPolicy {
        /// What to train on and where to write.
        #[command(flatten)]
        args: TrainPolicyArgs,
        /// Shared options.
        #[command(flatten)]
        common: Common,
    },
    /// Train the same PPO code on CartPole-v1 (gmgn) and report the final returns.
    Cartpole {
        /// PPO config.
        #[arg(long, default_value = "configs/ppo/cartpole.toml")]
        config: PathBuf,
        /// Seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Rollout worker threads (default: the available cores).
        #[arg(long, default_value_t = default_workers())]
        workers: usize,
        /// Output JSON (`{"episodic_return_last20", "env_steps", "sps"}`).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Shared options.
        #[command(flatten)]
        common: Common,
    },
    /// Benchmarks.
    #[command(subcommand)]
    Bench(BenchCommand),
}

/// Benchmark subcommands.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Rollout steps per second of the rank environment with different worker counts, in one run.
    Rollout {
        /// Model directory.
        #[arg(long)]
        model: PathBuf,
        /// Env spec.
        #[arg(long)]
        env: PathBuf,
        /// Worker counts to compare, comma-separated; the first is the baseline of the ratios.
        #[arg(long, value_delimiter = ',', default_value = "1,2")]
        workers: Vec<usize>,
        /// Environment instances (each with the env file's streams).
        #[arg(long, default_value_t = 4)]
        num_envs: usize,
        /// Rollouts (one episode per environment each) per worker count.
        #[arg(long, default_value_t = 3)]
        iterations: u64,
        /// Output JSON file.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Shared options.
        #[command(flatten)]
        common: Common,
    },
    /// Decode-step latency over a dense MHA cache, every uniform menu choice and a policy's
    /// ragged cache, side by side, with the memory-bandwidth bound.
    Decode {
        /// Model directory.
        #[arg(long)]
        model: PathBuf,
        /// Policy directory: its option mix fills the ragged cache.
        #[arg(long)]
        policy: Option<PathBuf>,
        /// Env spec whose held-out sequences measure the policy's option mix (default: synthetic tokens).
        #[arg(long)]
        env: Option<PathBuf>,
        /// Context lengths (cached tokens), comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1024,4096,16384")]
        ctx: Vec<usize>,
        /// Batch sizes, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1,8")]
        batch: Vec<usize>,
        /// Timed steps per cache (after three warm-up steps; each repeat times every cache in a
        /// fresh random order); the median is reported, every repeat saved.
        #[arg(long, default_value_t = 5)]
        reps: usize,
        /// Start every timed step from swept CPU caches (four times the largest cache, at least
        /// 128 MiB, read across the cores first), so that every KV cache and weight streams from
        /// memory, as on a server whose requests' caches together outgrow the L3; without it, a
        /// small model's caches partly stay in L3.
        #[arg(long)]
        cold: bool,
        /// Output JSON file.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Shared options.
        #[command(flatten)]
        common: Common,
    },
    /// Pretraining throughput (tokens/s) of several model presets, measured side by side.
    Train {
        /// Model presets to compare (repeat the flag); the first is the baseline of the ratios.
        #[arg(long = "model-config", required = true)]
        model_configs: Vec<PathBuf>,
        /// Env spec providing the data.
        #[arg(long)]
        env: PathBuf,
        /// Devices to compare, comma-separated (default: --device); every preset runs on each.
        #[arg(long, value_delimiter = ',')]
        devices: Vec<String>,
        /// Also time each preset in plain PyTorch eager with this Python (`bench/pytorch_reference.py`).
        #[arg(long)]
        pytorch: Option<PathBuf>,
        /// Where the PyTorch reference runs: `cpu`, `cuda` or `cuda:N`.
        #[arg(long, default_value = "cpu", requires = "pytorch")]
        pytorch_device: String,
        /// Timed steps per preset (after one warm-up step).
        #[arg(long, default_value_t = 10)]
        steps: u64,
        /// Where the LM head runs: at labelled positions only (what pretrain does) or everywhere.
        #[arg(long, default_value = "labelled")]
        head: ahr_train::evaluate::HeadAt,
        /// Output JSON file.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Shared options.
        #[command(flatten)]
        common: Common,
    },
}

/// Options of `ahr train-policy`.
#[derive(Debug, Args, Clone)]
pub struct TrainPolicyArgs {
    /// Model directory (from `ahr pretrain` or `ahr import-t6`).
    #[arg(long)]
    pub model: PathBuf,
    /// Env spec (`envs/<e>.toml`).
    #[arg(long)]
    pub env: PathBuf,
    /// PPO config (`configs/ppo/<c>.toml`).
    #[arg(long)]
    pub config: PathBuf,
    /// Policy directory to export to (`policies/<name>`).
    #[arg(long)]
    pub out: PathBuf,
    /// Run directory for TensorBoard logs, metrics and checkpoints (default `runs/<name>`).
    #[arg(long)]
    pub run_dir: Option<PathBuf>,
    /// Rollout worker threads (default: the available cores; results do not depend on it).
    #[arg(long, default_value_t = default_workers())]
    pub workers: usize,
    /// Seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Continue the run in the run directory from its last checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// Override the config's `total_timesteps`.
    #[arg(long)]
    pub total_timesteps: Option<u64>,
    /// Held-out sequences for the final deterministic evaluation (default: all).
    #[arg(long)]
    pub eval_examples: Option<usize>,
}

impl From<&TrainPolicyArgs> for ahr_train::policy::PolicyRunArgs {
    fn from(a: &TrainPolicyArgs) -> Self {
        ahr_train::policy::PolicyRunArgs {
            model: a.model.clone(),
            env: a.env.clone(),
            config: a.config.clone(),
            out: a.out.clone(),
            run_dir: a.run_dir.clone(),
            workers: a.workers,
            seed: a.seed,
            resume: a.resume,
            total_timesteps: a.total_timesteps,
            eval_examples: a.eval_examples,
        }
    }
}
