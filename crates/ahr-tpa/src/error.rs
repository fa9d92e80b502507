//! Errors of the model crate: every message names the file (or the tensor) and what was expected.

use std::path::{Path, PathBuf};

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// What can go wrong loading, saving or running a model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{path}: {cause}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        cause: std::io::Error,
    },
    /// A file's content could not be parsed.
    #[error("{path}: cannot parse: {msg}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        msg: String,
    },
    /// A config is inconsistent.
    #[error("{path}: invalid config: {msg}")]
    Config {
        /// The file.
        path: PathBuf,
        /// The field and the problem.
        msg: String,
    },
    /// Weights do not match the config (names, shapes, dtypes).
    #[error("{path}: {msg}")]
    Weights {
        /// The file.
        path: PathBuf,
        /// The tensor and the problem.
        msg: String,
    },
    /// Input to a forward pass has the wrong shape or content.
    #[error("invalid input: {0}")]
    Input(String),
}

/// A setting out of its range, or not fitting the rest of its config: which setting and why.
/// Every `validate` and `check` of a config returns it; loaders add the file's path.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{setting}: {reason}")]
pub struct Invalid {
    /// The setting as its file spells it (`` `head_dim` ``, `[reward] budget`).
    pub setting: String,
    /// What is wrong, with the value found.
    pub reason: String,
}

impl Invalid {
    /// `setting` is wrong because `reason`.
    pub fn new(setting: impl Into<String>, reason: impl Into<String>) -> Self {
        Self { setting: setting.into(), reason: reason.into() }
    }
}

impl Error {
    /// An I/O error on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io { path: path.to_path_buf(), cause: source }
    }
    /// `path` could not be parsed.
    pub fn parse(path: &Path, msg: impl Into<String>) -> Self {
        Error::Parse { path: path.to_path_buf(), msg: msg.into() }
    }
    /// `path` holds an inconsistent config.
    pub fn config(path: &Path, msg: impl Into<String>) -> Self {
        Error::Config { path: path.to_path_buf(), msg: msg.into() }
    }
    /// `path` holds weights that do not fit.
    pub fn weights(path: &Path, msg: impl Into<String>) -> Self {
        Error::Weights { path: path.to_path_buf(), msg: msg.into() }
    }
}
