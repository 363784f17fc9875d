//! Where segments, the ledger and position checkpoints live: a local directory or an object store prefix.
//!
//! Writes to a local directory are fsynced (file and directory) before they return, so that a ledger
//! entry or a segment that was reported written survives a power cut; object stores are durable on put.

use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt, PutPayload};

use crate::error::{Result, StoreError};

/// A storage location: the root every store path is relative to.
#[derive(Clone, Debug)]
pub struct Location {
    object_store: Arc<dyn ObjectStore>,
    /// Set when the location is a local directory: writes are fsynced there.
    local_root: Option<PathBuf>,
    url: String,
}

impl Location {
    /// Opens a location from a local path, a `file://` URL or an `s3://bucket/prefix` URL. S3 settings
    /// (credentials, region, endpoint, `AWS_ALLOW_HTTP`) come from the usual `AWS_*` environment variables.
    pub fn open(location: &str) -> Result<Location> {
        let bad = |reason: String| StoreError::BadLocation { location: location.into(), reason };
        if let Some(rest) = location.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(bad("no bucket".into()));
            }
            let s3 = object_store::aws::AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .build()
                .map_err(|e| bad(e.to_string()))?;
            let prefix = prefix.trim_matches('/');
            let object_store: Arc<dyn ObjectStore> =
                if prefix.is_empty() { Arc::new(s3) } else { Arc::new(PrefixStore::new(s3, Path::from(prefix))) };
            return Ok(Location { object_store, local_root: None, url: location.trim_end_matches('/').into() });
        }
        if location.contains("://") && !location.starts_with("file://") {
            return Err(bad("only local paths, file:// and s3:// are supported".into()));
        }
        let path = FsPath::new(location.strip_prefix("file://").unwrap_or(location));
        private_dir(path)?;
        let root = std::fs::canonicalize(path).map_err(|e| StoreError::io(path, e))?;
        let local =
            LocalFileSystem::new_with_prefix(&root).map_err(|e| bad(e.to_string()))?.with_automatic_cleanup(true);
        Ok(Location { object_store: Arc::new(local), url: root.display().to_string(), local_root: Some(root) })
    }

    /// The object store, for readers that take one (Parquet, DataFusion). Paths are relative to the location.
    pub fn object_store(&self) -> Arc<dyn ObjectStore> {
        self.object_store.clone()
    }

    /// The location as the user gave it (canonical path for a directory).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The local directory, when the location is one.
    pub fn local_root(&self) -> Option<&FsPath> {
        self.local_root.as_deref()
    }

    /// A path from its text: listed paths come back in their encoded form (`%5B` for `[`), which must not
    /// be encoded a second time.
    fn path(path: &str) -> Path {
        Path::parse(path).unwrap_or_else(|_| Path::from(path))
    }

    /// Writes an object atomically and durably.
    pub async fn put(&self, path: &str, bytes: Bytes) -> Result<()> {
        self.object_store.put(&Self::path(path), PutPayload::from_bytes(bytes)).await?;
        if let Some(root) = &self.local_root {
            let file = root.join(path);
            let dir = file.parent().expect("an object path has a parent directory").to_path_buf();
            tokio::task::spawn_blocking(move || -> Result<()> {
                private_file(&file)?;
                std::fs::File::open(&file).and_then(|f| f.sync_all()).map_err(|e| StoreError::io(&file, e))?;
                // Sync every directory up to the root would be ideal; the new entry's own directory is the
                // one that matters, and its parent when the directory itself was just created.
                for d in [dir.as_path(), dir.parent().unwrap_or(&dir)] {
                    std::fs::File::open(d).and_then(|f| f.sync_all()).map_err(|e| StoreError::io(d, e))?;
                }
                Ok(())
            })
            .await
            .map_err(|e| StoreError::Internal(format!("fsync task failed: {e}")))??;
        }
        Ok(())
    }

    pub async fn get(&self, path: &str) -> Result<Bytes> {
        Ok(self.object_store.get(&Self::path(path)).await?.bytes().await?)
    }

    /// Writes an object into `out` as it arrives, a part at a time (memory holds a part, not the object);
    /// returns the bytes written.
    pub async fn get_into(&self, path: &str, out: &mut std::fs::File) -> Result<u64> {
        use std::io::Write;
        let mut parts = self.object_store.get(&Self::path(path)).await?.into_stream();
        let mut written = 0u64;
        while let Some(part) = parts.try_next().await? {
            out.write_all(&part).map_err(|e| StoreError::io(path, e))?;
            written += part.len() as u64;
        }
        Ok(written)
    }

    /// Reads an object, or `None` when it does not exist.
    pub async fn get_opt(&self, path: &str) -> Result<Option<Bytes>> {
        match self.object_store.get(&Self::path(path)).await {
            Ok(res) => Ok(Some(res.bytes().await?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes an object; deleting a missing object is not an error.
    pub async fn delete(&self, path: &str) -> Result<()> {
        match self.object_store.delete(&Self::path(path)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Every object under a prefix, recursively.
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let prefix = Path::from(prefix);
        Ok(self.object_store.list(Some(&prefix)).try_collect().await?)
    }
}

/// Makes a directory (and its parents) that only its owner may enter, and takes the group's and others'
/// rights away from one that exists: evidence is not for every account on the machine.
pub fn private_dir(path: &FsPath) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(path).map_err(|e| StoreError::io(path, e))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).map_err(|e| StoreError::io(path, e))
    }
    #[cfg(not(unix))]
    {
        std::fs::create_dir_all(path).map_err(|e| StoreError::io(path, e))
    }
}

/// Makes a file readable and writable by its owner only.
pub fn private_file(path: &FsPath) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|e| StoreError::io(path, e))?;
    }
    Ok(())
}
