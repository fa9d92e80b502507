//! Logging of one iteration: CleanRL's scalars (`charts/*`, `losses/*`) and the environment's
//! episode statistics (`env/*`, per-layer option histograms `ranks/layer_<i>`). In DD-PPO the
//! scalars are means over every rank's episodes (the sink is rank 0's); the histograms are rank
//! 0's own episodes.

use ahr_env::EpisodeStats;

use crate::metrics::MetricsSink;
use crate::trainer::{IterationReport, Trainer};
use crate::update::UpdateStats;

impl Trainer {
    pub(crate) fn log(
        &self,
        sink: &mut dyn MetricsSink,
        r: &IterationReport,
        s: &UpdateStats,
        episodes: &[EpisodeStats],
        lr: f64,
    ) {
        let step = r.global_step;
        // Collectives first, on every rank alike (whatever this rank's episodes).
        let episodic_length = self.global_mean(episodes.iter().map(|e| e.len as f64));
        let task_loss = self.global_mean(episodes.iter().map(|e| e.task_loss));
        let flops_frac = self.global_mean(episodes.iter().map(|e| e.flops_frac));
        sink.scalar("charts/learning_rate", lr, step);
        sink.scalar("charts/SPS", r.sps, step);
        if episodic_length.is_finite() {
            sink.scalar("charts/episodic_return", r.episodic_return, step);
            sink.scalar("charts/episodic_length", episodic_length, step);
        }
        sink.scalar("losses/value_loss", s.v_loss, step);
        sink.scalar("losses/policy_loss", s.pg_loss, step);
        sink.scalar("losses/entropy", s.entropy, step);
        sink.scalar("losses/old_approx_kl", s.old_approx_kl, step);
        sink.scalar("losses/approx_kl", s.approx_kl, step);
        sink.scalar("losses/clipfrac", s.clipfrac, step);
        sink.scalar("losses/explained_variance", s.explained_variance, step);
        let has_ranks = episodes.iter().any(|e| !e.option_counts.is_empty());
        if has_ranks {
            sink.scalar("env/task_loss", task_loss, step);
            sink.scalar("env/accuracy", r.accuracy, step);
            sink.scalar("env/mem_frac", r.mem_frac, step);
            sink.scalar("env/flops_frac", flops_frac, step);
            sink.scalar("env/lambda_mem", r.lambda_mem, step);
            let layers = episodes[0].option_counts.len();
            for l in 0..layers {
                let options = episodes[0].option_counts[l].len();
                let counts: Vec<u64> =
                    (0..options).map(|o| episodes.iter().map(|e| e.option_counts[l][o]).sum()).collect();
                sink.histogram(&format!("ranks/layer_{l}"), &counts, step);
            }
        }
    }
}
