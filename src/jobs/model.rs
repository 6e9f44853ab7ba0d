//! What a job is: the request it came from, where it stands, how it ended.

use serde::{Deserialize, Serialize};

/// The publisher's decision on a job whose dataset asks for it (`privacy.requiresApproval`):
/// nothing of the job runs before it is approved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Approval {
    pub state: ApprovalState,
    /// Who decided (the operator's name for themselves, or "operator").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// When, in seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<f64>,
    /// A rejection's reason, for the consumer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// sha256 of the algorithm the publisher saw when approving: the job runs that one only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithm_sha256: Option<String>,
    /// The image's digest when approved, where the backend can tell it: the job runs that
    /// image only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_digest: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalState {
    Pending,
    Approved,
    Rejected,
}

impl Approval {
    pub fn pending() -> Self {
        Self {
            state: ApprovalState::Pending,
            by: None,
            at: None,
            reason: None,
            algorithm_sha256: None,
            image_digest: None,
        }
    }

    /// A decision `by` takes now (an approval or release, a rejection or withholding).
    pub fn decided(state: ApprovalState, by: &str, reason: Option<&str>) -> Self {
        Self {
            state,
            by: Some(by.to_string()),
            at: Some(now_epoch()),
            reason: reason.map(str::to_string),
            algorithm_sha256: None,
            image_digest: None,
        }
    }
}

/// The publisher's decisions a job waits for, from its dataset's policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Holds {
    /// Before anything runs (`privacy.requiresApproval`).
    pub approval: bool,
    /// Before the outputs are released (`privacy.reviewOutputs`).
    pub release: bool,
}

/// What an unfinished job waits for, in words and machine-readably: the question users of
/// every compute-to-data service ask most is "why is my job not running?".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Waiting {
    pub reason: WaitReason,
    /// For people: what it waits for, and what would end the wait.
    pub text: String,
    /// Its place in the queue for a slot (1: next).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WaitReason {
    /// The dataset asks for the publisher's approval of each job; it has not been given yet.
    Approval,
    /// The run ended; its outputs wait for the publisher's review (`privacy.reviewOutputs`).
    Review,
    /// Queued to be staged: for a staging slot (`max_staging_jobs`) and a place among the
    /// jobs staged ahead of the runs (`max_running_jobs + max_staging_jobs`).
    StagingSlot,
    /// Its inputs and algorithm are being put in place.
    Staging,
    /// Staged, queued for a run slot (`max_running_jobs`).
    RunSlot,
    /// Has a run slot; the backend is starting its run.
    Starting,
    /// A step failed (the backend or a store did not answer); it is tried again soon.
    Retrying,
    /// A stop was asked for; the backend is ending the run.
    Stopping,
}

/// Where a job stands. The numbers are the Brizo status codes Squid clients know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// 10: accepted, waiting for a staging slot.
    Queued,
    /// 20: inputs and the algorithm are being put in place.
    Staging,
    /// 30: staged, waiting for a run slot or starting.
    Provisioned,
    /// 40: the algorithm runs.
    Running,
    /// 50: outputs are listed, measured and checked against the caps.
    Filtering,
    /// 60: outputs and logs go to the results store.
    Publishing,
    /// 70: done; see the outcome.
    Finished,
    /// 31: an input could not be staged.
    DataProvisioningFailed,
    /// 32: the algorithm or its image could not be provisioned.
    AlgorithmProvisioningFailed,
}

impl Phase {
    pub fn code(self) -> i64 {
        match self {
            Phase::Queued => 10,
            Phase::Staging => 20,
            Phase::Provisioned => 30,
            Phase::DataProvisioningFailed => 31,
            Phase::AlgorithmProvisioningFailed => 32,
            Phase::Running => 40,
            Phase::Filtering => 50,
            Phase::Publishing => 60,
            Phase::Finished => 70,
        }
    }

    pub fn from_code(code: i64) -> Option<Phase> {
        Some(match code {
            10 => Phase::Queued,
            20 => Phase::Staging,
            30 => Phase::Provisioned,
            31 => Phase::DataProvisioningFailed,
            32 => Phase::AlgorithmProvisioningFailed,
            40 => Phase::Running,
            50 => Phase::Filtering,
            60 => Phase::Publishing,
            70 => Phase::Finished,
            _ => return None,
        })
    }

    /// The Brizo status text.
    pub fn text(self) -> &'static str {
        match self {
            Phase::Queued => "Job started",
            Phase::Staging => "Configuring volumes",
            Phase::Provisioned => "Provisioning success",
            Phase::DataProvisioningFailed => "Data provisioning failed",
            Phase::AlgorithmProvisioningFailed => "Algorithm provisioning failed",
            Phase::Running => "Running algorithm",
            Phase::Filtering => "Filtering results",
            Phase::Publishing => "Publishing results",
            Phase::Finished => "Job finished",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Phase::Finished | Phase::DataProvisioningFailed | Phase::AlgorithmProvisioningFailed
        )
    }

    /// The phase a metric label names.
    pub fn from_name(name: &str) -> Option<Phase> {
        [
            Phase::Queued,
            Phase::Staging,
            Phase::Provisioned,
            Phase::Running,
            Phase::Filtering,
            Phase::Publishing,
            Phase::Finished,
            Phase::DataProvisioningFailed,
            Phase::AlgorithmProvisioningFailed,
        ]
        .into_iter()
        .find(|p| p.name() == name)
    }

    /// Metric label.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Queued => "queued",
            Phase::Staging => "staging",
            Phase::Provisioned => "provisioned",
            Phase::Running => "running",
            Phase::Filtering => "filtering",
            Phase::Publishing => "publishing",
            Phase::Finished => "finished",
            Phase::DataProvisioningFailed => "data_provisioning_failed",
            Phase::AlgorithmProvisioningFailed => "algorithm_provisioning_failed",
        }
    }
}

/// How a finished job ended, for machines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Succeeded,
    Failed,
    Stopped,
    TimedOut,
    OutOfMemory,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
            Outcome::Stopped => "stopped",
            Outcome::TimedOut => "timed_out",
            Outcome::OutOfMemory => "out_of_memory",
        }
    }
    pub fn parse(s: &str) -> Option<Outcome> {
        [
            Outcome::Succeeded,
            Outcome::Failed,
            Outcome::Stopped,
            Outcome::TimedOut,
            Outcome::OutOfMemory,
        ]
        .into_iter()
        .find(|o| o.as_str() == s)
    }
}

/// Where an algorithm's code comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AlgorithmSource {
    /// The code itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rawcode: Option<String>,
    /// Where to fetch the code (http(s)://, s3://, az://, gs://).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// DID of the algorithm asset, when it came from one (passed as TRANSFORMATION_DID).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub did: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InputSource {
    /// file:// under a dataset root (bind-mounted read-only), or s3://, az://, gs://, http(s)://
    /// (streamed to disk).
    pub url: String,
    /// Folder under /data/inputs (a dataset name or DID); inputs sharing a name are numbered
    /// 0, 1, ... inside it. Default: "input".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// What a client asks to run; stored with the job so that a restart can redo any step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JobRequest {
    /// Container image, `name:tag`, present on the engine.
    #[schema(min_length = 1)]
    pub image: String,
    /// Command line; `$ALGO` becomes the path of the algorithm inside the container.
    #[schema(min_length = 1)]
    pub entrypoint: String,
    pub algorithm: AlgorithmSource,
    #[serde(default)]
    pub inputs: Vec<InputSource>,
    /// Wall-clock limit; capped by the publisher's `limits.max_timeout_secs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    pub timeout_seconds: Option<u64>,
    /// Give the algorithm a network. Off by default; the operator API allows it only when
    /// `limits.allow_network` is set, the v1 API when the dataset's DDO allows it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub network: bool,
    /// Encrypt the outputs and the log to this secp256k1 public key (SEC1 hex, 65 bytes
    /// `04…` or 33 bytes `02…`/`03…`): only its holder can read them (docs/encryption.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encrypt_to: Option<String>,
}

/// The Service Agreement a job runs under (v1), as settlement needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgreementRecord {
    /// 0x-prefixed 32 bytes.
    pub agreement_id: String,
    /// did:op:...
    pub did: String,
    /// Price in the token's smallest unit, decimal.
    pub price: String,
    pub publisher: String,
    pub consumer: String,
    pub lock_id: String,
    pub compute_id: String,
    pub escrow_id: String,
    /// The `output` section of the request, kept for publishing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<serde_json::Value>,
}

/// How the agreement was settled once the job ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Settlement {
    /// `paid`: the reward went to the publisher; `not_paid`: left in escrow for a refund.
    pub state: String,
    /// The reward's release (none when it already was released).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx: Option<String>,
    /// The compute condition's fulfilment, sent once the algorithm ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compute_tx: Option<String>,
    pub reason: String,
}

/// One published output file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OutputFile {
    /// Path relative to /data/outputs.
    pub name: String,
    pub size: u64,
    /// Hex sha256 of the content (for an encrypted job: of the ciphertext, what anyone can
    /// check).
    pub sha256: String,
    /// For an encrypted job: the plaintext's size and sha256, what the consumer checks after
    /// decrypting.
    #[serde(rename = "plainSize", default, skip_serializing_if = "Option::is_none")]
    pub plain_size: Option<u64>,
    #[serde(
        rename = "plainSha256",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub plain_sha256: Option<String>,
}

/// What an encrypted job published besides its outputs: to whom, the sealed key's hash, and
/// the log's digests (ciphertext and plaintext).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Sealed {
    /// The consumer's public key (SEC1, hex) the content key is sealed to.
    pub recipient: String,
    /// sha256 of the sealed key (`key.ecies` beside the results).
    pub key_sha256: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<crate::proof::digest::Digest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_plain: Option<crate::proof::digest::Digest>,
}

/// Milliseconds spent in each phase, filled as the job moves.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PhaseTimings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staging_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starting_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filtering_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publishing_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cleanup_ms: Option<u64>,
}

/// A job as the store holds it.
#[derive(Debug, Clone)]
pub struct Job {
    pub id: String,
    pub owner: String,
    pub request: JobRequest,
    pub phase: Phase,
    pub outcome: Option<Outcome>,
    pub error: Option<String>,
    pub exit_code: Option<i64>,
    pub image_digest: Option<String>,
    pub timeout_secs: u64,
    pub stop_requested: bool,
    pub removed: bool,
    /// A removed job's leftovers are gone.
    pub cleared: bool,
    /// Epoch seconds.
    pub date_created: f64,
    pub date_started: Option<f64>,
    pub date_finished: Option<f64>,
    pub outputs: Vec<OutputFile>,
    pub timings: PhaseTimings,
    pub agreement: Option<AgreementRecord>,
    pub settlement: Option<Settlement>,
    pub staged: Option<StagedDigests>,
    /// The signed receipt (JSON), once issued.
    pub receipt: Option<String>,
    /// The results published as a new asset owned by the consumer (`output.publishOutput`).
    pub results_did: Option<String>,
    /// The backend the job runs on, and why (data locality).
    pub backend: String,
    pub backend_reason: String,
    /// The publisher's approval, for a job whose dataset asks for one.
    pub approval: Option<Approval>,
    /// The publisher's release of the outputs (approved: released; rejected: withheld), for
    /// a job whose dataset reviews outputs.
    pub release: Option<Approval>,
    /// What an encrypted job published (set when it is published).
    pub sealed: Option<Sealed>,
}

/// Digests of what was staged, for the receipt.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StagedDigests {
    pub algorithm: Option<crate::proof::digest::Digest>,
    /// In the order of the request's inputs. `None` for an input the run fetched itself
    /// (a remote backend next to the data) until the backend reports what it fetched.
    pub inputs: Vec<Option<crate::proof::digest::Digest>>,
}

impl Job {
    /// Whether the job waits for the publisher's approval before it may stage.
    pub fn approval_pending(&self) -> bool {
        self.approval
            .as_ref()
            .is_some_and(|a| a.state == ApprovalState::Pending)
    }

    /// When its staging began (its submission plus the time it spent queued): staging's time
    /// limit and its recorded duration count from here, across retries and restarts.
    pub fn staging_began(&self) -> f64 {
        self.date_created + self.timings.queued_ms.unwrap_or(0) as f64 / 1000.0
    }

    /// When the job got in line for the slot its phase waits for: its submission, plus the
    /// time it spent queued and staging (a staged job waits for a run slot from there).
    pub fn ready_at(&self) -> f64 {
        let t = &self.timings;
        self.date_created + (t.queued_ms.unwrap_or(0) + t.staging_ms.unwrap_or(0)) as f64 / 1000.0
    }

    /// Whether the job's outputs wait for the publisher's release.
    pub fn release_pending(&self) -> bool {
        self.release
            .as_ref()
            .is_some_and(|r| r.state == ApprovalState::Pending)
    }

    pub fn is_finished(&self) -> bool {
        self.phase.is_terminal()
    }

    fn output_flag(&self, name: &str, default: bool) -> bool {
        let value = self
            .agreement
            .as_ref()
            .and_then(|a| a.output.as_ref())
            .and_then(|o| o.get(name));
        match value {
            Some(serde_json::Value::Bool(b)) => *b,
            Some(serde_json::Value::Number(n)) => n.as_i64() != Some(0),
            Some(serde_json::Value::String(s)) => !matches!(s.as_str(), "0" | "false" | ""),
            _ => default,
        }
    }

    /// `output.publishOutput`: publish the results as a new asset owned by the consumer.
    pub fn wants_results_asset(&self) -> bool {
        self.output_flag("publishOutput", false)
    }

    /// `output.publishAlgorithmLog`: let the consumer read the algorithm's log (default yes).
    pub fn publishes_log(&self) -> bool {
        self.output_flag("publishAlgorithmLog", true)
    }

    /// Who may download the results besides the consumer (`output.whitelist`).
    pub fn whitelist(&self) -> Vec<String> {
        self.agreement
            .as_ref()
            .and_then(|a| a.output.as_ref())
            .and_then(|o| o.get("whitelist"))
            .and_then(|w| w.as_array())
            .map(|l| {
                l.iter()
                    .filter_map(|a| a.as_str())
                    .map(|a| a.to_lowercase())
                    .collect()
            })
            .unwrap_or_default()
    }
}

pub fn now_epoch() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// 32 hex characters, as Brizo job ids are.
pub fn new_job_id() -> String {
    use rand::Rng;
    let bytes: [u8; 16] = rand::rng().random();
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for code in [10, 20, 30, 31, 32, 40, 50, 60, 70] {
            assert_eq!(Phase::from_code(code).unwrap().code(), code);
        }
        assert_eq!(Phase::from_code(11), None);
        assert!(Phase::AlgorithmProvisioningFailed.is_terminal());
        assert!(!Phase::Publishing.is_terminal());
    }

    #[test]
    fn request_rejects_unknown_fields() {
        let bad = r#"{"image":"a:b","entrypoint":"x","algorithm":{"rawcode":"1"},"imagee":"typo"}"#;
        assert!(serde_json::from_str::<JobRequest>(bad).is_err());
    }

    #[test]
    fn job_ids_are_32_hex() {
        let id = new_job_id();
        assert_eq!(id.len(), 32);
        assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(id, new_job_id());
    }
}
