//! The same trivial job through the service on AWS Batch (moto), against a bare SubmitJob ->
//! SUCCEEDED loop with the AWS SDK on the same queue, measured interleaved in one run; prints
//! medians, the ratio and the service's phases. moto's Batch advances a job through its states
//! in 0.5 s steps, so both sides carry that floor: the ratio shows what brizo adds (staging the
//! plan, the runner's downloads and uploads, polling), not what AWS would take.
//! Needs dockerd, the base image, moto and the runner (`make bench` prepares them).

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/phases.rs"]
mod phases;
#[path = "support/remote.rs"]
mod remote;

use std::path::PathBuf;
use std::time::Instant;

use aws_sdk_batch::types::{
    ContainerProperties, JobDefinitionType, JobStatus, ResourceRequirement, ResourceType,
};
use brizo_test_rigs::built_runner;
use brizo_test_rigs::moto::{Moto, QUEUE, STAGING_BUCKET};
use remote::{COMMAND, POLL};

async fn bare_run(batch: &aws_sdk_batch::Client, definition: &str, n: usize) -> f64 {
    let started = Instant::now();
    let submitted = batch
        .submit_job()
        .job_name(format!("bench-bare-{n}"))
        .job_queue(QUEUE)
        .job_definition(definition)
        .send()
        .await
        .unwrap();
    let id = submitted.job_id().unwrap().to_string();
    loop {
        let out = batch.describe_jobs().jobs(&id).send().await.unwrap();
        match out.jobs()[0].status() {
            Some(JobStatus::Succeeded) => return started.elapsed().as_secs_f64(),
            Some(JobStatus::Failed) => panic!("the bare job failed: {:?}", out.jobs()[0]),
            _ => tokio::time::sleep(POLL).await,
        }
    }
}

#[tokio::main]
async fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    for (k, v) in Moto::credentials_env() {
        // SAFETY: set once, before any thread reads the environment.
        unsafe { std::env::set_var(k, v) };
    }
    let port = common::free_port();
    let moto = Moto::start(&root, port, &[]).unwrap_or_else(|e| panic!("{e}"));
    let runner = built_runner(&root).unwrap_or_else(|e| panic!("{e}"));
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(&moto.endpoint)
        .load()
        .await;
    let batch = aws_sdk_batch::Client::new(&sdk);
    let requirement =
        |t: ResourceType, v: &str| ResourceRequirement::builder().r#type(t).value(v).build();
    let definition = batch
        .register_job_definition()
        .job_definition_name("bench-bare")
        .r#type(JobDefinitionType::Container)
        .container_properties(
            ContainerProperties::builder()
                .image(common::IMAGE)
                .command(COMMAND)
                .resource_requirements(requirement(ResourceType::Vcpu, "1"))
                .resource_requirements(requirement(ResourceType::Memory, "512"))
                .build(),
        )
        .send()
        .await
        .unwrap()
        .job_definition_arn()
        .unwrap()
        .to_string();

    let config = format!(
        "backend = \"aws\"\n[[backends]]\nname = \"aws\"\nkind = \"aws-batch\"\n[backends.aws]\nregion = \"us-east-1\"\nendpoint = \"{}\"\n\
         job_queue = \"{QUEUE}\"\nstaging = \"s3://{STAGING_BUCKET}/jobs\"\nrunner_host_path = \"{}\"\npoll_ms = {}\nimages = \"docker\"\n",
        moto.endpoint,
        runner.display(),
        POLL.as_millis()
    );
    let svc = common::Service::start_with_config(
        &[
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
        ],
        &config,
    )
    .await;
    let rounds = remote::interleaved(&svc, |n| bare_run(&batch, &definition, n)).await;
    remote::report(
        "AWS Batch (moto)",
        "bare SDK SubmitJob -> SUCCEEDED",
        rounds,
    );
}
