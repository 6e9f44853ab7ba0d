//! The bare Docker lifecycle the service's benches compare against: create, start, wait,
//! remove of one container with the isolation brizo's jobs get by default (backends/docker),
//! so that a comparison is of the service's own cost, not of the sandbox's.

use std::collections::HashMap;
use std::time::Instant;

use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder, WaitContainerOptionsBuilder,
};
use futures::StreamExt;

/// Seconds for create, start, wait, remove of a container named `name` running `command`.
pub async fn lifecycle(
    docker: &bollard::Docker,
    image: &str,
    command: &str,
    name: &str,
) -> [f64; 4] {
    let mut t = Instant::now();
    let mut lap = move || {
        let s = t.elapsed().as_secs_f64();
        t = Instant::now();
        s
    };
    let body = ContainerCreateBody {
        image: Some(image.to_string()),
        entrypoint: Some(vec![command.to_string()]),
        user: Some("65534:65534".into()),
        network_disabled: Some(true),
        host_config: Some(HostConfig {
            network_mode: Some("none".into()),
            readonly_rootfs: Some(true),
            tmpfs: Some(HashMap::from([(
                "/tmp".to_string(),
                "rw,nosuid,nodev,size=67108864".to_string(),
            )])),
            cap_drop: Some(vec!["ALL".into()]),
            security_opt: Some(vec!["no-new-privileges".into()]),
            memory: Some(512 << 20),
            memory_swap: Some(512 << 20),
            nano_cpus: Some(1_000_000_000),
            pids_limit: Some(128),
            ..Default::default()
        }),
        ..Default::default()
    };
    docker
        .create_container(
            Some(CreateContainerOptionsBuilder::default().name(name).build()),
            body,
        )
        .await
        .unwrap();
    let create = lap();
    docker.start_container(name, None).await.unwrap();
    let start = lap();
    let mut wait = docker.wait_container(
        name,
        Some(
            WaitContainerOptionsBuilder::default()
                .condition("not-running")
                .build(),
        ),
    );
    while wait.next().await.is_some() {}
    let waited = lap();
    docker
        .remove_container(
            name,
            Some(RemoveContainerOptionsBuilder::default().force(true).build()),
        )
        .await
        .unwrap();
    [create, start, waited, lap()]
}
