//! Byte-level text: every byte is a token (vocabulary 256), the target is the next byte.
//!
//! The corpus is a file or a folder (read recursively, files in sorted path order, optionally
//! filtered by extension), concatenated. Held out: the last `valid_fraction` of the bytes
//! (`split = "tail"`), or whole files (`split = "files"`: a file is held out when the FNV-1a hash of
//! its path relative to `path`, over 2⁶⁴, is below `valid_fraction` — reproducible by any
//! generator, and no document is seen in both splits). `exclude` leaves out files or folders by
//! their path relative to `path` (a shared folder such as `/usr/share/doc` gains files when
//! packages are installed, and every held-out window moves with them). Training batches are random
//! windows; validation walks the held-out bytes in order.

use std::path::{Path, PathBuf};

use rand::RngExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::batch::{Batch, Split, rng_for};
use crate::error::{Error, Result};

/// Text corpus parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextConfig {
    /// A file or a folder of text files.
    pub path: PathBuf,
    /// Bytes per sequence.
    #[serde(default = "default_len")]
    pub seq_len: usize,
    /// Fraction of the corpus (its end) held out for evaluation.
    #[serde(default = "default_valid_fraction")]
    pub valid_fraction: f64,
    /// Only files with these extensions (all files when empty).
    #[serde(default)]
    pub extensions: Vec<String>,
    /// Cap on validation windows (0 = all).
    #[serde(default = "default_valid_windows")]
    pub max_valid_windows: usize,
    /// How the held-out bytes are chosen.
    #[serde(default)]
    pub split: TextSplit,
    /// Files or folders under `path` left out, by their path relative to it (`libpmix-dev`,
    /// `librdmacm1/librdmacm.md`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<PathBuf>,
}

/// How a text corpus is split into training and held-out bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TextSplit {
    /// The last `valid_fraction` of the concatenated bytes.
    #[default]
    Tail,
    /// Whole files, chosen by a hash of their relative path (see the module docs).
    Files,
}

/// 64-bit FNV-1a of `bytes`.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}

/// Whether `file` (under `root`) is held out by `split = "files"`.
fn held_out(root: &Path, file: &Path, valid_fraction: f64) -> bool {
    let rel = file.strip_prefix(root).unwrap_or(file);
    let key: Vec<String> = rel.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
    (fnv1a(key.join("/").as_bytes()) as f64 / 2f64.powi(64)) < valid_fraction
}

fn default_len() -> usize {
    256
}
fn default_valid_fraction() -> f64 {
    0.1
}
fn default_valid_windows() -> usize {
    256
}

/// A loaded corpus.
#[derive(Clone, Debug)]
pub struct TextCorpus {
    config: TextConfig,
    train: Vec<u8>,
    valid: Vec<u8>,
    fingerprint: String,
    files: usize,
}

/// The files under `path` (itself if a file) with one of `exts` (any if empty), in sorted path
/// order, less those whose path relative to `root` starts with one of `exclude`.
fn collect_files(root: &Path, path: &Path, exts: &[String], exclude: &[PathBuf], out: &mut Vec<PathBuf>) -> Result<()> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if meta.is_file() {
        out.push(path.to_path_buf());
        return Ok(());
    }
    let mut entries: Vec<PathBuf> =
        std::fs::read_dir(path).map_err(|e| Error::io(path, e))?.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    for p in entries {
        if p.strip_prefix(root).is_ok_and(|rel| exclude.iter().any(|x| rel.starts_with(x))) {
            continue;
        }
        if p.is_dir() {
            collect_files(root, &p, exts, exclude, out)?;
        } else if exts.is_empty() || p.extension().and_then(|e| e.to_str()).is_some_and(|e| exts.iter().any(|x| x == e))
        {
            out.push(p);
        }
    }
    Ok(())
}

impl TextCorpus {
    /// Read the corpus; fails if it is missing, empty, or too small for one window per split.
    pub fn load(config: &TextConfig) -> Result<Self> {
        if !(0.0 < config.valid_fraction && config.valid_fraction < 1.0) {
            return Err(Error::Config(format!(
                "text: valid_fraction must lie in (0, 1), found {}",
                config.valid_fraction
            )));
        }
        if config.seq_len == 0 {
            return Err(Error::Config("text: seq_len must be at least 1".into()));
        }
        if let Some(x) = config.exclude.iter().find(|x| x.is_absolute() || x.as_os_str().is_empty()) {
            return Err(Error::Config(format!(
                "text: exclude names paths relative to `path`, found `{}`",
                x.display()
            )));
        }
        let mut files = Vec::new();
        collect_files(&config.path, &config.path, &config.extensions, &config.exclude, &mut files)?;
        let (mut bytes, mut valid) = (Vec::new(), Vec::new());
        for f in &files {
            let content = std::fs::read(f).map_err(|e| Error::io(f, e))?;
            match config.split == TextSplit::Files && held_out(&config.path, f, config.valid_fraction) {
                true => valid.extend(content),
                false => bytes.extend(content),
            }
        }
        if bytes.is_empty() && valid.is_empty() {
            return Err(Error::data(&config.path, "the text corpus is empty (no files, or only empty files)"));
        }
        if config.split == TextSplit::Tail {
            let cut = ((bytes.len() as f64) * (1.0 - config.valid_fraction)) as usize;
            valid = bytes.split_off(cut);
        }
        let need = config.seq_len + 1;
        if bytes.len() < need || valid.len() < need {
            return Err(Error::data(
                &config.path,
                format!(
                    "corpus too small: {} training and {} held-out bytes, each split needs at least seq_len + 1 = {need}",
                    bytes.len(),
                    valid.len()
                ),
            ));
        }
        let mut hasher = Sha256::new();
        for part in [&bytes, &valid] {
            hasher.update((part.len() as u64).to_le_bytes());
            hasher.update(part);
        }
        let fingerprint = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
        Ok(Self { config: config.clone(), train: bytes, valid, fingerprint, files: files.len() })
    }

    /// SHA-256 of the training and held-out bytes as read (the corpus a directory such as
    /// `/usr/share/doc` gives changes when packages are installed: two runs on one env file
    /// compare only if this is the same).
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Files read.
    pub fn files(&self) -> usize {
        self.files
    }

    /// Bytes per window.
    pub fn seq_len(&self) -> usize {
        self.config.seq_len
    }

    /// Training and held-out bytes.
    pub fn sizes(&self) -> (usize, usize) {
        (self.train.len(), self.valid.len())
    }

    /// Validation windows available (non-overlapping, capped by `max_valid_windows`).
    pub fn valid_windows(&self) -> usize {
        let n = (self.valid.len() - 1) / self.config.seq_len;
        match self.config.max_valid_windows {
            0 => n,
            cap => n.min(cap),
        }
    }

    /// Batch `index` of `split`.
    pub fn batch(&self, seed: u64, split: Split, index: u64, batch_size: usize) -> Batch {
        let l = self.config.seq_len;
        let mut batch = Batch {
            inputs: Vec::with_capacity(batch_size * l),
            labels: Vec::with_capacity(batch_size * l),
            batch_size,
            seq_len: l,
            difficulty: vec![None; batch_size],
            roles: Vec::new(),
        };
        let mut rng = rng_for(seed, split, index);
        for i in 0..batch_size {
            let (data, start) = match split {
                Split::Train => (&self.train, rng.random_range(0..self.train.len() - l)),
                Split::Valid => {
                    let w = (index as usize * batch_size + i) % self.valid_windows();
                    (&self.valid, w * l)
                }
            };
            let window = &data[start..start + l + 1];
            batch.inputs.extend(window[..l].iter().map(|&b| b as u32));
            batch.labels.extend(window[1..].iter().map(|&b| b as i64));
        }
        batch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_are_read_in_order_and_split() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("a.txt"), "abcdefghij".repeat(10)).unwrap();
        std::fs::write(dir.path().join("sub/b.txt"), "0123456789".repeat(10)).unwrap();
        std::fs::write(dir.path().join("skip.bin"), [0u8; 50]).unwrap();
        let cfg = TextConfig {
            path: dir.path().into(),
            seq_len: 8,
            valid_fraction: 0.1,
            extensions: vec!["txt".into()],
            max_valid_windows: 0,
            split: TextSplit::Tail,
            exclude: vec![],
        };
        let c = TextCorpus::load(&cfg).unwrap();
        assert_eq!(c.sizes(), (180, 20));
        let b = c.batch(1, Split::Valid, 0, 2);
        assert_eq!(b.inputs[..8], "01234567".bytes().map(u32::from).collect::<Vec<_>>()[..]);
        assert_eq!(b.labels[0], b'1' as i64);
        let t = c.batch(1, Split::Train, 7, 3);
        assert_eq!(t, c.batch(1, Split::Train, 7, 3));
        for s in 0..3 {
            assert_eq!(t.labels[s * 8], t.inputs[s * 8 + 1] as i64);
        }
    }

    /// `split = "files"`: ten one-letter files, valid fraction 0.3; FNV-1a of the names over 2⁶⁴
    /// (computed independently): b 0.007, c 0.017, d 0.182 are below 0.3, the others (j 0.325 the
    /// closest) above — so b, c, d are held out whole, in path order.
    #[test]
    fn whole_files_are_held_out_by_their_path_hash() {
        let dir = tempfile::tempdir().unwrap();
        for c in "abcdefghij".chars() {
            std::fs::write(dir.path().join(format!("{c}.txt")), c.to_string().repeat(20)).unwrap();
        }
        let cfg = TextConfig {
            path: dir.path().into(),
            seq_len: 8,
            valid_fraction: 0.3,
            extensions: vec![],
            max_valid_windows: 0,
            split: TextSplit::Files,
            exclude: vec![],
        };
        let c = TextCorpus::load(&cfg).unwrap();
        assert_eq!(c.sizes(), (140, 60));
        assert_eq!(c.valid, ["b".repeat(20), "c".repeat(20), "d".repeat(20)].concat().into_bytes());
        assert!(!c.train.iter().any(|b| b"bcd".contains(b)), "no held-out file in training");
        assert_eq!(c.files(), 10);
        // The fingerprint: the same bytes, the same value; a file more (a package installed into
        // the folder), another value; moving a byte across the split, another value.
        assert_eq!(TextCorpus::load(&cfg).unwrap().fingerprint(), c.fingerprint());
        std::fs::write(dir.path().join("k.txt"), "k".repeat(20)).unwrap();
        let more = TextCorpus::load(&cfg).unwrap();
        assert_ne!(more.fingerprint(), c.fingerprint());
        std::fs::remove_file(dir.path().join("k.txt")).unwrap();
        let tail = TextCorpus::load(&TextConfig { split: TextSplit::Tail, ..cfg }).unwrap();
        assert_ne!(tail.fingerprint(), c.fingerprint());
        assert_eq!(c.fingerprint().len(), 64);
    }

    /// `exclude`: a folder and a file left out by their relative path read as if they were not
    /// there (the same bytes, the same fingerprint); a name that only begins like an excluded one
    /// stays; an absolute path is refused.
    #[test]
    fn excluded_paths_read_as_if_absent() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = TextConfig {
            path: dir.path().into(),
            seq_len: 8,
            valid_fraction: 0.2,
            extensions: vec!["md".into()],
            max_valid_windows: 0,
            split: TextSplit::Tail,
            exclude: vec![],
        };
        for (name, text) in [("a/doc.md", "aaaa"), ("ab/doc.md", "bbbb"), ("c/x.md", "cccc"), ("c/y.md", "dddd")] {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text.repeat(10)).unwrap();
        }
        let without = TextConfig { exclude: vec!["a".into(), "c/y.md".into()], ..cfg.clone() };
        let c = TextCorpus::load(&without).unwrap();
        assert_eq!(c.files(), 2);
        assert_eq!([&c.train[..], &c.valid[..]].concat(), ["bbbb".repeat(10), "cccc".repeat(10)].concat().into_bytes());
        std::fs::remove_dir_all(dir.path().join("a")).unwrap();
        std::fs::remove_file(dir.path().join("c/y.md")).unwrap();
        assert_eq!(TextCorpus::load(&cfg).unwrap().fingerprint(), c.fingerprint());
        let abs = TextConfig { exclude: vec![dir.path().join("c")], ..cfg };
        let err = TextCorpus::load(&abs).unwrap_err().to_string();
        assert!(err.contains("relative"), "{err}");
    }

    #[test]
    fn empty_or_missing_corpora_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = |p: PathBuf| TextConfig {
            path: p,
            seq_len: 8,
            valid_fraction: 0.1,
            extensions: vec![],
            max_valid_windows: 0,
            split: TextSplit::Tail,
            exclude: vec![],
        };
        let err = TextCorpus::load(&cfg(dir.path().into())).unwrap_err().to_string();
        assert!(err.contains("empty"), "{err}");
        std::fs::write(dir.path().join("a.txt"), "tiny").unwrap();
        let err = TextCorpus::load(&cfg(dir.path().into())).unwrap_err().to_string();
        assert!(err.contains("too small"), "{err}");
        let err = TextCorpus::load(&cfg(dir.path().join("missing"))).unwrap_err().to_string();
        assert!(err.contains("missing"), "{err}");
    }
}
