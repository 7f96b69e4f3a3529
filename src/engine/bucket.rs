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

/// Delete a committed object: its manifest first, then its data, so a deletion cut short leaves
/// debris (cleaned later), never a manifest whose data is gone.
pub async fn delete_committed(
    store: &Store,
    manifest_key: &str,
    data_key: &str,
) -> Result<(), StoreError> {
    store.delete(manifest_key).await?;
    store.delete(data_key).await
}

/// A manifest that could not be fetched or parsed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Manifest(#[from] crate::manifest::ManifestError),
}
