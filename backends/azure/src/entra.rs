//! Microsoft Entra ID tokens for Azure Batch, from the standard Azure credentials, through
//! Microsoft's `azure_identity` 1.x.
//!
//! azure_identity 1.x has no `DefaultAzureCredential` any more (1.0 replaced it with
//! `DeveloperToolsCredential`, which only asks the Azure CLI and the Azure Developer CLI), so
//! [`Chain`] is the standard order other Azure SDKs' default credential follows, built from its
//! credentials, each tried only when its environment is there:
//! 1. a service principal from the environment (`AZURE_TENANT_ID`, `AZURE_CLIENT_ID`,
//!    `AZURE_CLIENT_SECRET`; `AZURE_AUTHORITY_HOST` for another cloud);
//! 2. workload identity (`AZURE_FEDERATED_TOKEN_FILE` with the tenant and client ids, as AKS
//!    sets them);
//! 3. managed identity: App Service, Container Apps and Functions name their endpoint in
//!    `IDENTITY_ENDPOINT` and `IDENTITY_HEADER`; elsewhere the VM's instance metadata service,
//!    asked only when a quick probe finds it (off Azure it would be retried for over a minute).
//!    `AZURE_CLIENT_ID` picks a user-assigned identity, as for Blob;
//! 4. the developer tools: the Azure CLI (`az login`), then the Azure Developer CLI.
//!
//! The first source that gives a token is kept for good, as azure_identity's own chains do.
//! [`Tokens`] keeps the current token and asks for a new one [`REFRESH_BEFORE_EXPIRY`] before
//! it expires: azure_identity caches service principal, workload and managed identity tokens
//! the same way, but runs `az` again for every request without it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use azure_core::credentials::{AccessToken, TokenCredential};
use azure_core::http::{ClientOptions, Transport};
use azure_core::time::OffsetDateTime;
use azure_identity::{
    ClientAssertionCredentialOptions, ClientSecretCredential, ClientSecretCredentialOptions,
    DeveloperToolsCredential, ManagedIdentityCredential, ManagedIdentityCredentialOptions,
    UserAssignedId, WorkloadIdentityCredential, WorkloadIdentityCredentialOptions,
};
use brizo_backend_core::BackendError;

/// The token scope of Azure Batch's data plane in Azure's public cloud: its resource
/// `https://batch.core.windows.net/` (with the slash, as Batch checks the audience) and
/// `/.default`.
pub const BATCH_SCOPE: &str = "https://batch.core.windows.net//.default";

/// How long before its expiry a token is replaced (azure_identity's own margin).
pub const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(300);

/// Where the instance metadata service answers on an Azure VM.
const IMDS: &str = "http://169.254.169.254/metadata/identity/oauth2/token";

/// One credential of the chain and what to call it in errors.
struct Source {
    name: &'static str,
    credential: Arc<dyn TokenCredential>,
    /// The instance metadata service: probed before it is asked.
    needs_imds: bool,
}

/// The standard Azure credential chain, as the environment of this process sets it up.
pub struct Chain {
    sources: Vec<Source>,
    /// The index of the source that gave the first token; `usize::MAX` before.
    chosen: AtomicUsize,
    probe: reqwest::Client,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

impl Chain {
    /// The credentials this environment has, in the standard order. `http` carries their
    /// requests (the backend's reqwest client: no second HTTP stack, its timeouts).
    pub fn from_env(http: reqwest::Client) -> Result<Chain, BackendError> {
        let options = || ClientOptions {
            transport: Some(Transport::new(Arc::new(http.clone()))),
            ..Default::default()
        };
        let failed = |what: &str, e: azure_core::Error| {
            BackendError::invalid_spec(format!("the Azure credential from {what}")).because(e)
        };
        let mut sources = vec![];
        let (tenant, client) = (env("AZURE_TENANT_ID"), env("AZURE_CLIENT_ID"));
        if let (Some(tenant), Some(client), Some(secret)) =
            (&tenant, &client, env("AZURE_CLIENT_SECRET"))
        {
            let credential = ClientSecretCredential::new(
                tenant,
                client.clone(),
                secret.into(),
                Some(ClientSecretCredentialOptions {
                    client_options: options(),
                }),
            )
            .map_err(|e| {
                failed(
                    "AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET",
                    e,
                )
            })?;
            sources.push(Source {
                name: "the service principal in AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET",
                credential,
                needs_imds: false,
            });
        }
        if env("AZURE_FEDERATED_TOKEN_FILE").is_some() && tenant.is_some() && client.is_some() {
            let credential =
                WorkloadIdentityCredential::new(Some(WorkloadIdentityCredentialOptions {
                    credential_options: ClientAssertionCredentialOptions {
                        client_options: options(),
                    },
                    ..Default::default()
                }))
                .map_err(|e| failed("AZURE_FEDERATED_TOKEN_FILE (workload identity)", e))?;
            sources.push(Source {
                name: "workload identity (AZURE_FEDERATED_TOKEN_FILE)",
                credential,
                needs_imds: false,
            });
        }
        let hosted = env("IDENTITY_ENDPOINT").is_some() || env("MSI_ENDPOINT").is_some();
        let credential = ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions {
            user_assigned_id: client.map(UserAssignedId::ClientId),
            client_options: options(),
        }))
        .map_err(|e| failed("the managed identity", e))?;
        sources.push(Source {
            name: if hosted {
                "the managed identity at IDENTITY_ENDPOINT"
            } else {
                "the managed identity of this VM (instance metadata service)"
            },
            credential,
            needs_imds: !hosted,
        });
        let credential =
            DeveloperToolsCredential::new(None).map_err(|e| failed("the Azure CLI", e))?;
        sources.push(Source {
            name: "the Azure CLI or Azure Developer CLI sign-in",
            credential,
            needs_imds: false,
        });
        let probe = reqwest::Client::builder()
            .timeout(Duration::from_secs(1))
            .build()
            .map_err(|e| BackendError::invalid_spec("HTTP client for the IMDS probe").because(e))?;
        Ok(Chain {
            sources,
            chosen: AtomicUsize::new(usize::MAX),
            probe,
        })
    }

    /// The names of the sources, in the order they are tried.
    pub fn sources(&self) -> Vec<&'static str> {
        self.sources.iter().map(|s| s.name).collect()
    }

    /// The source that gave the first token, once one has.
    pub fn chosen(&self) -> Option<&'static str> {
        self.sources
            .get(self.chosen.load(Ordering::Relaxed))
            .map(|s| s.name)
    }

    /// Whether the instance metadata service answers here: any HTTP answer (without the
    /// `Metadata` header it refuses with 400) means it does.
    async fn imds_answers(&self) -> bool {
        self.probe.get(IMDS).send().await.is_ok()
    }

    /// A token for `scope` from the chosen source, or from the first source that gives one.
    pub async fn token(&self, scope: &str) -> Result<AccessToken, BackendError> {
        let scopes = [scope];
        if let Some(source) = self.sources.get(self.chosen.load(Ordering::Relaxed)) {
            return source
                .credential
                .get_token(&scopes, None)
                .await
                .map_err(|e| {
                    BackendError::unavailable(format!(
                        "{} gave no Microsoft Entra token for {scope}: {}",
                        source.name,
                        chain_of(&e)
                    ))
                });
        }
        let mut failures = vec![];
        for (index, source) in self.sources.iter().enumerate() {
            if source.needs_imds && !self.imds_answers().await {
                failures.push(format!("{}: no such service answers here", source.name));
                continue;
            }
            match source.credential.get_token(&scopes, None).await {
                Ok(token) => {
                    self.chosen.store(index, Ordering::Relaxed);
                    tracing::info!("Azure Batch: Microsoft Entra tokens from {}", source.name);
                    return Ok(token);
                }
                Err(e) => failures.push(format!("{}: {}", source.name, chain_of(&e))),
            }
        }
        Err(BackendError::unavailable(format!(
            "no Azure credential gave brizo a Microsoft Entra token for Azure Batch ({scope}). Tried {}. \
             Run brizo with a managed identity (terraform/modules/azure gives the service's identity its Batch role), \
             set AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET for a service principal, or sign in with `az login`; \
             or set auth = \"shared_key\" with the account key in batch_key_env",
            failures.join("; ")
        )))
    }
}

/// An error and its causes, on one line.
fn chain_of(e: &(dyn std::error::Error + 'static)) -> String {
    let mut words = vec![e.to_string().trim().replace('\n', " ")];
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string().trim().replace('\n', " ");
        if !words.iter().any(|w| w.contains(&text)) {
            words.push(text);
        }
        cause = c.source();
    }
    words.join(": ")
}

/// The current Batch token, replaced before it expires.
pub struct Tokens {
    chain: Chain,
    scope: String,
    current: tokio::sync::Mutex<Option<AccessToken>>,
}

impl Tokens {
    pub fn new(chain: Chain, scope: &str) -> Tokens {
        Tokens {
            chain,
            scope: scope.to_string(),
            current: tokio::sync::Mutex::new(None),
        }
    }

    pub fn chain(&self) -> &Chain {
        &self.chain
    }

    pub fn scope(&self) -> &str {
        &self.scope
    }

    /// The `Authorization` value: `Bearer` and a token good for at least
    /// [`REFRESH_BEFORE_EXPIRY`]. Concurrent requests wait for one refresh.
    pub async fn authorization(&self) -> Result<String, BackendError> {
        let mut current = self.current.lock().await;
        let margin = azure_core::time::Duration::seconds(REFRESH_BEFORE_EXPIRY.as_secs() as i64);
        let fresh = current
            .as_ref()
            .is_some_and(|t| t.expires_on > OffsetDateTime::now_utc() + margin);
        if !fresh {
            *current = Some(self.chain.token(&self.scope).await?);
        }
        let token = current.as_ref().expect("a token was just put there");
        Ok(format!("Bearer {}", token.token.secret()))
    }
}
