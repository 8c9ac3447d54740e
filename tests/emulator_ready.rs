//! `/ready` reports the Docker engine: healthy when it answers, degraded when it is gone.
//! (One test in this binary: it changes DOCKER_HOST for the process.)

use sandbox_harness::emulator::{Emulator, EmulatorConfig};
use serde_json::Value;

#[tokio::test]
async fn ready_is_degraded_without_docker_and_ready_with_it() {
    let http = reqwest::Client::new();
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let url = format!("{}/ready", emu.base_url());
    let r: Value = http.get(&url).send().await.unwrap().json().await.unwrap();
    let docker_up = bollard::Docker::connect_with_defaults()
        .ok()
        .is_some_and(|_| {
            std::path::Path::new("/var/run/docker.sock").exists()
                || std::env::var("DOCKER_HOST").is_ok()
        });
    if docker_up {
        assert_eq!(r["checks"]["docker"], "healthy", "{r}");
        assert_eq!(r["status"], "ready");
    }
    let gone = tempfile::tempdir().unwrap();
    // SAFETY: this binary runs this single test; nothing else reads the environment concurrently.
    unsafe {
        std::env::set_var(
            "DOCKER_HOST",
            format!("unix://{}", gone.path().join("no.sock").display()),
        );
    }
    let r: Value = http.get(&url).send().await.unwrap().json().await.unwrap();
    assert_eq!(r["status"], "degraded", "{r}");
    assert_eq!(r["checks"]["docker"], "unhealthy");
    assert_eq!(r["checks"]["storage"], "healthy");
}
