//! `gc` finds what a crashed run left behind (containers, jobs with their executions, orphaned
//! session objects) and removes it; a dry run removes nothing. Scoped to this test's own ids so
//! it never touches other runs sharing the engine.

#[path = "reliability_common.rs"]
mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use bytes::Bytes;
use sandbox_harness::gc::{self, GcAction, GcKind, GcOptions, GcScope};
use sandbox_harness::gcp::storage::{ListOptions, WriteOptions};
use sandbox_harness::protocol::{Sandbox, SandboxBackend};
use sandbox_harness::suites::faults::FaultConfig;

use common::{Cleanup, cloud_backend, cmd, docker_backend};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_removes_leftovers_and_dry_run_removes_nothing() {
    let cleanup = Cleanup::default();
    let docker = docker_backend().await;
    let cloud = cloud_backend(FaultConfig::default(), &cleanup).await;
    // Leftovers of a "crashed" run: nobody destroys these sandboxes (the guard does if gc fails).
    let d: Arc<dyn Sandbox> = cleanup.add(docker.create().await.unwrap());
    let c: Arc<dyn Sandbox> = cleanup.add(cloud.create().await.unwrap());
    c.exec_stateful(cmd("s", "echo x > /workspace/f.txt"))
        .await
        .unwrap(); // starts a worker execution (a labelled container) and writes objects
    let bucket = cloud.config().bucket.clone();
    let orphan = "0rphan0000000000000a".to_string();
    cloud
        .storage()
        .insert_object(
            &bucket,
            &format!("sessions/{orphan}/workspace/left.txt"),
            Bytes::from_static(b"left"),
            &WriteOptions::default(),
        )
        .await
        .unwrap();
    let scope = GcScope::Only(BTreeSet::from([
        d.id().to_string(),
        c.id().to_string(),
        orphan.clone(),
    ]));
    let sweep_aged = |dry_run: bool, older_than: Option<std::time::Duration>| {
        let (docker, cloud, bucket, scope) =
            (docker.clone(), cloud.clone(), bucket.clone(), scope.clone());
        async move {
            let opts = GcOptions {
                dry_run,
                scope,
                older_than,
            };
            let mut items = gc::gc_cloudrun(
                cloud.run_client(),
                cloud.storage(),
                cloud.parent(),
                &bucket,
                &opts,
            )
            .await
            .unwrap();
            items.extend(gc::gc_docker(docker.docker(), &opts).await.unwrap());
            items
        }
    };

    let sweep = |dry_run: bool| sweep_aged(dry_run, None);

    // An age guard spares what was made just now, as it would a run in progress.
    let young = sweep_aged(false, Some(std::time::Duration::from_secs(3600))).await;
    assert!(young.is_empty(), "{young:?}");

    let dry = sweep(true).await;
    print!("{}", gc::render(&dry, true));
    assert!(dry.iter().all(|i| i.action == GcAction::WouldRemove));
    let kinds: BTreeSet<GcKind> = dry.iter().map(|i| i.kind).collect();
    assert_eq!(
        kinds,
        BTreeSet::from([
            GcKind::Container,
            GcKind::Job,
            GcKind::Execution,
            GcKind::Object
        ])
    );
    assert!(dry.iter().any(|i| i.name.contains(&orphan)));
    // A dry run removed nothing: both sandboxes still work.
    assert!(docker.get(d.id()).await.is_ok());
    assert!(cloud.get(c.id()).await.is_ok());
    let r = d.exec_stateful(cmd("s", "echo alive")).await.unwrap();
    assert_eq!(r.stdout, b"alive\n");

    let done = sweep(false).await;
    print!("{}", gc::render(&done, false));
    assert!(
        done.iter().all(|i| i.action == GcAction::Removed),
        "{done:?}"
    );
    // Nothing of ours is left: containers, jobs, objects.
    assert!(docker.get(d.id()).await.is_err());
    assert!(cloud.get(c.id()).await.is_err());
    let filters = std::collections::HashMap::from([(
        "label".to_string(),
        vec!["sandbox-harness".to_string()],
    )]);
    let left: Vec<_> = docker
        .docker()
        .list_containers(Some(bollard::query_parameters::ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_iter()
        .filter(|ct| {
            let labels = ct.labels.clone().unwrap_or_default();
            let names = ct.names.clone().unwrap_or_default();
            labels
                .values()
                .chain(names.iter())
                .any(|v| v.contains(d.id()) || v.contains(c.id()))
        })
        .collect();
    assert!(left.is_empty(), "containers left: {left:?}");
    for id in [c.id(), orphan.as_str()] {
        let (objects, _) = cloud
            .storage()
            .list_all(
                &bucket,
                &ListOptions {
                    prefix: Some(format!("sessions/{id}/")),
                    ..ListOptions::default()
                },
            )
            .await
            .unwrap();
        assert!(objects.is_empty(), "objects of {id} left");
    }
    // A second sweep finds nothing.
    let again = sweep(false).await;
    assert!(again.is_empty(), "{again:?}");
    println!(
        "gc: dry run listed {} item(s) and removed 0; sweep removed {}; second sweep found 0",
        dry.len(),
        done.len()
    );
}
