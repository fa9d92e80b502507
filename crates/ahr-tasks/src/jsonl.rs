//! JSONL token datasets: one `{"inputs": [ids…], "labels": [ids or −100…]}` per line.
//!
//! Lengths may differ between lines; a batch is padded at the end to its longest sequence with
//! token 0 and label −100 (attention is causal, so padding never changes earlier positions).

use std::path::{Path, PathBuf};

use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use crate::batch::{Batch, IGNORE, Split, rng_for};
use crate::error::{Error, Result};

/// JSONL dataset parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonlConfig {
    /// Training examples (or all examples when `valid_path` is absent).
    pub path: PathBuf,
    /// Held-out examples; without it the last `valid_fraction` of `path` is held out.
    #[serde(default)]
    pub valid_path: Option<PathBuf>,
    /// Fraction held out when there is no `valid_path`.
    #[serde(default = "default_valid_fraction")]
    pub valid_fraction: f64,
}

fn default_valid_fraction() -> f64 {
    0.1
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    inputs: Vec<i64>,
    labels: Vec<i64>,
}

/// One example.
#[derive(Clone, Debug, PartialEq)]
pub struct Example {
    /// Token ids.
    pub inputs: Vec<u32>,
    /// Targets (−100 = no loss).
    pub labels: Vec<i64>,
}

/// Read a JSONL file of examples; every problem names the file and line.
pub fn read_examples(path: &Path) -> Result<Vec<Example>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        if raw.trim().is_empty() {
            continue;
        }
        let bad = |msg: String| Error::Line { path: path.to_path_buf(), line: i + 1, msg };
        let line: Line = serde_json::from_str(raw)
            .map_err(|e| bad(format!("expected {{\"inputs\": [...], \"labels\": [...]}}: {e}")))?;
        if line.inputs.is_empty() || line.inputs.len() != line.labels.len() {
            return Err(bad(format!(
                "inputs ({}) and labels ({}) must be non-empty and of equal length",
                line.inputs.len(),
                line.labels.len()
            )));
        }
        if let Some(t) = line.inputs.iter().find(|&&t| t < 0 || t > u32::MAX as i64) {
            return Err(bad(format!("input token {t} is not a valid id")));
        }
        if let Some(t) = line.labels.iter().find(|&&t| t < 0 && t != IGNORE) {
            return Err(bad(format!("label {t} is neither a token id nor -100")));
        }
        out.push(Example { inputs: line.inputs.iter().map(|&t| t as u32).collect(), labels: line.labels });
    }
    if out.is_empty() {
        return Err(Error::data(path, "no examples (the file is empty)"));
    }
    Ok(out)
}

/// A loaded dataset.
#[derive(Clone, Debug)]
pub struct JsonlDataset {
    train: Vec<Example>,
    valid: Vec<Example>,
}

impl JsonlDataset {
    /// Load and split.
    pub fn load(config: &JsonlConfig) -> Result<Self> {
        let mut train = read_examples(&config.path)?;
        let valid = match &config.valid_path {
            Some(p) => read_examples(p)?,
            None => {
                let n_valid = ((train.len() as f64) * config.valid_fraction).ceil() as usize;
                if n_valid == 0 || n_valid >= train.len() {
                    return Err(Error::data(
                        &config.path,
                        format!(
                            "{} examples cannot be split with valid_fraction {}",
                            train.len(),
                            config.valid_fraction
                        ),
                    ));
                }
                train.split_off(train.len() - n_valid)
            }
        };
        Ok(Self { train, valid })
    }

    /// A dataset used only for evaluation: every example is held out.
    pub fn eval_only(path: &Path) -> Result<Self> {
        Ok(Self { train: Vec::new(), valid: read_examples(path)? })
    }

    /// Examples per split.
    pub fn sizes(&self) -> (usize, usize) {
        (self.train.len(), self.valid.len())
    }

    /// Length of the longest example (training and held-out).
    pub fn longest(&self) -> usize {
        self.train.iter().chain(&self.valid).map(|e| e.inputs.len()).max().unwrap_or(0)
    }

    /// Largest token id in inputs or labels, plus one.
    pub fn vocab_needed(&self) -> usize {
        self.train
            .iter()
            .chain(&self.valid)
            .flat_map(|e| e.inputs.iter().map(|&t| t as i64).chain(e.labels.iter().copied()))
            .max()
            .map_or(0, |m| (m + 1).max(0) as usize)
    }

    /// Batch `index` of `split`: training shuffles once per epoch (seeded), validation in order.
    pub fn batch(&self, seed: u64, split: Split, index: u64, batch_size: usize) -> Batch {
        let rows: Vec<&Example> = match split {
            Split::Train => {
                let n = self.train.len();
                let per_epoch = n.div_ceil(batch_size) as u64;
                let (epoch, k) = (index / per_epoch, (index % per_epoch) as usize);
                let mut order: Vec<usize> = (0..n).collect();
                order.shuffle(&mut rng_for(seed, Split::Train, u64::MAX - epoch));
                order.iter().cycle().skip(k * batch_size).take(batch_size).map(|&i| &self.train[i]).collect()
            }
            Split::Valid => {
                let start = index as usize * batch_size;
                self.valid.iter().skip(start).take(batch_size).collect()
            }
        };
        let seq_len = rows.iter().map(|e| e.inputs.len()).max().unwrap_or(0);
        let mut batch = Batch {
            inputs: Vec::with_capacity(rows.len() * seq_len),
            labels: Vec::with_capacity(rows.len() * seq_len),
            batch_size: rows.len(),
            seq_len,
            difficulty: vec![None; rows.len()],
            roles: Vec::new(),
        };
        for e in rows {
            let pad = seq_len - e.inputs.len();
            batch.inputs.extend(e.inputs.iter().copied().chain(std::iter::repeat_n(0, pad)));
            batch.labels.extend(e.labels.iter().copied().chain(std::iter::repeat_n(IGNORE, pad)));
        }
        batch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_pads_and_reports_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.jsonl");
        std::fs::write(&p, "{\"inputs\":[1,2,3],\"labels\":[-100,3,4]}\n\n{\"inputs\":[5],\"labels\":[6]}\n").unwrap();
        let d = JsonlDataset::eval_only(&p).unwrap();
        assert_eq!(d.vocab_needed(), 7);
        let b = d.batch(0, Split::Valid, 0, 8);
        assert_eq!((b.batch_size, b.seq_len), (2, 3));
        assert_eq!(b.inputs, vec![1, 2, 3, 5, 0, 0]);
        assert_eq!(b.labels, vec![-100, 3, 4, 6, -100, -100]);

        std::fs::write(&p, "{\"inputs\":[1,2],\"labels\":[1]}\n").unwrap();
        let err = read_examples(&p).unwrap_err().to_string();
        assert!(err.contains("d.jsonl:1") && err.contains("equal length"), "{err}");
        std::fs::write(&p, "{\"inputs\":[1],\"labels\":[1]}\n{\"input\":[1]}\n").unwrap();
        assert!(read_examples(&p).unwrap_err().to_string().contains("d.jsonl:2"));
        std::fs::write(&p, "").unwrap();
        assert!(read_examples(&p).unwrap_err().to_string().contains("empty"));
    }

    #[test]
    fn training_order_is_a_seeded_permutation_per_epoch() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.jsonl");
        let lines: String = (0..10).map(|i| format!("{{\"inputs\":[{i}],\"labels\":[{i}]}}\n")).collect();
        std::fs::write(&p, lines).unwrap();
        let d = JsonlDataset::load(&JsonlConfig { path: p, valid_path: None, valid_fraction: 0.2 }).unwrap();
        assert_eq!(d.sizes(), (8, 2));
        let mut seen: Vec<u32> = (0..4).flat_map(|i| d.batch(3, Split::Train, i, 2).inputs).collect();
        seen.sort();
        assert_eq!(seen, (0..8).collect::<Vec<_>>());
    }
}
