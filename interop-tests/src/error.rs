//! The one error type of the harness.
//!
//! Every failure names what went wrong in words a test log reader can act on (which command, which
//! package, which library), because these errors surface as failed tests on a CI machine.

use std::path::PathBuf;

/// Why the harness could not prepare or run a guest or a helper process.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// A file-system or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What the harness was doing.
        what: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A host command ran but reported failure.
    #[error("command `{command}` failed ({status}): {stderr}")]
    Command {
        /// The command line, for the log.
        command: String,
        /// Its exit status.
        status: String,
        /// The tail of its standard error.
        stderr: String,
    },
    /// A shared library some guest binary needs is in none of the fetched packages.
    #[error("guest image: no fetched package provides {soname} (needed by {needed_by}); add its package to packages::EXTRA_LIBRARY_PACKAGES")]
    MissingLibrary {
        /// The library's soname, e.g. `libaio.so.1`.
        soname: String,
        /// The first guest file that needs it.
        needed_by: String,
    },
    /// The image inputs are inconsistent (a module, the kernel, the apt metadata).
    #[error("guest image: {0}")]
    Image(String),
    /// A binary the harness was asked to start does not exist.
    #[error("binary {path} does not exist ({hint})")]
    MissingBinary {
        /// Where the harness looked.
        path: PathBuf,
        /// How to provide it.
        hint: String,
    },
    /// A helper process did not become ready in time or exited early.
    #[error("process {0}")]
    Process(String),
}

/// Result alias for the harness.
pub type Result<T> = std::result::Result<T, HarnessError>;

/// Wraps an `io::Error` with what the harness was doing, for `map_err`.
pub(crate) fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> HarnessError {
    let what = what.into();
    move |source| HarnessError::Io { what, source }
}
