//! The emulated Cloud Storage JSON API over a flat object store (see [`store`] for the layout,
//! the commit order and the known differences from Cloud Storage).
//!
//! Fault-injection endpoint names: `storage.buckets.{list,insert,get,getStorageLayout,patch,delete,testIamPermissions}`,
//! `storage.objects.{list,get,patch,update,delete,insert,compose,copy,rewrite}` (`get` covers
//! media downloads, `insert` covers media, multipart and resumable uploads, including each
//! resumable chunk, on both the `/upload/` and the `/resumable/upload/` paths).
//!
//! Per-object mutation rate limit: creating, overwriting, patching or deleting one object name
//! faster than `EmulatorConfig::object_mutation_limit` allows is answered 429 (see
//! [`store::MutationLimit`]).
//! Lifecycle rules are swept on object requests to the bucket (at most once per
//! `EmulatorConfig::lifecycle_sweep_interval`, and whenever the clock is advanced).

pub mod api;
pub mod store;

use axum::Router;
use axum::routing::{MethodRouter, get, post};

pub use store::{MutationLimit, ObjectMeta, Preconditions, StorageState};

use crate::emulator::server::EmulatorContext;

/// The storage routes.
pub fn router(ctx: EmulatorContext) -> Router {
    Router::new()
        .route(
            "/storage/v1/b",
            get(api::list_buckets).post(api::insert_bucket),
        )
        .route(
            "/storage/v1/b/{bucket}",
            get(api::get_bucket)
                .patch(api::patch_bucket)
                .delete(api::delete_bucket),
        )
        .route(
            "/storage/v1/b/{bucket}/storageLayout",
            get(api::get_storage_layout),
        )
        .route("/storage/v1/b/{bucket}/o", get(api::list_objects))
        .route(
            "/storage/v1/b/{bucket}/o/{*object}",
            get(api::get_object)
                .patch(api::patch_object)
                .put(api::update_object)
                .delete(api::delete_object)
                .post(api::post_object),
        )
        .route("/upload/storage/v1/b/{bucket}/o", upload())
        .route("/resumable/upload/storage/v1/b/{bucket}/o", upload())
        .route(
            "/download/storage/v1/b/{bucket}/o/{*object}",
            get(api::download_object),
        )
        .with_state(ctx)
}

/// The media upload endpoint (both paths of the discovery document's `mediaUpload`).
fn upload() -> MethodRouter<EmulatorContext> {
    post(api::upload_post)
        .put(api::upload_put)
        .delete(api::upload_delete)
}
