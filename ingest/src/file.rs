//! The file source: files and directories (recursive, plain or gzip), read as units for the pipeline.

use std::path::{Path, PathBuf};

use crate::error::IngestError;

/// One input file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInput {
    pub path: PathBuf,
    pub bytes: u64,
}

impl FileInput {
    /// The stream name under which the file's position is stored.
    pub fn stream(&self) -> String {
        format!("file:{}", self.path.display())
    }
}

/// Lists the files under `path` (the path itself when it is a file), recursively, in name order.
/// Hidden files and directories (names starting with `.`) are skipped.
pub fn list(path: &Path) -> Result<Vec<FileInput>, IngestError> {
    let path = std::fs::canonicalize(path).map_err(|e| IngestError::io(path, e))?;
    let mut files = Vec::new();
    walk(&path, &mut files)?;
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

fn walk(path: &Path, files: &mut Vec<FileInput>) -> Result<(), IngestError> {
    let metadata = std::fs::metadata(path).map_err(|e| IngestError::io(path, e))?;
    if metadata.is_file() {
        files.push(FileInput { path: path.to_path_buf(), bytes: metadata.len() });
        return Ok(());
    }
    for entry in std::fs::read_dir(path).map_err(|e| IngestError::io(path, e))? {
        let entry = entry.map_err(|e| IngestError::io(path, e))?;
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        walk(&entry.path(), files)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_are_listed_recursively_in_order_without_hidden_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("b/c")).unwrap();
        std::fs::create_dir_all(dir.path().join(".git")).unwrap();
        std::fs::write(dir.path().join("b/c/2.log"), "x").unwrap();
        std::fs::write(dir.path().join("a.json"), "xy").unwrap();
        std::fs::write(dir.path().join(".git/x"), "x").unwrap();
        let files = list(dir.path()).unwrap();
        let names: Vec<String> = files
            .iter()
            .map(|f| f.path.strip_prefix(std::fs::canonicalize(dir.path()).unwrap()).unwrap().display().to_string())
            .collect();
        assert_eq!(names, vec!["a.json", "b/c/2.log"]);
        assert_eq!(files[0].bytes, 2);
        assert!(list(&dir.path().join("missing")).is_err());
    }
}
