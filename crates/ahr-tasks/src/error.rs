//! Task errors: each names the file (and line) and what was expected.

use std::path::{Path, PathBuf};

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// What can go wrong building a task.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or folder could not be read.
    #[error("{path}: {cause}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The OS error.
        cause: std::io::Error,
    },
    /// A line of a data file is malformed.
    #[error("{path}:{line}: {msg}")]
    Line {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        msg: String,
    },
    /// The data is too small or empty.
    #[error("{path}: {msg}")]
    Data {
        /// The file or folder.
        path: PathBuf,
        /// What is missing.
        msg: String,
    },
    /// Task parameters are inconsistent.
    #[error("invalid task config: {0}")]
    Config(String),
}

impl Error {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io { path: path.to_path_buf(), cause: source }
    }
    pub(crate) fn data(path: &Path, msg: impl Into<String>) -> Self {
        Error::Data { path: path.to_path_buf(), msg: msg.into() }
    }
}
