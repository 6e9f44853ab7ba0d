//! The bare Docker lifecycle the service's benches compare against: create, start, wait,
//! remove of one container with the isolation brizo's jobs get by default (backends/docker),
//! so that a comparison is of the service's own cost, not of the sandbox's.

// Each bench takes what it compares against (the single-job one, the container alone).
#![allow(dead_code)]

use std::collections::HashMap;
use std::time::Instant;

use bollard::models::{ContainerCreateBody, HostConfig, Mount, MountType};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder, WaitContainerOptionsBuilder,
};
use futures::StreamExt;

/// The local engine, its API version agreed.
pub async fn engine() -> bollard::Docker {
    bollard::Docker::connect_with_local_defaults()
        .unwrap()
        .negotiate_version()
        .await
        .expect("dockerd: run `scripts/dockerd.sh start`")
}

/// The folders a job's container is given, laid out in `root` as brizo's workspace is: one
/// input and the algorithm read-only, outputs and logs writable (by the job's uid).
pub fn job_folders(root: &std::path::Path) -> Vec<Mount> {
    use std::os::unix::fs::PermissionsExt;
    let input = root.join("inputs/input/0");
    let algorithm = root.join("transformations/algorithm");
    std::fs::create_dir_all(input.parent().unwrap()).unwrap();
    std::fs::create_dir_all(algorithm.parent().unwrap()).unwrap();
    std::fs::write(&input, "a,b\n1,2\n").unwrap();
    std::fs::write(&algorithm, "# nothing\n").unwrap();
    let mut mounts = vec![
        bind(&input, "/data/inputs/input/0", true),
        bind(&algorithm, "/data/transformations/algorithm", true),
    ];
    for dir in ["outputs", "logs"] {
        let path = root.join(dir);
        std::fs::create_dir_all(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777)).unwrap();
        mounts.push(bind(&path, &format!("/data/{dir}"), false));
    }
    mounts
}

fn bind(source: &std::path::Path, target: &str, read_only: bool) -> Mount {
    Mount {
        target: Some(target.into()),
        source: Some(source.to_string_lossy().into_owned()),
        typ: Some(MountType::BIND),
        read_only: Some(read_only),
        ..Default::default()
    }
}

/// Seconds for create, start, wait, remove of a container named `name` running `command`,
/// with `mounts`.
pub async fn lifecycle(
    docker: &bollard::Docker,
    image: &str,
    command: &str,
    name: &str,
    mounts: Vec<Mount>,
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
            mounts: Some(mounts),
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
