//! [`StoreError`]: what can go wrong with the data directory.

use std::path::PathBuf;

/// A failure of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The data dir was written by another (usually newer) format version.
    #[error(
        "data dir {path} has format {found:?}; this warren reads format {expected}. Refusing to \
         start rather than rewrite it: use the warren version that wrote it, or a new --data-dir"
    )]
    Version {
        /// The data dir.
        path: PathBuf,
        /// What its FORMAT file says.
        found: String,
        /// What this build reads.
        expected: u32,
    },
    /// A file is damaged beyond the torn tail that recovery repairs.
    #[error("{path}: {problem}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
}

impl StoreError {
    pub(crate) fn io(
        what: &'static str,
        path: &std::path::Path,
    ) -> impl FnOnce(std::io::Error) -> StoreError {
        let path = path.to_path_buf();
        move |source| StoreError::Io { what, path, source }
    }
}
