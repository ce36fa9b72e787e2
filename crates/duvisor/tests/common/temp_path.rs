//! Temporary files for tests (the library's unit tests include this file too).

/// A file path in a fresh temporary directory, which is removed with its contents when this
/// is dropped (an open file stays usable: the tests' images and scripts need only live as
/// long as the test).
pub struct TempPath {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
}

impl TempPath {
    /// `name` in a new directory, not created yet.
    pub fn new(name: &str) -> TempPath {
        let dir = tempfile::Builder::new()
            .prefix("duvisor-test-")
            .tempdir()
            .expect("creating a temporary directory");
        let path = dir.path().join(name);
        TempPath { _dir: dir, path }
    }

    /// `name` holding `data`.
    pub fn with(name: &str, data: &[u8]) -> TempPath {
        let p = TempPath::new(name);
        std::fs::write(&p.path, data).expect("writing a temporary file");
        p
    }
}

impl std::ops::Deref for TempPath {
    type Target = std::path::Path;
    fn deref(&self) -> &std::path::Path {
        &self.path
    }
}

impl AsRef<std::path::Path> for TempPath {
    fn as_ref(&self) -> &std::path::Path {
        &self.path
    }
}

impl AsRef<std::ffi::OsStr> for TempPath {
    fn as_ref(&self) -> &std::ffi::OsStr {
        self.path.as_os_str()
    }
}
