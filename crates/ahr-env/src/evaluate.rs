//! Held-out evaluation in the environment: a trained policy's deterministic decisions, or any
//! rule that maps observations to options, run over the task's fixed held-out sequences with the
//! environment's own accounting (what `train-policy` reports and what `ahr eval` judges).

use ahr_tasks::Task;
use serde::Serialize;

use crate::factory::make_env;
use crate::spec::EnvSpec;
use crate::vec_env::{EnvError, EpisodeStats, run_episodes};

/// Deterministic held-out evaluation of a rank policy (`eval.json` in the run directory).
#[derive(Debug, Serialize)]
pub struct PolicyEval {
    /// Held-out sequences evaluated.
    pub sequences: usize,
    /// Accuracy pooled over every labelled position of every sequence (the judge's metric).
    pub accuracy: f64,
    /// Mean of per-sequence accuracies (secondary).
    pub accuracy_per_sequence: f64,
    /// Mean task loss pooled over labelled positions.
    pub task_loss: f64,
    /// Mean of per-sequence task losses (secondary).
    pub task_loss_per_sequence: f64,
    /// Labelled positions scored.
    pub labelled: u64,
    /// Time-averaged KV bytes held relative to the exact choice's (the reward's memory term).
    pub mem_frac: f64,
    /// The cache's peak bytes over the sequence length, relative to the exact choice's bytes per
    /// token (reported beside the time average).
    pub peak_frac: f64,
    /// Time-averaged KV bytes held per token over all layers (`ahr_tpa::cost::charged_bytes`):
    /// the measure every point of `ahr eval` is reported and matched in.
    pub kv_bytes_per_token: f64,
    /// The peak in bytes per token.
    pub peak_kv_bytes_per_token: f64,
    /// Attention FLOPs relative to the exact choice.
    pub flops_frac: f64,
    /// Chosen options per layer, `[layer][option]`, with the menu.
    pub option_counts: Vec<Vec<u64>>,
    /// Chosen options by token position, summed over layers and sequences, `[position][option]`.
    pub options_by_position: Vec<Vec<u64>>,
    /// The menu.
    pub menu: Vec<String>,
    /// Loss and accuracy sums per held-out sequence, in held-out order (sequence i is the task's
    /// held-out example i), for paired comparisons on the same sequences.
    #[serde(skip)]
    pub per_sequence: Vec<ahr_tasks::Metrics>,
    /// Per held-out sequence, the tokens that left at a moment of their own (learned evictions,
    /// spike reviews' drops): `(layer, position, at)`, `at` the first query that no longer sees it.
    #[serde(skip)]
    pub evictions: Vec<Vec<(usize, usize, usize)>>,
    /// Per held-out sequence, the tokens a learned evicter let go into its second tier:
    /// `(layer, position, at)`, `at` the first query that sees them at the tier's rank.
    #[serde(skip)]
    pub demotions: Vec<Vec<(usize, usize, usize)>>,
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
) -> Result<PolicyEval, EnvError> {
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
) -> Result<PolicyEval, EnvError> {
    let streams = spec.env.streams;
    let sequences = max_sequences.unwrap_or(task.valid_examples()).min(task.valid_examples()).max(1);
    let episodes = sequences.div_ceil(streams) * streams;
    let mut env = make_env(model, task, spec, true, window, dev);
    // Whole rounds of `streams` episodes run; the sequences past `sequences` are not counted, so a
    // policy is scored on exactly the held-out sequences a rule is (`ahr_eval::Harness`).
    let mut stats = run_episodes(env.as_mut(), episodes, 0, act)?;
    stats.truncate(sequences);
    let n = stats.len() as f64;
    let mean = |f: &dyn Fn(&EpisodeStats) -> f64| stats.iter().map(f).sum::<f64>() / n;
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
    let exact = ahr_tpa::cost::exact_bytes_per_token(cfg) as f64;
    let pooled = EpisodeStats::pooled(&stats);
    Ok(PolicyEval {
        sequences: stats.len(),
        accuracy: pooled.accuracy(),
        accuracy_per_sequence: mean(&|e| e.accuracy),
        task_loss: pooled.loss(),
        task_loss_per_sequence: mean(&|e| e.task_loss),
        labelled: pooled.count,
        mem_frac,
        peak_frac,
        kv_bytes_per_token: mem_frac * exact,
        peak_kv_bytes_per_token: peak_frac * exact,
        flops_frac: mean(&|e| e.flops_frac),
        option_counts,
        options_by_position,
        menu: cfg.menu.iter().map(|o| o.to_string()).collect(),
        per_sequence: stats.iter().map(EpisodeStats::metrics).collect(),
        demotions: stats.iter().map(|e| e.demotions.clone()).collect(),
        evictions: stats.into_iter().map(|e| e.evictions).collect(),
    })
}
