//! Batches, splits, seeds and the running metrics every evaluation reports.

use rand::SeedableRng;
use rand::rngs::StdRng;

/// Label of a position that carries no loss (PyTorch's and Zoology's convention).
pub const IGNORE: i64 = -100;

/// Which part of the data a batch comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Split {
    /// Training data.
    Train,
    /// Held-out data.
    Valid,
}

/// A batch of equal-length sequences, row-major `[batch_size, seq_len]`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Batch {
    /// Token ids.
    pub inputs: Vec<u32>,
    /// Target per position, [`IGNORE`] where there is none.
    pub labels: Vec<i64>,
    /// Sequences.
    pub batch_size: usize,
    /// Positions per sequence.
    pub seq_len: usize,
    /// Per-sequence difficulty where the task has one (MQAR: number of key-value pairs).
    pub difficulty: Vec<Option<usize>>,
    /// Per-position role where the task defines one (MQAR), row-major like `inputs`; empty
    /// otherwise.
    pub roles: Vec<TokenRole>,
}

/// What a token is in a synthetic task (for analysis; models never see it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TokenRole {
    /// An MQAR key in the key-value block.
    Key,
    /// An MQAR value in the key-value block.
    Value,
    /// A query: a key asked again, whose next token is the value to recall (labelled).
    Query,
    /// Anything else (random or zero filler).
    Filler,
    /// A key or value token of an assignment that a later one of the same key supersedes
    /// (`layout = "updates"`): worthless from then on.
    Stale,
    /// The value of a pair's second statement (`layout = "restated"`; its key is a `Key`): the
    /// token a cache must keep once the first statement is gone.
    Restated,
    /// A key or value of a pair that is never queried (`layout = "restated"`).
    Distractor,
}

impl TokenRole {
    /// Every role, in display order.
    pub const ALL: [TokenRole; 7] = [
        TokenRole::Key,
        TokenRole::Value,
        TokenRole::Query,
        TokenRole::Filler,
        TokenRole::Stale,
        TokenRole::Restated,
        TokenRole::Distractor,
    ];

    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            TokenRole::Key => "key",
            TokenRole::Value => "value",
            TokenRole::Query => "query",
            TokenRole::Filler => "filler",
            TokenRole::Stale => "stale",
            TokenRole::Restated => "restated",
            TokenRole::Distractor => "distractor",
        }
    }
}

impl Batch {
    /// Number of labelled positions.
    pub fn labelled(&self) -> usize {
        self.labels.iter().filter(|&&l| l != IGNORE).count()
    }
}

/// An RNG for (seed, split, index): independent streams without shared state.
pub fn rng_for(seed: u64, split: Split, index: u64) -> StdRng {
    let tag = match split {
        Split::Train => 0x7472_6169_6e00_0000u64,
        Split::Valid => 0x7661_6c69_6400_0000u64,
    };
    // SplitMix64 finaliser over the three inputs.
    let mut z = seed ^ tag ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    StdRng::seed_from_u64(z ^ (z >> 31))
}

/// Running sums for loss and accuracy over labelled positions.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Metrics {
    /// Sum of per-position cross-entropy (nats).
    pub loss_sum: f64,
    /// Positions whose argmax equals the label.
    pub correct: u64,
    /// Labelled positions seen.
    pub count: u64,
}

impl Metrics {
    /// Add a batch's sums.
    pub fn add(&mut self, loss_sum: f64, correct: u64, count: u64) {
        self.loss_sum += loss_sum;
        self.correct += correct;
        self.count += count;
    }

    /// Mean loss per labelled position (nats).
    pub fn loss(&self) -> f64 {
        self.loss_sum / self.count.max(1) as f64
    }

    /// Fraction of labelled positions predicted exactly.
    pub fn accuracy(&self) -> f64 {
        self.correct as f64 / self.count.max(1) as f64
    }

    /// Bits per token (bits per byte for byte-level text).
    pub fn bits_per_token(&self) -> f64 {
        self.loss() / std::f64::consts::LN_2
    }
}

impl Batch {
    /// Keep the first `rows` sequences.
    pub fn truncate(&mut self, rows: usize) {
        let rows = rows.min(self.batch_size);
        self.inputs.truncate(rows * self.seq_len);
        self.labels.truncate(rows * self.seq_len);
        self.difficulty.truncate(rows);
        if !self.roles.is_empty() {
            self.roles.truncate(rows * self.seq_len);
        }
        self.batch_size = rows;
    }

    /// Every sequence `n` times in a row: rows `n·i … n·i + n − 1` are sequence i.
    pub fn repeat_each(&self, n: usize) -> Batch {
        let copies = |i: usize| std::iter::repeat_n(self.rows(i..i + 1), n);
        let mut out = Batch { batch_size: 0, seq_len: self.seq_len, ..Default::default() };
        for row in (0..self.batch_size).flat_map(copies) {
            out.inputs.extend(row.inputs);
            out.labels.extend(row.labels);
            out.difficulty.extend(row.difficulty);
            out.roles.extend(row.roles);
            out.batch_size += 1;
        }
        out
    }

    /// The sequences `rows` of this batch (a data-parallel rank's shard).
    pub fn rows(&self, rows: std::ops::Range<usize>) -> Batch {
        assert!(rows.end <= self.batch_size, "rows {rows:?} of a batch of {}", self.batch_size);
        let cells = rows.start * self.seq_len..rows.end * self.seq_len;
        Batch {
            inputs: self.inputs[cells.clone()].to_vec(),
            labels: self.labels[cells.clone()].to_vec(),
            batch_size: rows.len(),
            seq_len: self.seq_len,
            difficulty: self.difficulty[rows].to_vec(),
            roles: if self.roles.is_empty() { Vec::new() } else { self.roles[cells].to_vec() },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Repeating each sequence keeps its tokens, labels, difficulty and roles together.
    #[test]
    fn repeat_each_puts_copies_side_by_side() {
        use TokenRole::*;
        let b = Batch {
            inputs: vec![1, 2, 3, 4],
            labels: vec![IGNORE, 2, IGNORE, 4],
            batch_size: 2,
            seq_len: 2,
            difficulty: vec![Some(1), None],
            roles: vec![Key, Value, Filler, Query],
        };
        let r = b.repeat_each(2);
        assert_eq!(r.batch_size, 4);
        assert_eq!(r.inputs, [1, 2, 1, 2, 3, 4, 3, 4]);
        assert_eq!(r.labels, [IGNORE, 2, IGNORE, 2, IGNORE, 4, IGNORE, 4]);
        assert_eq!(r.difficulty, [Some(1), Some(1), None, None]);
        assert_eq!(r.roles, [Key, Value, Key, Value, Filler, Query, Filler, Query]);
    }

    /// A shard keeps its sequences' tokens, labels, difficulty and roles, in order.
    #[test]
    fn rows_cut_whole_sequences() {
        use TokenRole::*;
        let b = Batch {
            inputs: (0..6).collect(),
            labels: vec![IGNORE, 1, IGNORE, 3, IGNORE, 5],
            batch_size: 3,
            seq_len: 2,
            difficulty: vec![Some(1), None, Some(3)],
            roles: vec![Key, Query, Filler, Query, Value, Query],
        };
        let r = b.rows(1..3);
        assert_eq!(r.inputs, [2, 3, 4, 5]);
        assert_eq!(r.labels, [IGNORE, 3, IGNORE, 5]);
        assert_eq!((r.batch_size, r.seq_len, r.labelled()), (2, 2, 2));
        assert_eq!(r.difficulty, [None, Some(3)]);
        assert_eq!(r.roles, [Filler, Query, Value, Query]);
        assert_eq!(b.rows(0..3), b);
    }
}
