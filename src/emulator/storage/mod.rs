//! The emulated Cloud Storage JSON API over a flat object store (see [`store`] for the layout,
//! the commit order and the known differences from Cloud Storage).
//!
//! Fault-injection endpoint names: `storage.buckets.{list,insert,get,getStorageLayout,patch,delete,testIamPermissions}`,
//! `storage.objects.{list,get,patch,update,delete,insert,compose,copy,rewrite,move}` (`get` covers
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

use axum::http::Method;

pub use store::{MutationLimit, ObjectMeta, Preconditions, StorageState};

use crate::emulator::context::EmulatorContext;
use crate::emulator::routes::{Api, RouteTable};

const DOC: &str = "storage.v1";

fn g(ids: &'static [&'static str]) -> Api {
    Api::Google(DOC, ids)
}

/// The storage routes. Uploads start on both paths of the discovery document's
/// `objects.insert` `mediaUpload` (`/upload/...` and `/resumable/upload/...`); the PUT
/// (resumable chunks, status queries) and DELETE (cancel) of a session URI belong to the same
/// method.
pub fn routes(ctx: EmulatorContext) -> RouteTable {
    const INSERT: &[&str] = &["storage.objects.insert"];
    let mut t = RouteTable::new()
        .route(
            Method::GET,
            "/storage/v1/b",
            g(&["storage.buckets.list"]),
            api::list_buckets,
        )
        .route(
            Method::POST,
            "/storage/v1/b",
            g(&["storage.buckets.insert"]),
            api::insert_bucket,
        )
        .route(
            Method::GET,
            "/storage/v1/b/{bucket}",
            g(&["storage.buckets.get"]),
            api::get_bucket,
        )
        .route(
            Method::PATCH,
            "/storage/v1/b/{bucket}",
            g(&["storage.buckets.patch"]),
            api::patch_bucket,
        )
        .route(
            Method::DELETE,
            "/storage/v1/b/{bucket}",
            g(&["storage.buckets.delete"]),
            api::delete_bucket,
        )
        .route(
            Method::GET,
            "/storage/v1/b/{bucket}/storageLayout",
            g(&["storage.buckets.getStorageLayout"]),
            api::get_storage_layout,
        )
        .route(
            Method::GET,
            "/storage/v1/b/{bucket}/iam",
            g(&["storage.buckets.getIamPolicy"]),
            api::bucket_iam_policy,
        )
        .route(
            Method::GET,
            "/storage/v1/b/{bucket}/iam/testPermissions",
            g(&["storage.buckets.testIamPermissions"]),
            api::bucket_test_permissions,
        )
        .route(
            Method::GET,
            "/storage/v1/b/{bucket}/o",
            g(&["storage.objects.list"]),
            api::list_objects,
        )
        .route(
            Method::GET,
            "/storage/v1/b/{bucket}/o/{*object}",
            g(&["storage.objects.get"]),
            api::get_object,
        )
        .route(
            Method::PATCH,
            "/storage/v1/b/{bucket}/o/{*object}",
            g(&["storage.objects.patch"]),
            api::patch_object,
        )
        .route(
            Method::PUT,
            "/storage/v1/b/{bucket}/o/{*object}",
            g(&["storage.objects.update"]),
            api::update_object,
        )
        .route(
            Method::DELETE,
            "/storage/v1/b/{bucket}/o/{*object}",
            g(&["storage.objects.delete"]),
            api::delete_object,
        )
        .route(
            Method::POST,
            "/storage/v1/b/{bucket}/o/{*object}",
            g(&[
                "storage.objects.compose",
                "storage.objects.copy",
                "storage.objects.rewrite",
                "storage.objects.move",
            ]),
            api::post_object,
        )
        .route(
            Method::GET,
            "/download/storage/v1/b/{bucket}/o/{*object}",
            g(&["storage.objects.get"]),
            api::download_object,
        );
    // Sessions started on either path get a session URI on `/upload/...`, where their chunks,
    // status queries and cancellation go.
    const UPLOAD: &str = "/upload/storage/v1/b/{bucket}/o";
    const RESUMABLE: &str = "/resumable/upload/storage/v1/b/{bucket}/o";
    t = t
        .route(Method::POST, UPLOAD, g(INSERT), api::upload_post)
        .route(Method::PUT, UPLOAD, g(INSERT), api::upload_put)
        .route(Method::DELETE, UPLOAD, g(INSERT), api::upload_delete)
        .route(Method::POST, RESUMABLE, g(INSERT), api::upload_post);
    t.with_state(ctx)
}
