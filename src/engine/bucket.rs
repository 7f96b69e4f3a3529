//! The bucket as the engine reads it: one listing classified into the pure [`Inventory`], and
//! manifests fetched and checked. The only place where storage I/O meets the inventory types.

use crate::inventory::Inventory;
use crate::manifest::Manifest;
use crate::store::{Store, StoreError};

/// List the whole prefix once and classify it.
pub async fn scan(store: &Store) -> Result<Inventory, StoreError> {
    Ok(Inventory::classify(store.list("").await?))
}

/// Read and check a dump's manifest.
pub async fn read_manifest(store: &Store, manifest_key: &str) -> Result<Manifest, ReadError> {
    let bytes = store.get(manifest_key).await?;
    Ok(Manifest::from_json(&bytes, manifest_key)?)
}

/// A manifest that could not be fetched or parsed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Manifest(#[from] crate::manifest::ManifestError),
}
