//! The emulated Cloud Storage JSON API: buckets and objects stored as plain files (see
//! [`store`] for the on-disk layout and the divergences from Cloud Storage).
//!
//! Fault-injection endpoint names: `storage.buckets.{list,insert,get,patch,delete,testIamPermissions}`,
//! `storage.objects.{list,get,patch,delete,insert}` (`get` covers media downloads, `insert`
//! covers media, multipart and resumable uploads, including each resumable chunk).
//! Lifecycle rules are swept on object requests to the bucket (at most once per
//! `EmulatorConfig::lifecycle_sweep_interval`, and whenever the clock is advanced).

pub mod api;
pub mod store;

use axum::Router;
use axum::routing::{get, post};

pub use store::{ObjectMeta, Preconditions, StorageState};

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
        .route("/storage/v1/b/{bucket}/o", get(api::list_objects))
        .route(
            "/storage/v1/b/{bucket}/o/{*object}",
            get(api::get_object)
                .patch(api::patch_object)
                .delete(api::delete_object),
        )
        .route(
            "/upload/storage/v1/b/{bucket}/o",
            post(api::upload_post)
                .put(api::upload_put)
                .delete(api::upload_delete),
        )
        .route(
            "/download/storage/v1/b/{bucket}/o/{*object}",
            get(api::download_object),
        )
        .with_state(ctx)
}
