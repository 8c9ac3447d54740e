//! Google Cloud clients over reqwest: Cloud Run Admin API v2 and Cloud Storage JSON API, with
//! configurable endpoints (so the same code talks to the emulator and to Google), auth and retry.

pub mod auth;
pub mod clients;
pub mod iam;
pub mod observe;
pub mod retry;
pub mod run;
pub mod storage;
