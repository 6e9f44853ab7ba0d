//! A small client of the operator API, used by the CLI (and handy in tests).

use std::time::Duration;

use anyhow::{Context, bail};
use serde::de::DeserializeOwned;

use crate::api::v2::{JobCreated, JobStatus};
use crate::jobs::JobRequest;

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    pub fn new(base: &str, token: &str) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .expect("HTTP client builds");
        Self {
            http,
            base: base.trim_end_matches('/').to_string(),
            token: token.to_string(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> anyhow::Result<reqwest::Response> {
        let res = req.bearer_auth(&self.token).send().await.with_context(|| {
            format!("cannot reach brizo at {}; is `brizo serve` running there? (--server / BRIZO_SERVER)", self.base)
        })?;
        if res.status().is_success() {
            return Ok(res);
        }
        let status = res.status();
        let body = res.text().await.unwrap_or_default();
        let message = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(String::from))
            .unwrap_or(body);
        bail!("{status}: {message}")
    }

    async fn json<T: DeserializeOwned>(&self, req: reqwest::RequestBuilder) -> anyhow::Result<T> {
        Ok(self.send(req).await?.json().await?)
    }

    pub async fn submit(&self, request: &JobRequest) -> anyhow::Result<String> {
        let created: JobCreated = self
            .json(self.http.post(self.url("/api/v2/jobs")).json(request))
            .await?;
        Ok(created.job_id)
    }

    pub async fn rerun(&self, id: &str) -> anyhow::Result<String> {
        let created: JobCreated = self
            .json(
                self.http
                    .post(self.url(&format!("/api/v2/jobs/{id}/rerun"))),
            )
            .await?;
        Ok(created.job_id)
    }

    pub async fn receipt(&self, id: &str) -> anyhow::Result<crate::proof::receipt::SignedReceipt> {
        self.json(
            self.http
                .get(self.url(&format!("/api/v2/jobs/{id}/receipt"))),
        )
        .await
    }

    pub async fn status(&self, id: &str) -> anyhow::Result<JobStatus> {
        self.json(self.http.get(self.url(&format!("/api/v2/jobs/{id}"))))
            .await
    }

    pub async fn list(&self) -> anyhow::Result<Vec<JobStatus>> {
        self.json(self.http.get(self.url("/api/v2/jobs"))).await
    }

    pub async fn stop(&self, id: &str) -> anyhow::Result<JobStatus> {
        self.json(self.http.post(self.url(&format!("/api/v2/jobs/{id}/stop"))))
            .await
    }

    /// What the job would run, for the publisher's review.
    pub async fn algorithm(&self, id: &str) -> anyhow::Result<serde_json::Value> {
        self.json(
            self.http
                .get(self.url(&format!("/api/v2/jobs/{id}/algorithm"))),
        )
        .await
    }

    pub async fn approve(&self, id: &str, by: Option<&str>) -> anyhow::Result<JobStatus> {
        let body = serde_json::json!({ "by": by });
        let url = self.url(&format!("/api/v2/jobs/{id}/approve"));
        self.json(self.http.post(url).json(&body)).await
    }

    pub async fn reject(
        &self,
        id: &str,
        by: Option<&str>,
        reason: &str,
    ) -> anyhow::Result<JobStatus> {
        let body = serde_json::json!({ "by": by, "reason": reason });
        let url = self.url(&format!("/api/v2/jobs/{id}/reject"));
        self.json(self.http.post(url).json(&body)).await
    }

    pub async fn delete(&self, id: &str) -> anyhow::Result<()> {
        self.send(self.http.delete(self.url(&format!("/api/v2/jobs/{id}"))))
            .await
            .map(|_| ())
    }

    /// The log so far, or (with `follow`) a response that streams it until the job ends.
    pub async fn logs(&self, id: &str, follow: bool) -> anyhow::Result<reqwest::Response> {
        self.send(
            self.http
                .get(self.url(&format!("/api/v2/jobs/{id}/logs?follow={follow}"))),
        )
        .await
    }

    pub fn output_url(&self, id: &str, name: &str) -> String {
        self.url(&format!("/api/v2/jobs/{id}/outputs/{name}"))
    }

    pub async fn output(&self, id: &str, name: &str) -> anyhow::Result<reqwest::Response> {
        self.send(self.http.get(self.output_url(id, name))).await
    }
}
