//! Directory entries that survive a power cut: a new file or directory is only durable once the
//! directory holding its name is fsynced, so every directory the store creates is fsynced into
//! its parent before anything is acknowledged.

use std::io;
use std::path::{Path, PathBuf};

/// `fsync(2)` of the directory `dir`: makes the names created, renamed or removed in it durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Creates `dir` and its missing ancestors, fsyncing the parent of each directory it creates,
/// so the whole path is durable when it returns. A component that another thread or process
/// created meanwhile has its parent fsynced as well (its creator may not have done so yet).
pub fn create_dir_all_durable(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    // The missing components, deepest first.
    let mut missing: Vec<PathBuf> = Vec::new();
    let mut at = dir;
    while !at.as_os_str().is_empty() && !at.is_dir() {
        missing.push(at.to_path_buf());
        match at.parent() {
            Some(parent) => at = parent,
            None => break,
        }
    }
    for component in missing.iter().rev() {
        match std::fs::create_dir(component) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && component.is_dir() => {}
            Err(e) => return Err(e),
        }
        let parent = match component.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        sync_dir(parent)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_every_missing_level_and_accepts_existing_ones() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("a/b/c");
        create_dir_all_durable(&deep).unwrap();
        assert!(deep.is_dir());
        create_dir_all_durable(&deep).unwrap();
        create_dir_all_durable(&dir.path().join("a/d")).unwrap();
        assert!(dir.path().join("a/d").is_dir());
        std::fs::write(dir.path().join("file"), b"x").unwrap();
        assert!(create_dir_all_durable(&dir.path().join("file/sub")).is_err());
    }
}
