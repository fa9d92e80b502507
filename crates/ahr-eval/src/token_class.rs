//! The `token-class` family: a vocabulary rule fitted to data — what a practitioner writes after
//! seeing that a policy keeps some tokens longer than others by what they are ("spaces and rare
//! bytes for 16 queries, the rest for 8"). Per layer, every token class gets one menu option
//! (a window, a demotion schedule, a rank, drop or exact), the same for all its occurrences; the
//! classes are the task's frequent token ids one by one and the rest cut into ranges of ids, and
//! the options are fitted on *training* sequences (never the held-out ones the judge scores on).
//! The `token-table` family is the same fit at a finer [`Grain`] ([`TABLE`]: nearly every token
//! id a class of its own, fitted on more sequences); `token-entropy` ([`ENTROPY`]) splits each of
//! `token-class`'s classes in two by the model's uncertainty where the token is written (its
//! next-token entropy above or below the median of the training tokens') — the byte together with
//! the model's uncertainty, which is what the 256-byte policies read (2026-12-07, `ahr analyze`).
//!
//! The fit, per memory target m: start from one option for everything (the richest whose memory
//! fits m, and — a second fit — the richest within m / 2); measure on the training sequences
//! what moving each (layer, class) alone to each other option does to the loss and to the
//! time-averaged bytes; choose per (layer, class) the option
//! that minimises Δloss + μ·Δbytes, with the price μ the smallest whose bytes fit m (bytes add up
//! exactly over tokens, so the fit is exact on the training sequences; the loss is the linear
//! estimate); then measure again around that choice and choose once more ([`ROUNDS`]; more on
//! request, while the measured loss falls); last, once more from the best setting found just above
//! the target ([`TRIM_REACH`]). With review
//! decisions on the menu the judge fits in two stages ([`fit`]): over the options a write may
//! choose, then — from the best setting found at each target — over the whole menu, the storages
//! only reviews produce included (a rule may write those outright). A strong
//! rule: with hundreds of tuned parameters it is what "the token says how long to keep it" can do
//! at its best; a policy that does not beat it has learned a vocabulary trick.

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ahr_tasks::Batch;
use ahr_tpa::{Choices, ModelConfig, cost};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::baseline::Family;
use crate::harness::{Harness, PointKind};
use crate::judge::par_map;

/// Training sequences `token-class`'s classes are counted and its options fitted on.
pub const FIT_SEQUENCES: usize = 16;
/// Seed of the training sequences' stream.
pub const FIT_SEED: u64 = 0x746f_6b65_6e73;
/// A prior ([`fit_prior`]) is chosen among the fitted settings on this many further training
/// sequences (the fit's own 16 overrate the settings fitted to them) …
pub const SELECT_SEQUENCES: usize = 64;
/// … of this stream.
pub const SELECT_SEED: u64 = 0x7365_6c65_6374;
/// The training sequences a family of `grain` is fitted on (`grain.fit_sequences` of the
/// [`FIT_SEED`] stream) and its token classes counted on them (bytes named by their character for
/// byte-level tasks).
pub fn fitting_set<'a>(
    model: &'a ahr_tpa::Model,
    task: &'a ahr_tasks::Task,
    spec: &'a ahr_env::EnvSpec,
    grain: Grain,
    dev: &'a burn::tensor::Device,
) -> Result<(Harness<'a>, TokenClasses)> {
    let train = Harness::training(model, task, spec, grain.fit_sequences, FIT_SEED, dev)?;
    let bytes = train.metric() == ahr_tasks::Metric::BitsPerByte;
    let classes = TokenClasses::of_batches(train.batches(), model.config().vocab_size, bytes, grain);
    let classes = match grain.split {
        true => classes.split_at(median(train.entropies())),
        false => classes,
    };
    Ok((train, classes))
}

/// The median of `values` (the lower middle one of an even count; 0 for none).
fn median(values: impl Iterator<Item = f32>) -> f32 {
    let mut v: Vec<f32> = values.collect();
    if v.is_empty() {
        return 0.0;
    }
    let mid = (v.len() - 1) / 2;
    *v.select_nth_unstable_by(mid, f32::total_cmp).1
}

/// How finely a vocabulary rule tells tokens apart: which ids form a class of their own
/// ([`TokenClasses::from_counts`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Grain {
    /// At most this many ids (the most frequent) have a class of their own …
    pub max_single: usize,
    /// … each with at least this share of the training tokens.
    pub min_single_share: f64,
    /// Training sequences the classes are counted and the rule fitted on.
    pub fit_sequences: usize,
    /// Rounds of measuring around the current choice and choosing again, from each start ([`ROUNDS`]
    /// unless a judge asks for more); past the second the fit stops earlier once a round's choice
    /// measures no better than the one it started from.
    pub rounds: usize,
    /// Split every class in two at the median of the model's next-token entropy over the training
    /// tokens: written where the model is sure, or where it is not.
    pub split: bool,
}

/// `token-class`: the frequent ids (spaces, newlines, common letters) one by one.
pub const CLASSES: Grain =
    Grain { max_single: 24, min_single_share: 0.01, fit_sequences: FIT_SEQUENCES, rounds: ROUNDS, split: false };
/// `token-table`: every id seen often enough to be fitted on its own (0.2 % of the training
/// tokens: 33 occurrences in 64 sequences of 256 bytes), fitted on 4× `token-class`'s sequences
/// (on 16 it overfits: 2026-12-04, `docs/FINDINGS.md`) — a per-byte table for text, and a slow
/// fit (classes × sequences).
pub const TABLE: Grain = Grain {
    max_single: usize::MAX,
    min_single_share: 0.002,
    fit_sequences: 4 * FIT_SEQUENCES,
    rounds: ROUNDS,
    split: false,
};
/// `token-entropy`: `token-class`'s classes, each split at the median next-token entropy of the
/// training tokens (twice the classes, fitted on the same sequences).
pub const ENTROPY: Grain = Grain { split: true, ..CLASSES };
/// Classes of the other ids: contiguous id ranges holding equal shares of their training tokens.
pub const RANGE_CLASSES: usize = 8;
/// Rounds of measuring around the current choice and choosing again, from each start (a judge may
/// ask for more: `ahr eval --fit-rounds`; past the second, a fit stops once a round's choice
/// measures no better than the one it started from). Six rounds on 256-byte text
/// (2026-12-07) lowered the fit's training loss by 0.002–0.008 nats and its held-out bits per byte
/// not at all: the settings' spread on held-out windows (0.01–0.03 bits per byte at nearly the same
/// memory) is not a search left unfinished.
pub const ROUNDS: usize = 2;
/// Each target's fit runs from two starts: the richest single option within the target, and
/// within this share of it.
pub const START_LOW: f64 = 0.5;
/// Options whose uniform memory is at most this many times the target take part (and exact).
pub const OPTION_REACH: f64 = 16.0;
/// After its stages the fit starts once more at each target from the best setting (lowest training
/// loss) found above it but within this many times it, and chooses once at the target around it:
/// greedy fits at nearby targets land in different places, and one at a slightly higher target may
/// have found what a trim of it keeps (2026-12-07: on 256-byte text the fit's settings read 1.3878
/// bits per byte at 8.84 % of the memory and no better than 1.4145 at ≤ 8.8 %, the same on either
/// half of the held-out windows).
pub const TRIM_REACH: f64 = 1.1;
/// Each fit also gives its choice at these fractions of the target, so that a setting whose
/// held-out memory runs over the target has smaller neighbours to fall back on.
pub const TARGET_SHARES: [f64; 3] = [0.9, 0.95, 1.0];

/// The token classes of a vocabulary: which class each id is in, and the classes' names; split
/// ([`TokenClasses::split_at`]), each class twice — written at a next-token entropy up to the
/// threshold, and above it.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenClasses {
    class_of: Vec<u16>,
    names: Vec<String>,
    /// The entropy (/ ln V) above which a token is in its class's second half.
    threshold: Option<f32>,
}

impl TokenClasses {
    /// Classes from training counts per token id (`counts.len()` = the vocabulary; `bytes`: name
    /// tokens by their character, else `#id`): the ids with at least `grain.min_single_share` of
    /// the tokens, most frequent first and at most `grain.max_single`, one class each; every
    /// other id, in id order, in one of
    /// [`RANGE_CLASSES`] contiguous ranges cut where their cumulative count passes k / ranges of
    /// their total (ids never seen join the range they lie in).
    pub fn from_counts(counts: &[u64], bytes: bool, grain: Grain) -> Self {
        let total: u64 = counts.iter().sum();
        let mut by_count: Vec<usize> = (0..counts.len()).collect();
        by_count.sort_by(|&a, &b| counts[b].cmp(&counts[a]).then(a.cmp(&b)));
        let singles: Vec<usize> = by_count
            .into_iter()
            .take(grain.max_single)
            .filter(|&id| total > 0 && counts[id] as f64 >= grain.min_single_share * total as f64)
            .collect();
        let mut names: Vec<String> = singles.iter().map(|&id| token_name(id, bytes)).collect();
        let mut class_of = vec![u16::MAX; counts.len()];
        for (c, &id) in singles.iter().enumerate() {
            class_of[id] = c as u16;
        }
        let rest: Vec<usize> = (0..counts.len()).filter(|&id| class_of[id] == u16::MAX).collect();
        let rest_total: u64 = rest.iter().map(|&id| counts[id]).sum();
        let mut range_start: Option<usize> = None;
        let (mut seen, mut k) = (0u64, 0usize);
        for (i, &id) in rest.iter().enumerate() {
            let start = *range_start.get_or_insert(id);
            class_of[id] = names.len() as u16;
            seen += counts[id];
            // Close the range once it holds its share (the last range takes what is left).
            let last = i + 1 == rest.len();
            if last || (k + 1 < RANGE_CLASSES && seen * RANGE_CLASSES as u64 >= (k as u64 + 1) * rest_total.max(1)) {
                names.push(format!("{}–{}", token_name(start, bytes), token_name(id, bytes)));
                range_start = None;
                k += 1;
            }
        }
        Self { class_of, names, threshold: None }
    }

    /// These classes split in two at next-token entropy `threshold` (/ ln V): class c for tokens
    /// written at most at it, c + the unsplit count above it (named `c (unsure)`).
    pub fn split_at(self, threshold: f32) -> Self {
        let names = self.names.iter().cloned().chain(self.names.iter().map(|n| format!("{n} (unsure)"))).collect();
        Self { names, threshold: Some(threshold), ..self }
    }

    /// The split's threshold, if the classes are split.
    pub fn threshold(&self) -> Option<f32> {
        self.threshold
    }

    /// Classes of `grain` from the tokens of `batches` (vocabulary `vocab`; `bytes`: tokens are
    /// bytes, named by their character).
    pub fn of_batches<'b>(batches: impl Iterator<Item = &'b Batch>, vocab: usize, bytes: bool, grain: Grain) -> Self {
        let mut counts = vec![0u64; vocab];
        for b in batches {
            for &x in &b.inputs {
                if let Some(c) = counts.get_mut(x as usize) {
                    *c += 1;
                }
            }
        }
        Self::from_counts(&counts, bytes, grain)
    }

    /// Number of classes.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether there are none (an empty vocabulary).
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The class of token `id` (ids beyond the vocabulary: the last unsplit class); split classes:
    /// its sure half.
    pub fn class(&self, id: u32) -> usize {
        let base = if self.threshold.is_some() { self.names.len() / 2 } else { self.names.len() };
        self.class_of.get(id as usize).map_or(base - 1, |&c| c as usize)
    }

    /// The class of token `id` written where the model's next-token entropy (/ ln V) is `entropy`
    /// (unsplit classes: [`TokenClasses::class`]).
    pub fn class_at(&self, id: u32, entropy: f32) -> usize {
        match self.threshold {
            Some(at) if entropy > at => self.class(id) + self.names.len() / 2,
            _ => self.class(id),
        }
    }

    /// The class's name: a token (`' '`, `\n`, `e`, `#812`) or a range of ids (`0x00–0x1f`).
    pub fn name(&self, class: usize) -> &str {
        &self.names[class]
    }
}

/// A token as a report shows it: a byte as its character (escaped where unprintable), any other
/// token as `#id`.
fn token_name(id: usize, bytes: bool) -> String {
    match (bytes, u8::try_from(id)) {
        (true, Ok(b' ')) => "' '".into(),
        (true, Ok(b)) if b.is_ascii_graphic() => (b as char).to_string(),
        (true, Ok(b)) => format!("{}", std::ascii::escape_default(b)),
        _ => format!("#{id}"),
    }
}

/// One setting of the family: per layer and class, an index into the rules' menu
/// (`options[layer * classes + class]`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TokenClassRule {
    /// `[layer][class]` menu indices, flattened.
    pub options: Vec<usize>,
}

impl TokenClassRule {
    /// The storage choices for `batch`: each token at its class's option in each layer
    /// (`entropy`: `[seq][T]`, the model's next-token entropy / ln V, for split classes).
    pub fn choices(&self, classes: &TokenClasses, n_layers: usize, batch: &Batch, entropy: &[Vec<f32>]) -> Choices {
        let (c_n, t_n) = (classes.len(), batch.seq_len);
        let at = |s: usize, t: usize| if classes.threshold.is_some() { entropy[s][t] } else { 0.0 };
        Choices::from_fn(batch.batch_size, t_n, n_layers, |s, t, l| {
            self.options[l * c_n + classes.class_at(batch.inputs[s * t_n + t], at(s, t))]
        })
    }

    /// `L0: recent:16 for ' ' e t; full/4/rank:1/28 for 0x80–0xff; else recent:8` per layer (the
    /// option of the most classes is `else`).
    pub fn setting(&self, cfg: &ModelConfig, classes: &TokenClasses) -> String {
        let c_n = classes.len();
        (0..cfg.n_layers)
            .map(|l| {
                let row = &self.options[l * c_n..(l + 1) * c_n];
                let used: BTreeSet<usize> = row.iter().copied().collect();
                let most = *used
                    .iter()
                    .max_by_key(|&&o| (row.iter().filter(|&&x| x == o).count(), usize::MAX - o))
                    .expect("a class");
                let mut parts: Vec<String> = used
                    .iter()
                    .filter(|&&o| o != most)
                    .map(|&o| {
                        let members: Vec<&str> = (0..c_n).filter(|&c| row[c] == o).map(|c| classes.name(c)).collect();
                        format!("{} for {}", cfg.menu[o], members.join(" "))
                    })
                    .collect();
                parts.push(if parts.is_empty() {
                    format!("{}", cfg.menu[most])
                } else {
                    format!("else {}", cfg.menu[most])
                });
                format!("L{l}: {}", parts.join("; "))
            })
            .collect::<Vec<_>>()
            .join(" | ")
    }

    /// The rule as a per-token table for a policy to start from ([`ahr_policy::PriorTable`]):
    /// every token id of the vocabulary at its class's option, per layer (indices into the
    /// rules' menu `cfg.menu`). Split classes have no such table (the token alone does not decide): their sure half is taken.
    pub fn table(&self, cfg: &ModelConfig, classes: &TokenClasses, source: String) -> ahr_policy::PriorTable {
        let c_n = classes.len();
        let options = (0..cfg.n_layers)
            .map(|l| (0..cfg.vocab_size).map(|t| self.options[l * c_n + classes.class(t as u32)]).collect())
            .collect();
        ahr_policy::PriorTable { source, menu: cfg.menu.iter().map(|o| o.to_string()).collect(), options }
    }
}

/// The family's setting for one memory target, fitted for a policy to start from.
#[derive(Clone, Debug)]
pub struct FittedPrior {
    /// Its table (its `source` names the family, the target and the setting).
    pub table: ahr_policy::PriorTable,
    /// Its point on the training sequences it was chosen on ([`SELECT_SEQUENCES`]).
    pub train: crate::harness::Point,
    /// Settings the fit found (the table is the best of them).
    pub candidates: usize,
}

/// Fit a vocabulary family (`token-class` or `token-table`: [`Family::grain`]) at `fraction` of
/// the exact bytes on the task's training sequences (as the judge does) and keep, of the settings
/// found, the one with the lowest loss within the target on [`SELECT_SEQUENCES`] other training
/// sequences (the smallest one if none fits): the judge
/// picks the family's best setting on its held-out sequences; a prior must not see them.
/// `cache`: keep the fit's measurements in a file there ([`Measurements::open`]).
#[allow(clippy::too_many_arguments)]
pub fn fit_prior(
    model: &ahr_tpa::Model,
    task: &ahr_tasks::Task,
    spec: &ahr_env::EnvSpec,
    family: Family,
    fraction: f64,
    workers: usize,
    cache: Option<&FitCache>,
    dev: &burn::tensor::Device,
    progress: impl FnMut(&FitRound),
) -> Result<FittedPrior> {
    let grain = family.grain().ok_or_else(|| anyhow::anyhow!("`{}` is not a fitted vocabulary rule", family.name()))?;
    anyhow::ensure!(
        !grain.split,
        "`{}` reads the model's uncertainty as well as the token: it is no per-token table for a policy to start from",
        family.name()
    );
    anyhow::ensure!(fraction > 0.0 && fraction <= 1.0, "the memory fraction must be in (0, 1], not {fraction}");
    let cfg = model.config();
    let (train, classes) = fitting_set(model, task, spec, grain, dev)?;
    let target = fraction * cost::exact_bytes_per_token(cfg) as f64;
    let measured = match cache {
        Some(c) => Measurements::open(c, family, &train, &classes)?,
        None => Measurements::in_memory(),
    };
    let fitted = fit(&train, &classes, &[target], &[Some(&cfg.menu)], grain.rounds, workers, &measured, progress)?;
    let rcfg = train.rules.config();
    let select = Harness::training(model, task, spec, SELECT_SEQUENCES, SELECT_SEED, dev)?;
    let points = par_map(&fitted, workers, |rule| {
        select.read_rule_point(family.name(), PointKind::Rule(family), &rule.setting(rcfg, &classes), &|b, e| {
            Ok(rule.choices(&classes, cfg.n_layers, b, e))
        })
    })?;
    let within = |i: &usize| points[*i].kv_bytes_per_token <= target * (1.0 + 1e-9);
    let best = (0..points.len())
        .filter(within)
        .min_by(|&a, &b| points[a].loss.total_cmp(&points[b].loss))
        .or_else(|| {
            (0..points.len()).min_by(|&a, &b| points[a].kv_bytes_per_token.total_cmp(&points[b].kv_bytes_per_token))
        })
        .ok_or_else(|| anyhow::anyhow!("the fit found no setting"))?;
    let train_point = points[best].clone();
    let source = format!(
        "{} at {:.1} % of the exact bytes (fitted on {} training sequences, the best of {} settings on {} \
         others): {}",
        family.name(),
        100.0 * fraction,
        grain.fit_sequences,
        fitted.len(),
        SELECT_SEQUENCES,
        train_point.setting
    );
    let candidates = fitted.len();
    Ok(FittedPrior { table: fitted[best].table(rcfg, &classes, source), train: train_point, candidates })
}

/// What a fit has measured: per setting (an option per (layer, class)) its mean loss and bytes per
/// token on the fitting set. In memory a setting is measured once per fit; in a file
/// ([`Measurements::open`], `ahr eval` / `ahr fit-rule --fit-cache DIR`) once across fits and
/// runs — a refit at other memory targets starts from the same uniform settings and their single
/// changes, and a killed fit goes on from what it measured. Each line is appended as it is
/// measured; the file is named by a digest of everything a measurement depends on (the model's
/// fingerprint, the rules' menu, the token classes, the fitting sequences' tokens and labels),
/// and before any line is trusted the first one is measured again and must come out bit for bit
/// (another build that measures differently is refused, not believed).
#[derive(Debug, Default)]
pub struct Measurements {
    known: Mutex<HashMap<Vec<usize>, (f64, f64)>>,
    /// The file lines are appended to.
    file: Option<(PathBuf, Mutex<std::fs::File>)>,
    /// The file's first setting, to measure again before the rest is used (taken once).
    first: Mutex<Option<Measured>>,
}

/// One line of a measurement file.
#[derive(Debug, Serialize, Deserialize)]
struct Measured {
    options: Vec<usize>,
    loss: f64,
    bytes: f64,
}

/// A fit's measurements kept on disk: the directory and the model's fingerprint
/// ([`ahr_tpa::checkpoint::fingerprint`]), which with the fitting set names the file.
#[derive(Clone, Debug)]
pub struct FitCache {
    /// Directory of the measurement files (created if missing).
    pub dir: PathBuf,
    /// The fingerprint of the model directory the fit runs on.
    pub model_fingerprint: String,
}

impl Measurements {
    /// Measurements kept in memory only.
    pub fn in_memory() -> Self {
        Self::default()
    }

    /// The measurements of `family` on the fitting set `train` / `classes` in `cache.dir`, read
    /// back (a line cut short by a kill is dropped) and appended to from now on.
    pub fn open(cache: &FitCache, family: Family, train: &Harness, classes: &TokenClasses) -> Result<Self> {
        let mut h = Sha256::new();
        h.update(cache.model_fingerprint.as_bytes());
        for o in &train.rules.config().menu {
            h.update(format!("\n{o}").as_bytes());
        }
        h.update(classes.class_of.iter().flat_map(|c| c.to_le_bytes()).collect::<Vec<u8>>());
        if let Some(at) = classes.threshold {
            h.update(format!("\nsplit at {at}").as_bytes());
        }
        for b in train.batches() {
            h.update([b.batch_size as u64, b.seq_len as u64].map(u64::to_le_bytes).concat());
            h.update(b.inputs.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>());
            h.update(b.labels.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>());
        }
        let digest: String = h.finalize().iter().take(12).map(|b| format!("{b:02x}")).collect();
        std::fs::create_dir_all(&cache.dir).with_context(|| format!("creating {}", cache.dir.display()))?;
        let path = cache.dir.join(format!("{}-{digest}.jsonl", family.name()));
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let (mut known, mut first, mut valid) = (HashMap::new(), None, 0);
        for (i, line) in text.split_inclusive('\n').enumerate() {
            let Ok(m) = serde_json::from_str::<Measured>(line.trim_end()) else {
                // Only the last line may be cut short (a kill while it was written).
                anyhow::ensure!(
                    !line.ends_with('\n'),
                    "{}: line {} is not a measurement; delete the file",
                    path.display(),
                    i + 1
                );
                break;
            };
            valid += line.len();
            if first.is_none() {
                first = Some(Measured { options: m.options.clone(), ..m });
            }
            known.insert(m.options, (m.loss, m.bytes));
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        file.set_len(valid as u64).with_context(|| format!("truncating {}", path.display()))?;
        Ok(Self { known: Mutex::new(known), file: Some((path, Mutex::new(file))), first: Mutex::new(first) })
    }

    /// Settings measured so far.
    pub fn len(&self) -> usize {
        self.known.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether nothing is measured yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The file, if the measurements are kept in one.
    pub fn path(&self) -> Option<&Path> {
        self.file.as_ref().map(|(p, _)| p.as_path())
    }

    fn get(&self, options: &Vec<usize>) -> Option<(f64, f64)> {
        self.known.lock().unwrap_or_else(|e| e.into_inner()).get(options).copied()
    }

    fn insert(&self, options: &[usize], (loss, bytes): (f64, f64)) -> Result<()> {
        self.known.lock().unwrap_or_else(|e| e.into_inner()).insert(options.to_vec(), (loss, bytes));
        if let Some((path, file)) = &self.file {
            let line = serde_json::to_string(&Measured { options: options.to_vec(), loss, bytes })? + "\n";
            let mut file = file.lock().unwrap_or_else(|e| e.into_inner());
            file.write_all(line.as_bytes()).with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(())
    }

    /// Measure the file's first setting again (once) and refuse the file unless it comes out the same.
    fn check(&self, measure: impl Fn(&Vec<usize>) -> Result<(f64, f64)>) -> Result<()> {
        let Some(Measured { options, loss, bytes }) = self.first.lock().unwrap_or_else(|e| e.into_inner()).take()
        else {
            return Ok(());
        };
        let stored = (loss, bytes);
        let now = measure(&options)?;
        let same = now.0.to_bits() == stored.0.to_bits() && now.1.to_bits() == stored.1.to_bits();
        anyhow::ensure!(
            same,
            "{}: its first setting measures loss {}, {} bytes/token now and {}, {} there — written by a \
             build that measures differently; delete the file",
            self.path().map_or_else(String::new, |p| p.display().to_string()),
            now.0,
            now.1,
            stored.0,
            stored.1
        );
        Ok(())
    }
}

/// One round of a fit, as it starts.
#[derive(Clone, Copy, Debug)]
pub struct FitRound {
    /// The memory target (time-averaged bytes per token).
    pub target: f64,
    /// The stage ([`fit`]) and how many there are, from 1.
    pub stage: (usize, usize),
    /// The trim after the last stage: from the best setting found just above the target.
    pub trim: bool,
    /// The round, from 1.
    pub round: usize,
    /// The current choice's mean loss on the training sequences …
    pub loss: f64,
    /// … and its bytes per token.
    pub bytes: f64,
    /// Single changes about to be measured.
    pub moves: usize,
    /// Token classes the rule tells apart.
    pub classes: usize,
}

impl std::fmt::Display for FitRound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "fitting {} classes at {:.1} bytes/token, ", self.classes, self.target)?;
        if self.trim {
            write!(f, "trimmed from above, ")?;
        } else if self.stage.1 > 1 {
            write!(f, "stage {} of {}, ", self.stage.0, self.stage.1)?;
        }
        write!(
            f,
            "round {}: {} single changes from loss {:.4} at {:.1} bytes/token",
            self.round, self.moves, self.loss, self.bytes
        )
    }
}

/// Fit the family on `train` (training sequences) for each memory target (time-averaged bytes
/// per token); the settings found, without repeats, for the judge to run on its held-out
/// sequences. The fit runs in `stages`, each over the options it names (`None`: the rules' whole
/// menu): the first from the two uniform starts, every later one from the best setting found so
/// far at each target (lowest training loss within it) — so a larger menu is tried from where a
/// smaller one led, instead of the greedy search wandering off through it from the start (on
/// 1024-byte text the fit over every storage a review can produce read 0.015 bits per byte worse
/// than over the write options alone, 2026-12-04). A policy's own menu for a prior; the judge
/// fits over the options a write may choose, then the whole menu. Then a trim ([`TRIM_REACH`]):
/// at each target, one round from the best setting found just above it. `progress` sees each round
/// as it starts.
#[allow(clippy::too_many_arguments)]
pub fn fit(
    train: &Harness,
    classes: &TokenClasses,
    targets: &[f64],
    stages: &[Option<&[ahr_tpa::StoreOption]>],
    rounds: usize,
    workers: usize,
    measured: &Measurements,
    mut progress: impl FnMut(&FitRound),
) -> Result<Vec<TokenClassRule>> {
    anyhow::ensure!(rounds > 0, "a fit needs at least one round");
    anyhow::ensure!(!stages.is_empty(), "a fit needs at least one stage");
    let cfg = train.rules.config();
    let (o_n, l_n, c_n, t_n) = (cfg.menu.len(), cfg.n_layers, classes.len(), train.seq_len());
    let uniform = cost::uniform_bytes_per_token(cfg, t_n);
    let exact = cfg.exact_index();
    // (mean loss, bytes per token) of a setting on the training sequences.
    let fresh = |options: &Vec<usize>| -> Result<(f64, f64)> {
        let rule = TokenClassRule { options: options.clone() };
        let p = train.read_rule_point("token-class", PointKind::Rule(Family::TokenClass), "", &|b, e| {
            Ok(rule.choices(classes, l_n, b, e))
        })?;
        Ok((p.loss, p.kv_bytes_per_token))
    };
    measured.check(fresh)?;
    let measure = |options: &Vec<usize>| -> Result<(f64, f64)> {
        if let Some(m) = measured.get(options) {
            return Ok(m);
        }
        let m = fresh(options)?;
        measured.insert(options, m)?;
        Ok(m)
    };
    let mut found = BTreeSet::new();
    // The stages, then the trim over the last stage's options.
    for phase in 0..=stages.len() {
        let trim = phase == stages.len();
        let (stage, only) = (phase.min(stages.len() - 1), stages[phase.min(stages.len() - 1)]);
        for &target in targets {
            let allowed: Vec<usize> = (0..o_n)
                .filter(|&o| only.is_none_or(|m| m.contains(&cfg.menu[o])))
                .filter(|&o| uniform[o] <= OPTION_REACH * target || o == exact)
                .collect();
            let best_between = |low: f64, high: f64| -> Result<Option<Vec<usize>>> {
                let so_far: Vec<&TokenClassRule> = found.iter().collect();
                let measured = par_map(&so_far, workers, |r| measure(&r.options))?;
                let between = |i: &usize| measured[*i].1 > low && measured[*i].1 <= high * (1.0 + 1e-9);
                Ok((0..so_far.len())
                    .filter(between)
                    .min_by(|&a, &b| measured[a].0.total_cmp(&measured[b].0))
                    .map(|i| so_far[i].options.clone()))
            };
            let starts: Vec<Vec<usize>> = match stage {
                // The trim: the best setting found above the target but within TRIM_REACH of it.
                _ if trim => best_between(target * (1.0 + 1e-9), TRIM_REACH * target)?.into_iter().collect(),
                // The richest single option within the target, and within half of it: starting
                // low leaves the fit room to buy where it pays; starting at the target leaves only
                // swaps, whose gains the linear estimate adds up less well (either can win, so
                // both run).
                0 => {
                    let richest_within = |bytes: f64| {
                        allowed
                            .iter()
                            .copied()
                            .filter(|&o| uniform[o] <= bytes)
                            .max_by(|&a, &b| uniform[a].total_cmp(&uniform[b]))
                    };
                    let cheapest = *allowed.iter().min_by(|&&a, &&b| uniform[a].total_cmp(&uniform[b])).expect("exact");
                    let starts: BTreeSet<usize> = [richest_within(target), richest_within(START_LOW * target)]
                        .into_iter()
                        .map(|o| o.unwrap_or(cheapest))
                        .collect();
                    starts.into_iter().map(|o| vec![o; l_n * c_n]).collect()
                }
                // The best setting so far within the target (ties: the first in the set's order).
                _ => best_between(f64::NEG_INFINITY, target)?.into_iter().collect(),
            };
            for mut state in starts {
                let mut before = f64::INFINITY;
                for round in 1..=if trim { 1 } else { rounds } {
                    let (loss0, bytes0) = measure(&state)?;
                    // Past the second round (every fit before 2026-12-07 ran exactly two): the last
                    // round's choice (a linear estimate of many changes at once) measured no better
                    // than where it started — stop (it stays among the settings found).
                    if round > 2 && loss0 >= before {
                        break;
                    }
                    before = loss0;
                    let moves: Vec<(usize, usize)> = (0..l_n * c_n)
                        .flat_map(|c| allowed.iter().map(move |&o| (c, o)))
                        .filter(|&(c, o)| state[c] != o)
                        .collect();
                    let moved: Vec<Vec<usize>> = moves
                        .iter()
                        .map(|&(c, o)| {
                            let mut s = state.clone();
                            s[c] = o;
                            s
                        })
                        .collect();
                    progress(&FitRound {
                        target,
                        stage: (stage + 1, stages.len()),
                        trim,
                        round,
                        loss: loss0,
                        bytes: bytes0,
                        moves: moves.len(),
                        classes: c_n,
                    });
                    let results = par_map(&moved, workers, measure)?;
                    // Per (layer, class): (option, Δloss, Δbytes), staying put included.
                    let mut deltas: Vec<Vec<(usize, f64, f64)>> = state.iter().map(|&o| vec![(o, 0.0, 0.0)]).collect();
                    for (&(c, o), &(loss, bytes)) in moves.iter().zip(&results) {
                        deltas[c].push((o, loss - loss0, bytes - bytes0));
                    }
                    let at_share: Vec<Vec<usize>> =
                        TARGET_SHARES.iter().filter_map(|&s| choose(&deltas, bytes0, s * target)).collect();
                    for s in &at_share {
                        found.insert(TokenClassRule { options: s.clone() });
                    }
                    match at_share.last() {
                        Some(s) if *s != state => state = s.clone(),
                        _ => break,
                    }
                }
            }
        }
    }
    Ok(found.into_iter().collect())
}

/// Per (layer, class) the option minimising Δloss + μ·Δbytes, for the smallest price μ whose
/// bytes (`bytes0` plus the chosen Δbytes, exact: bytes add up over tokens) are at most
/// `target`, then filled greedily up to `target`; `None` when even the cheapest choice does not
/// fit.
fn choose(deltas: &[Vec<(usize, f64, f64)>], bytes0: f64, target: f64) -> Option<Vec<usize>> {
    let pick = |mu: f64| {
        let mut bytes = bytes0;
        let options = deltas
            .iter()
            .map(|d| {
                let &(o, _, db) = d
                    .iter()
                    .min_by(|a, b| (a.1 + mu * a.2).total_cmp(&(b.1 + mu * b.2)).then(a.2.total_cmp(&b.2)))
                    .expect("staying put is a choice");
                bytes += db;
                o
            })
            .collect::<Vec<_>>();
        (options, bytes)
    };
    let cap = target * (1.0 + 1e-12);
    let fits = |mu: f64| pick(mu).1 <= cap;
    let (free, free_bytes) = pick(0.0);
    if free_bytes <= cap {
        return Some(free);
    }
    // Prices in nats per byte per token, bisected on a log scale.
    let (mut lo, mut hi) = (-12.0f64, 6.0f64);
    if !fits(10f64.powf(hi)) {
        return None;
    }
    for _ in 0..60 {
        let mid = 0.5 * (lo + hi);
        if fits(10f64.powf(mid)) { hi = mid } else { lo = mid }
    }
    let (mut options, mut bytes) = pick(10f64.powf(hi));
    // A price reaches only the choices on the convex hull; fill what it leaves of the target one
    // change at a time, the change that lowers the loss most among those that still fit.
    let at = |c: usize, o: usize| *deltas[c].iter().find(|d| d.0 == o).expect("a listed option");
    loop {
        let best = (0..deltas.len())
            .flat_map(|c| deltas[c].iter().map(move |d| (c, *d)))
            .map(|(c, (o, dl, db))| {
                let (_, cl, cb) = at(c, options[c]);
                (c, o, dl - cl, db - cb)
            })
            .filter(|&(_, _, dl, db)| dl < 0.0 && bytes + db <= cap)
            .min_by(|a, b| a.2.total_cmp(&b.2));
        match best {
            Some((c, o, _, db)) => {
                options[c] = o;
                bytes += db;
            }
            None => break,
        }
    }
    Some(options)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
    }

    /// The committed tiny MQAR model with the task and menu of `env`.
    fn tiny(env: &std::path::Path, dev: &burn::tensor::Device) -> ahr_train::EnvRun {
        ahr_train::EnvRun::load(&root().join("policies/models/mqar-tiny"), env, dev).unwrap()
    }

    /// On the committed tiny MQAR model (keys and values from disjoint id ranges: the vocabulary
    /// tells a value): the fit reads training sequences, not the held-out ones; every setting it
    /// gives fits its target on them (bytes add up exactly); some tell classes apart; it is
    /// deterministic.
    #[test]
    fn fit_on_training_sequences_fits_its_targets() {
        let dev = ahr_tpa::device::from_env();
        let ahr_train::EnvRun { spec, model, task } = tiny(&root().join("envs/mqar-tiny.toml"), &dev);
        let cfg = model.config().clone();
        let train = Harness::training(&model, &task, &spec, 4, FIT_SEED, &dev).unwrap();
        let held_out = Harness::new(&model, &task, &spec, 4, &dev, false).unwrap();
        let inputs = |h: &Harness| h.batches().flat_map(|b| b.inputs.clone()).collect::<Vec<u32>>();
        assert_eq!(inputs(&train).len(), 4 * train.seq_len());
        assert_ne!(inputs(&train), inputs(&held_out), "fitted on the held-out sequences");
        let classes = TokenClasses::of_batches(train.batches(), cfg.vocab_size, false, CLASSES);
        let exact = cost::exact_bytes_per_token(&cfg) as f64;
        let targets = [0.2 * exact, 0.5 * exact];
        let mut rounds = 0;
        let found =
            fit(&train, &classes, &targets, &[None], ROUNDS, 2, &Measurements::in_memory(), |_| rounds += 1).unwrap();
        assert!(rounds >= targets.len() && !found.is_empty(), "{rounds} rounds, {} settings", found.len());
        let rcfg = train.rules.config();
        for rule in &found {
            let over = bytes_on(&train, &classes, rule) > targets[1] * (1.0 + 1e-9);
            assert!(!over, "{} over every target", rule.setting(rcfg, &classes));
        }
        assert!(found.iter().any(|r| r.options.iter().any(|&o| o != r.options[0])), "no setting tells classes apart");
        assert_eq!(
            fit(&train, &classes, &targets, &[None], ROUNDS, 1, &Measurements::in_memory(), |_| {}).unwrap(),
            found,
            "workers change the fit"
        );
    }

    /// Rounds past the second go on while the measured loss falls: each starts lower than the one
    /// before it from the same start, and a fit allowed more rounds keeps what fewer find.
    #[test]
    fn rounds_go_on_while_the_loss_falls() {
        let dev = ahr_tpa::device::from_env();
        let ahr_train::EnvRun { spec, model, task } = tiny(&root().join("envs/mqar-tiny.toml"), &dev);
        let cfg = model.config().clone();
        let train = Harness::training(&model, &task, &spec, 4, FIT_SEED, &dev).unwrap();
        let classes = TokenClasses::of_batches(train.batches(), cfg.vocab_size, false, CLASSES);
        let exact = cost::exact_bytes_per_token(&cfg) as f64;
        let targets = [0.1 * exact, 0.2 * exact, 0.3 * exact, 0.5 * exact];
        let mut seen: Vec<(usize, f64)> = Vec::new();
        let many = fit(&train, &classes, &targets, &[None], 6, 2, &Measurements::in_memory(), |r| {
            seen.push((r.round, r.loss))
        })
        .unwrap();
        assert!(seen.iter().any(|&(round, _)| round > 2), "never past two rounds: {seen:?}");
        for w in seen.windows(2) {
            if w[1].0 > 2 {
                assert!(w[1].0 == w[0].0 + 1 && w[1].1 < w[0].1, "a round started no lower: {seen:?}");
            }
        }
        let two = fit(&train, &classes, &targets, &[None], 2, 2, &Measurements::in_memory(), |_| {}).unwrap();
        assert!(two.len() < many.len() && two.iter().all(|r| many.contains(r)), "more rounds lost a setting");
    }

    /// The trim starts from a setting found above its target (within [`TRIM_REACH`] of it) and
    /// what it chooses fits the target.
    #[test]
    fn the_trim_starts_just_above_its_target() {
        let dev = ahr_tpa::device::from_env();
        let ahr_train::EnvRun { spec, model, task } = tiny(&root().join("envs/mqar-tiny.toml"), &dev);
        let cfg = model.config().clone();
        let train = Harness::training(&model, &task, &spec, 4, FIT_SEED, &dev).unwrap();
        let classes = TokenClasses::of_batches(train.batches(), cfg.vocab_size, false, CLASSES);
        let exact = cost::exact_bytes_per_token(&cfg) as f64;
        let targets = [0.20 * exact, 0.21 * exact, 0.3 * exact];
        let mut trims = Vec::new();
        let found = fit(&train, &classes, &targets, &[None], ROUNDS, 2, &Measurements::in_memory(), |r| {
            if r.trim {
                trims.push((r.target, r.bytes));
            }
        })
        .unwrap();
        assert!(!trims.is_empty(), "no trim");
        for &(target, bytes) in &trims {
            assert!(bytes > target && bytes <= TRIM_REACH * target * (1.0 + 1e-9), "{bytes} for {target}");
        }
        let rcfg = train.rules.config();
        for rule in &found {
            let over = bytes_on(&train, &classes, rule) > targets[2] * (1.0 + 1e-9);
            assert!(!over, "{} over every target", rule.setting(rcfg, &classes));
        }
    }

    /// Measurements kept in a file: a second fit reads them back and measures nothing new, to the
    /// same settings; a line cut short is dropped; a file whose first line no longer measures the
    /// same is refused; other fitting sequences get another file.
    #[test]
    fn fit_measurements_are_kept_and_checked() {
        let dev = ahr_tpa::device::from_env();
        let ahr_train::EnvRun { spec, model, task } = tiny(&root().join("envs/mqar-tiny.toml"), &dev);
        let cfg = model.config().clone();
        let train = Harness::training(&model, &task, &spec, 2, FIT_SEED, &dev).unwrap();
        let classes = TokenClasses::of_batches(train.batches(), cfg.vocab_size, false, CLASSES);
        let targets = [0.3 * cost::exact_bytes_per_token(&cfg) as f64];
        let tmp = tempfile::tempdir().unwrap();
        let cache = FitCache { dir: tmp.path().join("fits"), model_fingerprint: "model-a".into() };
        let family = Family::TokenClass;
        let found = fit(&train, &classes, &targets, &[None], ROUNDS, 2, &Measurements::in_memory(), |_| {}).unwrap();
        let first = Measurements::open(&cache, family, &train, &classes).unwrap();
        assert!(first.is_empty());
        assert_eq!(fit(&train, &classes, &targets, &[None], ROUNDS, 2, &first, |_| {}).unwrap(), found);
        let (n, path) = (first.len(), first.path().unwrap().to_path_buf());
        drop(first);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(n > 0 && text.lines().count() == n, "{n} settings, {} lines", text.lines().count());
        // A kill in the middle of a line: the line is dropped and the file cut back to whole lines.
        std::fs::write(&path, format!("{text}{{\"options\":[1,")).unwrap();
        let again = Measurements::open(&cache, family, &train, &classes).unwrap();
        assert_eq!((again.len(), std::fs::read_to_string(&path).unwrap()), (n, text.clone()));
        assert_eq!(fit(&train, &classes, &targets, &[None], ROUNDS, 1, &again, |_| {}).unwrap(), found);
        assert_eq!(again.len(), n, "a refit measured settings again");
        drop(again);
        // The first line altered: refused when the fit measures it again.
        let (head, rest) = text.split_once('\n').unwrap();
        let mut line: serde_json::Value = serde_json::from_str(head).unwrap();
        line["loss"] = serde_json::json!(line["loss"].as_f64().unwrap() + 1e-9);
        std::fs::write(&path, format!("{line}\n{rest}")).unwrap();
        let stale = Measurements::open(&cache, family, &train, &classes).unwrap();
        let err = fit(&train, &classes, &targets, &[None], ROUNDS, 1, &stale, |_| {}).unwrap_err().to_string();
        assert!(err.contains("measures differently"), "{err}");
        // Other fitting sequences, another model: other files.
        let other = Harness::training(&model, &task, &spec, 3, FIT_SEED, &dev).unwrap();
        let other_path = |c: &FitCache, h: &Harness| {
            Measurements::open(c, family, h, &classes).unwrap().path().unwrap().to_path_buf()
        };
        assert_ne!(other_path(&cache, &other), path);
        let model_b = FitCache { model_fingerprint: "model-b".into(), ..cache.clone() };
        assert_ne!(other_path(&model_b, &train), path);
        // Not a measurement file at all: an error, not a guess.
        std::fs::write(&path, "not json\n{}\n").unwrap();
        let err = Measurements::open(&cache, family, &train, &classes).unwrap_err().to_string();
        assert!(err.contains("line 1 is not a measurement"), "{err}");
    }

    /// A fit in two stages keeps what the first alone finds (the first stage is that fit) and goes
    /// on from there over the whole menu, to settings the first stage's options cannot make; every
    /// setting fits its target.
    #[test]
    fn a_second_stage_goes_on_from_the_first() {
        let dev = ahr_tpa::device::from_env();
        let ahr_train::EnvRun { spec, model, task } = tiny(&root().join("envs/mqar-tiny.toml"), &dev);
        let cfg = model.config().clone();
        let train = Harness::training(&model, &task, &spec, 4, FIT_SEED, &dev).unwrap();
        let classes = TokenClasses::of_batches(train.batches(), cfg.vocab_size, false, CLASSES);
        let rcfg = train.rules.config();
        let few: Vec<ahr_tpa::StoreOption> = rcfg
            .menu
            .iter()
            .copied()
            .filter(|o| matches!(o, ahr_tpa::StoreOption::Drop | ahr_tpa::StoreOption::Full))
            .collect();
        assert_eq!(few.len(), 2, "{:?}", rcfg.menu);
        let targets = [0.3 * cost::exact_bytes_per_token(&cfg) as f64];
        let first =
            fit(&train, &classes, &targets, &[Some(&few)], ROUNDS, 2, &Measurements::in_memory(), |_| {}).unwrap();
        let mut stages = Vec::new();
        let both = fit(&train, &classes, &targets, &[Some(&few), None], ROUNDS, 2, &Measurements::in_memory(), |r| {
            stages.push(r.stage)
        })
        .unwrap();
        assert!(stages.contains(&(1, 2)) && stages.contains(&(2, 2)), "{stages:?}");
        assert!(first.iter().all(|r| both.contains(r)), "the second stage lost what the first found");
        let beyond = |r: &TokenClassRule| r.options.iter().any(|&o| !few.contains(&rcfg.menu[o]));
        assert!(!first.iter().any(beyond) && both.iter().any(beyond), "the second stage added nothing");
        for rule in &both {
            let over = bytes_on(&train, &classes, rule) > targets[0] * (1.0 + 1e-9);
            assert!(!over, "{} over the target", rule.setting(rcfg, &classes));
        }
    }

    /// A rule's time-averaged bytes per token on `train`'s sequences.
    fn bytes_on(train: &Harness, classes: &TokenClasses, rule: &TokenClassRule) -> f64 {
        let l_n = train.rules.config().n_layers;
        let p = train
            .read_rule_point("t", PointKind::Rule(Family::TokenClass), "", &|b, e| Ok(rule.choices(classes, l_n, b, e)))
            .unwrap();
        p.kv_bytes_per_token
    }

    /// `fit_prior`'s table is its fitted rule token by token: read back against the policies'
    /// menu (with schedules of its own, which the judge's rules-only schedules sort in among; those
    /// stay out), its choices on the selection sequences hold the bytes and loss of the point it
    /// reports, within the target.
    #[test]
    fn a_fitted_prior_is_its_rule_as_a_table() {
        let dev = ahr_tpa::device::from_env();
        let tmp = tempfile::tempdir().unwrap();
        let env = tmp.path().join("env.toml");
        let text = std::fs::read_to_string(root().join("envs/mqar-tiny.toml")).unwrap();
        let schedules = "[env]\nrecent = [2, 16]\nschedules = [\"full/4/rank:1/12\"]\n";
        std::fs::write(&env, text.replace("[env]\n", schedules)).unwrap();
        let ahr_train::EnvRun { spec, model, task } = tiny(&env, &dev);
        let cfg = model.config().clone();
        let rules = Harness::training(&model, &task, &spec, 1, FIT_SEED, &dev).unwrap();
        assert!(rules.rules.config().menu.iter().any(|o| !cfg.menu.contains(o)), "the rules have options of their own");
        assert!(
            rules.rules.config().menu[..cfg.menu.len()] != cfg.menu[..],
            "the policies' options are not the first of the rules' menu"
        );
        let fitted = fit_prior(&model, &task, &spec, Family::TokenClass, 0.3, 2, None, &dev, |_| {}).unwrap();
        let names: Vec<String> = cfg.menu.iter().map(|o| o.to_string()).collect();
        let prefer = fitted.table.resolve(&names, cfg.n_layers, cfg.vocab_size).unwrap();
        assert!(fitted.table.source.starts_with("token-class at 30.0 %"), "{}", fitted.table.source);
        let select = Harness::training(&model, &task, &spec, SELECT_SEQUENCES, SELECT_SEED, &dev).unwrap();
        // The harness runs choices in the rules' menu: the table's options by name there.
        let rules_menu = &select.rules.config().menu;
        let in_rules: Vec<usize> =
            prefer.iter().map(|&o| rules_menu.iter().position(|r| *r == cfg.menu[o]).unwrap()).collect();
        let p = select.table_point("t", PointKind::Rule(Family::TokenClass), "", &in_rules).unwrap();
        assert_eq!((p.kv_bytes_per_token, p.loss), (fitted.train.kv_bytes_per_token, fitted.train.loss));
        assert!(p.kv_bytes_per_token <= 0.3 * cost::exact_bytes_per_token(&cfg) as f64 * (1.0 + 1e-9));
    }

    /// `token-table` counts its classes on 4× the windows of `token-class`, and tells at least as
    /// many ids apart (every id of ≥ 0.2 % of the tokens rather than the 24 most frequent of ≥ 1 %).
    #[test]
    fn the_table_grain_fits_more_classes_on_more_windows() {
        let dev = ahr_tpa::device::from_env();
        let ahr_train::EnvRun { spec, model, task } = tiny(&root().join("envs/mqar-tiny.toml"), &dev);
        let (coarse, c) = fitting_set(&model, &task, &spec, CLASSES, &dev).unwrap();
        let (fine, t) = fitting_set(&model, &task, &spec, TABLE, &dev).unwrap();
        let tokens = |h: &Harness| h.batches().map(|b| b.inputs.len()).sum::<usize>();
        assert_eq!(tokens(&coarse), FIT_SEQUENCES * coarse.seq_len());
        assert_eq!(tokens(&fine), 4 * tokens(&coarse));
        assert!(t.len() > c.len(), "{} table classes, {} classes", t.len(), c.len());
    }

    #[test]
    fn frequent_ids_get_classes_and_the_rest_equal_ranges() {
        // 40 ids: id 5 holds half the tokens, id 7 a quarter; the other 38 one each except id 39.
        let mut counts = vec![1u64; 40];
        counts[39] = 0;
        counts[5] = 80;
        counts[7] = 40;
        let c = TokenClasses::from_counts(&counts, true, CLASSES);
        assert_eq!(c.class(5), 0);
        assert_eq!(c.class(7), 1);
        assert_eq!(c.name(0), "\\x05");
        // 37 ids of count 1 (and an unseen one) over 8 ranges.
        assert_eq!(c.len(), 2 + RANGE_CLASSES);
        assert_eq!(c.class(0), 2);
        // The first range closes with the token that passes 37/8 = 4.6: the fifth rare id (4).
        assert_eq!((c.class(4), c.class(6)), (2, 3));
        assert_eq!(c.class(39), 2 + RANGE_CLASSES - 1, "the unseen id joins the last range");
        // Ranges are contiguous and in id order.
        let rare: Vec<usize> = (0..40).filter(|&i| i != 5 && i != 7).map(|i| c.class(i)).collect();
        assert!(rare.windows(2).all(|w| w[0] <= w[1]), "{rare:?}");
        assert_eq!(TokenClasses::from_counts(&[0, 0, 0], false, CLASSES).len(), 1, "nothing seen: one range");
        assert_eq!(c.class(1000), c.len() - 1);
        // The table's grain: every id with ≥ 0.2 % of the 157 tokens (one occurrence is 0.64 %)
        // is its own class, most frequent first, then ids in order; only the unseen id 39 is left
        // for the ranges (one range: its cumulative count never passes a share of zero).
        let t = TokenClasses::from_counts(&counts, true, TABLE);
        assert_eq!(t.len(), 39 + 1);
        assert_eq!((t.class(5), t.class(7), t.class(0), t.class(4), t.class(6)), (0, 1, 2, 6, 7));
        assert_eq!(t.class(39), 39);
        assert_eq!(t.name(39), "'–'", "a range of one id");
    }

    #[test]
    fn split_classes_tell_sure_from_unsure_writes() {
        // ids 0–3: id 1 and id 2 frequent (their own classes), ids 0 and 3 in ranges.
        let counts = [1u64, 50, 30, 1];
        let c = TokenClasses::from_counts(&counts, false, CLASSES);
        let n = c.len();
        let s = c.clone().split_at(0.5);
        assert_eq!((s.len(), s.threshold()), (2 * n, Some(0.5)));
        assert_eq!(s.name(n), format!("{} (unsure)", c.name(0)));
        // At most the threshold: the class itself; above it, its unsure twin; `class` is the sure half.
        assert_eq!((s.class_at(1, 0.5), s.class_at(1, 0.51), s.class(1)), (c.class(1), c.class(1) + n, c.class(1)));
        assert_eq!(s.class_at(9, 0.9), c.class(9) + n, "an id past the vocabulary: the last range, unsure");
        assert_eq!(c.class_at(1, 0.9), c.class(1), "unsplit classes ignore the entropy");
        // Two layers: layer 0 keeps id 1 at option 3 when sure and option 7 when unsure, all else 0;
        // layer 1 everything at 1. Entropy [0.2, 0.8] over the sequence [1, 1].
        let mut options = vec![0; 2 * s.len()];
        options[s.class(1)] = 3;
        options[s.class(1) + n] = 7;
        options[s.len()..].fill(1);
        let rule = TokenClassRule { options };
        let batch = Batch {
            inputs: vec![1, 1, 2],
            labels: vec![ahr_tasks::IGNORE; 3],
            batch_size: 1,
            seq_len: 3,
            difficulty: vec![None],
            roles: Vec::new(),
        };
        let ch = rule.choices(&s, 2, &batch, &[vec![0.2, 0.8, 0.9]]);
        let got: Vec<[usize; 2]> = (0..3).map(|t| [ch.get(0, t, 0), ch.get(0, t, 1)]).collect();
        assert_eq!(got, [[3, 1], [7, 1], [0, 1]]);
        // Unsplit, the entropy is not read (none given for the sequence).
        let plain = TokenClassRule { options: vec![2; 2 * n] }.choices(&c, 2, &batch, &[]);
        assert_eq!(plain.get(0, 1, 0), 2);
    }

    #[test]
    fn the_median_is_the_lower_middle() {
        assert_eq!(median([3.0, 1.0, 2.0].into_iter()), 2.0);
        assert_eq!(median([4.0, 1.0, 3.0, 2.0].into_iter()), 2.0);
        assert_eq!(median(std::iter::empty()), 0.0);
    }

    #[test]
    fn choose_takes_the_best_loss_per_byte_that_fits() {
        // Two coordinates at 10 bytes in all; coordinate 0 can buy −1.0 loss for +10 bytes
        // (option 1), coordinate 1 −0.4 for +4 (option 2) or give back 3 bytes for +0.1 (option 3).
        let deltas = vec![vec![(0, 0.0, 0.0), (1, -1.0, 10.0)], vec![(0, 0.0, 0.0), (2, -0.4, 4.0), (3, 0.1, -3.0)]];
        assert_eq!(choose(&deltas, 10.0, 100.0), Some(vec![1, 2]), "everything fits: the lowest loss");
        // The price that fits 14 bytes gives [0, 3] (7 bytes, +0.1); the fill buys option 2 (−0.5).
        assert_eq!(choose(&deltas, 10.0, 14.0), Some(vec![0, 2]), "the fill reaches what no price does");
        assert_eq!(choose(&deltas, 10.0, 17.0), Some(vec![1, 3]), "buy 10, give back 3: 17 bytes, −0.9");
        assert_eq!(choose(&deltas, 10.0, 7.0), Some(vec![0, 3]));
        assert_eq!(choose(&deltas, 10.0, 6.0), None, "nothing reaches 6 bytes");
    }
}
