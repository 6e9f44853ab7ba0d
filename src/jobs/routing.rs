//! Data locality: each job runs on the backend that sits next to its data. Backends list the
//! data locations they are near (URL prefixes: `s3://bucket`, `file:///srv/datasets`, ...);
//! a job goes to the backend near the most of its inputs (the first listed on a tie), else to
//! the default. The choice and its reason are recorded on the job.

use crate::config::BackendConfig;
use crate::jobs::model::InputSource;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub backend: String,
    pub reason: String,
}

/// Whether `url` lies under one of the backend's `near` prefixes.
pub fn near(backend: &BackendConfig, url: &str) -> bool {
    backend.near.iter().any(|prefix| {
        let prefix = prefix.trim_end_matches('/');
        // A prefix matches itself or what lies under it, not `s3://data-2` for `s3://data`.
        url == prefix
            || url
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with('/'))
    })
}

pub fn route(backends: &[BackendConfig], default: &str, inputs: &[InputSource]) -> Route {
    let mut best: Option<(&BackendConfig, usize)> = None;
    for backend in backends {
        let count = inputs.iter().filter(|i| near(backend, &i.url)).count();
        if count > 0 && best.is_none_or(|(_, c)| count > c) {
            best = Some((backend, count));
        }
    }
    match best {
        Some((backend, count)) => Route {
            backend: backend.name.clone(),
            reason: format!(
                "next to {count} of the job's {} input(s) ({})",
                inputs.len(),
                backend.near.join(", ")
            ),
        },
        None if inputs.is_empty() => Route {
            backend: default.to_string(),
            reason: "the default backend: the job has no inputs".into(),
        },
        None => Route {
            backend: default.to_string(),
            reason: "the default backend: no backend is configured next to the job's inputs".into(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(name: &str, near: &[&str]) -> BackendConfig {
        BackendConfig {
            name: name.into(),
            kind: "docker".into(),
            near: near.iter().map(|s| s.to_string()).collect(),
            sections: Default::default(),
        }
    }

    fn inputs(urls: &[&str]) -> Vec<InputSource> {
        urls.iter()
            .map(|u| InputSource {
                url: u.to_string(),
                name: None,
            })
            .collect()
    }

    #[test]
    fn each_cloud_gets_the_jobs_on_its_data() {
        // As a publisher with all three clouds configures them (config/examples/*).
        let backends = vec![
            backend("local", &[]),
            backend("aws", &["s3://eu-data"]),
            backend("azure", &["az://brizodata/datasets"]),
            backend("gcp", &["gs://brizo-data"]),
        ];
        for (url, expected) in [
            ("s3://eu-data/a.csv", "aws"),
            ("az://brizodata/datasets/a.csv", "azure"),
            ("gs://brizo-data/a.csv", "gcp"),
            ("gs://brizo-data-2/a.csv", "local"),
            ("file:///srv/datasets/a.csv", "local"),
        ] {
            assert_eq!(
                route(&backends, "local", &inputs(&[url])).backend,
                expected,
                "{url}"
            );
        }
    }

    #[test]
    fn jobs_go_where_their_data_is() {
        let backends = vec![
            backend("local", &["file:///srv/datasets"]),
            backend("eu", &["s3://eu-data/", "s3://shared"]),
            backend("us", &["s3://us-data"]),
        ];
        let r = route(&backends, "local", &inputs(&["s3://eu-data/census.csv"]));
        assert_eq!(r.backend, "eu");
        assert!(
            r.reason.contains("next to 1 of the job's 1 input(s)"),
            "{}",
            r.reason
        );
        assert_eq!(
            route(
                &backends,
                "local",
                &inputs(&["s3://us-data/a", "s3://us-data/b", "s3://eu-data/c"])
            )
            .backend,
            "us"
        );
        assert_eq!(
            route(&backends, "local", &inputs(&["file:///srv/datasets/x.csv"])).backend,
            "local"
        );
        // Prefixes match whole path segments only.
        let r = route(&backends, "local", &inputs(&["s3://eu-data-archive/x"]));
        assert_eq!(r.backend, "local");
        assert!(
            r.reason.contains("no backend is configured next to"),
            "{}",
            r.reason
        );
        assert!(route(&backends, "us", &[]).reason.contains("no inputs"));
        assert_eq!(route(&backends, "us", &[]).backend, "us");
    }
}
