//! The `[task]` table of an env file and the loaded task behind it.

use serde::{Deserialize, Serialize};

use crate::batch::{Batch, Split};
use crate::error::Result;
use crate::jsonl::{JsonlConfig, JsonlDataset};
use crate::mqar::MqarConfig;
use crate::text::{TextConfig, TextCorpus};

/// Seed of every held-out set.
pub const HELD_OUT_SEED: u64 = 0x00a4_e1d0;

/// Which task, with its parameters (`kind = "mqar" | "text" | "jsonl"`).
///
/// Mixed-difficulty MQAR is `kind = "mqar"` with several values in `num_kv_pairs`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum TaskConfig {
    /// Zoology MQAR (mixed when `num_kv_pairs` lists several D).
    Mqar(MqarConfig),
    /// Byte-level text.
    Text(TextConfig),
    /// A JSONL token dataset.
    Jsonl(JsonlConfig),
}

impl TaskConfig {
    /// The same task at another sequence length (length generalisation). A JSONL dataset's
    /// sequences are fixed, so it refuses.
    pub fn with_seq_len(&self, seq_len: usize) -> Result<Self> {
        let mut c = self.clone();
        match &mut c {
            TaskConfig::Mqar(m) => m.seq_len = seq_len,
            TaskConfig::Text(t) => t.seq_len = seq_len,
            TaskConfig::Jsonl(_) => {
                return Err(crate::Error::Config(
                    "a JSONL dataset's sequences are fixed: cannot change their length".into(),
                ));
            }
        }
        Ok(c)
    }

    /// Sequence length, where the config fixes one.
    pub fn seq_len(&self) -> Option<usize> {
        match self {
            TaskConfig::Mqar(m) => Some(m.seq_len),
            TaskConfig::Text(t) => Some(t.seq_len),
            TaskConfig::Jsonl(_) => None,
        }
    }
}

/// A task ready to produce batches.
#[derive(Clone, Debug)]
pub enum Task {
    /// MQAR, generated on the fly.
    Mqar(MqarConfig),
    /// A text corpus in memory.
    Text(TextCorpus),
    /// A JSONL dataset in memory.
    Jsonl(JsonlDataset),
}

impl Task {
    /// Validate the config and load any files it names.
    pub fn load(config: &TaskConfig) -> Result<Self> {
        Ok(match config {
            TaskConfig::Mqar(c) => {
                c.validate()?;
                Task::Mqar(c.clone())
            }
            TaskConfig::Text(c) => Task::Text(TextCorpus::load(c)?),
            TaskConfig::Jsonl(c) => Task::Jsonl(JsonlDataset::load(c)?),
        })
    }

    /// Smallest model vocabulary that covers the task's tokens.
    pub fn vocab_needed(&self) -> usize {
        match self {
            Task::Mqar(c) => c.vocab_size,
            Task::Text(_) => 256,
            Task::Jsonl(d) => d.vocab_needed(),
        }
    }

    /// The longest sequence an episode of the task holds.
    pub fn longest(&self) -> usize {
        match self {
            Task::Mqar(c) => c.seq_len,
            Task::Text(t) => t.seq_len(),
            Task::Jsonl(d) => d.longest(),
        }
    }

    /// The headline metric: accuracy (MQAR, JSONL) or bits per byte (text).
    pub fn metric(&self) -> Metric {
        match self {
            Task::Text(_) => Metric::BitsPerByte,
            _ => Metric::Accuracy,
        }
    }

    /// Training batch `index` (deterministic for the seed).
    pub fn train_batch(&self, seed: u64, index: u64, batch_size: usize) -> Batch {
        self.batch(seed, Split::Train, index, batch_size)
    }

    /// Held-out batch `index` of `batch_size` sequences (the fixed held-out set, wrapping around).
    pub fn valid_batch(&self, index: u64, batch_size: usize) -> Batch {
        self.batch(HELD_OUT_SEED, Split::Valid, index, batch_size)
    }

    fn batch(&self, seed: u64, split: Split, index: u64, batch_size: usize) -> Batch {
        match self {
            Task::Mqar(c) => c.batch(seed, split, index, batch_size),
            Task::Text(c) => c.batch(seed, split, index, batch_size),
            Task::Jsonl(d) => d.batch(seed, split, index, batch_size),
        }
    }

    /// What the data is, for reports: a text corpus's files, bytes and content fingerprint
    /// ([`crate::text::TextCorpus::fingerprint`]); `None` for generated and JSONL tasks (their env
    /// file and paths name them).
    pub fn data_description(&self) -> Option<String> {
        match self {
            Task::Text(c) => {
                let (train, valid) = c.sizes();
                Some(format!(
                    "text corpus: {} files, {train} training and {valid} held-out bytes, sha256 {}",
                    c.files(),
                    c.fingerprint()
                ))
            }
            _ => None,
        }
    }

    /// A text corpus's content fingerprint ([`crate::text::TextCorpus::fingerprint`]).
    pub fn data_fingerprint(&self) -> Option<&str> {
        match self {
            Task::Text(c) => Some(c.fingerprint()),
            _ => None,
        }
    }

    /// Held-out sequences an evaluation covers.
    pub fn valid_examples(&self) -> usize {
        match self {
            Task::Mqar(c) => c.valid_examples,
            Task::Text(c) => c.valid_windows(),
            Task::Jsonl(d) => d.sizes().1,
        }
    }

    /// Held-out batches of at most `batch_size` sequences covering `valid_examples()` once.
    ///
    /// The held-out set is the same for every run (its seed is fixed), so evaluations of models
    /// trained with different seeds compare on the same data.
    pub fn valid_batches(&self, batch_size: usize) -> impl Iterator<Item = Batch> + '_ {
        let n = self.valid_examples();
        (0..n.div_ceil(batch_size)).map(move |i| {
            let mut b = self.valid_batch(i as u64, batch_size);
            b.truncate((n - i * batch_size).min(batch_size));
            b
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_tables_parse_and_reject_unknown_keys() {
        let t: TaskConfig = toml::from_str("kind = \"mqar\"\nnum_kv_pairs = [4, 16]\nseq_len = 64").unwrap();
        let task = Task::load(&t).unwrap();
        assert_eq!(task.vocab_needed(), 8192);
        let err = toml::from_str::<TaskConfig>("kind = \"mqar\"\nnum_kv_pair = 8").unwrap_err().to_string();
        assert!(err.contains("num_kv_pair"), "{err}");
        assert!(toml::from_str::<TaskConfig>("kind = \"mqarr\"").is_err());
        let longer = Task::load(&t.with_seq_len(128).unwrap()).unwrap();
        assert_eq!(longer.valid_batch(0, 2).seq_len, 128);
        assert_eq!(t.seq_len(), Some(64));
        let batches: Vec<Batch> = task.valid_batches(300).collect();
        assert_eq!(batches.iter().map(|b| b.batch_size).collect::<Vec<_>>(), vec![300, 300, 300, 100]);
    }
}

/// A task's headline metric, pooled over labelled positions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Fraction of labelled positions predicted exactly (higher is better).
    Accuracy,
    /// Mean cross-entropy in bits per labelled byte (lower is better).
    BitsPerByte,
}

impl Metric {
    /// The name reports use (`accuracy`, `bits_per_byte`).
    pub fn name(self) -> &'static str {
        match self {
            Metric::Accuracy => "accuracy",
            Metric::BitsPerByte => "bits_per_byte",
        }
    }

    /// Whether a larger value is better.
    pub fn higher_is_better(self) -> bool {
        self == Metric::Accuracy
    }

    /// The metric of pooled sums.
    pub fn of(self, m: &crate::Metrics) -> f64 {
        self.value(m.loss(), m.accuracy())
    }

    /// The metric from a mean loss (nats per labelled position) and an accuracy.
    pub fn value(self, loss: f64, accuracy: f64) -> f64 {
        match self {
            Metric::Accuracy => accuracy,
            Metric::BitsPerByte => loss / std::f64::consts::LN_2,
        }
    }

    /// Whether `a` is strictly better than `b`.
    pub fn better(self, a: f64, b: f64) -> bool {
        if self.higher_is_better() { a > b } else { a < b }
    }

    /// Whether `a` is at least as good as `b`.
    pub fn at_least(self, a: f64, b: f64) -> bool {
        if self.higher_is_better() { a >= b } else { a <= b }
    }
}

impl std::fmt::Display for Metric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
