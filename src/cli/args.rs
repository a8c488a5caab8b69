//! Command-line flags, as parsed. Each command turns these into a validated config before it
//! does anything.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub use super::attest::AttestArgs;

/// Confidant: a confidential inference server.
#[derive(Debug, Parser)]
#[command(name = "confidant", version, about, long_about = None)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Log output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Make a publisher signing key pair: DIR/publisher.key (0600) and DIR/publisher.pub.
    Keygen(KeygenArgs),
    /// Encrypt and sign safetensors weights and a model config into one sealed file.
    Seal(SealArgs),
    /// Print a sealed model's manifest and check its signature and ciphertext digest.
    Inspect(InspectArgs),
    /// Serve sealed models over gRPC with TLS. With no flags: the embedded demo model.
    Serve(ServeArgs),
    /// Call Predict on a server and print the outputs as JSON.
    Predict(PredictArgs),
    /// Explain rows by integrated gradients on a running server (explain scope): prints
    /// {"attributions", "targets", "output_at_input", "output_at_baseline", …}; for a text
    /// model (--text, --input-jsonl), per-token attributions in "texts".
    Explain(ExplainArgs),
    /// List the models a server has loaded.
    Models(ModelsArgs),
    /// Differential privacy: the DP-SGD accountant and noise calibration.
    Privacy(super::privacy::PrivacyArgs),
    /// Train an MLP (or logistic regression) on a CSV with DP-SGD; write safetensors and a
    /// model config, and optionally seal them. With --encoder, a text classifier head over a
    /// sealed embedding model, sealed with it.
    Train(Box<super::train::TrainArgs>),
    /// Accuracy of a model (safetensors + config) on a labelled CSV: {"accuracy", "rows"}.
    Evaluate(super::train::EvaluateArgs),
    /// Produce this platform's attestation evidence, or verify evidence against a policy.
    Attest(AttestArgs),
    /// Anonymize a CSV table (pseudonyms, k-anonymity by Mondrian), or check its k, l and t.
    Anonymize(super::anonymize::AnonymizeArgs),
    /// Manage API keys (create, list, revoke) in a server's data directory.
    Keys(KeysArgs),
    /// Check the tamper-evident audit log.
    Audit(AuditArgs),
    /// The key broker (KBS protocol, RCAR 0.4.0): serve it, store resources (data keys) and
    /// set their release policies.
    Broker(super::broker::BrokerArgs),
    /// The deployment's persisted state: `state reset` authorizes, at the broker, a server
    /// whose state is older than its freshness anchor to serve again (recorded in the
    /// anchor and in the audit log).
    State(super::broker::StateArgs),
    /// Load-test a server (confidant.v1 or the Open Inference Protocol): throughput and
    /// latency percentiles per batch size and concurrency.
    Bench(BenchArgs),
    /// Verifiable responses: fetch the evidence that binds a server's receipt key, and
    /// verify a receipt offline.
    Receipt(super::receipt::ReceiptArgs),
}

impl Command {
    /// Whether the command is a long-running server (it keeps the runtime's `SIGPIPE`
    /// setting; every other command ends quietly when its output pipe closes).
    pub fn is_server(&self) -> bool {
        match self {
            Self::Serve(_) => true,
            Self::Broker(b) => matches!(b.command, super::broker::BrokerCommand::Serve(_)),
            _ => false,
        }
    }
}

/// Wire protocols `confidant bench` can drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchProtocol {
    /// inference.GRPCInferenceService/ModelInfer with raw FP32 inputs (Triton's clients).
    Oip,
    /// confidant.v1.Inference/Predict.
    Confidant,
}

/// `confidant bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Server URL: https://HOST:PORT (TLS), or http://HOST:PORT for a plaintext peer.
    #[arg(long)]
    pub addr: String,
    /// CA or server certificate (PEM) to trust [default: <data-dir>/tls/cert.pem].
    #[arg(long, conflicts_with = "policy")]
    pub tls_ca: Option<PathBuf>,
    /// A client attestation policy (TOML): each connection verifies the server's evidence
    /// and its binding to the TLS connection before sending anything; no CA is needed.
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// NVIDIA references for a server on GPUs (with --policy).
    #[command(flatten)]
    pub gpu: super::attest::GpuReferenceArgs,
    /// API key (sent as x-api-key).
    #[arg(long, env = "CONFIDANT_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// The purpose of this processing (sent as x-purpose).
    #[arg(long)]
    pub purpose: Option<String>,
    /// The protocol to drive.
    #[arg(long, value_enum, default_value_t = BenchProtocol::Oip)]
    pub protocol: BenchProtocol,
    /// The model id.
    #[arg(long)]
    pub model: String,
    /// Rows per request, comma-separated (one run per value).
    #[arg(long, default_value = "1,32")]
    pub batch: String,
    /// Requests in flight, comma-separated (one run per value).
    #[arg(long, default_value = "1,8,32,64")]
    pub concurrency: String,
    /// Length of one measurement window (e.g. 5s, 500ms).
    #[arg(long, default_value = "5s")]
    pub window: String,
    /// Most windows per point before giving up on stability (at least 3).
    #[arg(long, default_value_t = 10)]
    pub max_trials: usize,
    /// Warm-up before each point's first window.
    #[arg(long, default_value = "1s")]
    pub warmup: String,
    /// HTTP/2 connections per point [default: one per 4 requests in flight, at most 16].
    #[arg(long)]
    pub connections: Option<usize>,
    /// Seed of the random input rows.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Feature range LO,HI when the server publishes none (OIP peers without ListModels).
    #[arg(long, default_value = "0,1", allow_hyphen_values = true)]
    pub input_range: String,
    /// A text for a text model (repeatable), as for `confidant predict`: each request
    /// carries --batch texts, taken in turn from the list (texts over confidant.v1, one BYTES
    /// tensor over OIP).
    #[arg(long, conflicts_with_all = ["seed", "input_range"])]
    pub text: Vec<String>,
    /// Texts for a text model from a JSON Lines file: one object per line with a `text`
    /// field (after any --text), as for `confidant predict`.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["seed", "input_range"])]
    pub input_jsonl: Option<PathBuf>,
    /// Ask for a signed receipt with every answer (`x-confidant-receipt`, keyed with a salt
    /// drawn for the run), and count an answer that carries none as an error: the cost of
    /// receipts is this run against the same run without.
    #[arg(long)]
    pub receipts: bool,
    /// Write results.json, results.csv and latency_throughput.svg into this directory.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// This run's name in the comparison table and the plot.
    #[arg(long, default_value = "confidant")]
    pub label: String,
    /// Another run's results.json: print the ratio table and plot both runs.
    #[arg(long)]
    pub baseline: Option<PathBuf>,
    /// The baseline's name in the comparison table and the plot.
    #[arg(long, default_value = "baseline")]
    pub baseline_label: String,
    /// Data directory, used to find the default --tls-ca and the demo key.
    #[arg(long, env = "CONFIDANT_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
}

/// `confidant audit`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// The audit command.
    #[command(subcommand)]
    pub command: AuditCommand,
}

/// `confidant audit …` subcommands.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Verify the hash chain and the signed checkpoints (no key needed); report the first
    /// broken record, and fail on records no checkpoint covers.
    Verify(AuditVerifyArgs),
    /// Verify, then print every record as a JSON line with its event decrypted (needs the
    /// deployment's state key).
    Export(AuditExportArgs),
}

/// `confidant audit verify`.
#[derive(Debug, Args)]
pub struct AuditVerifyArgs {
    /// The audit directory (`<data-dir>/audit`).
    pub dir: PathBuf,
    /// A trusted checkpoint key: 64 hex digits, or a file holding them (repeatable).
    #[arg(long = "pubkey")]
    pub pubkeys: Vec<String>,
    /// Accept records after the last checkpoint (a running server's log). Without it they
    /// fail the check: no signature covers them, so they could have been rewritten.
    #[arg(long)]
    pub allow_uncovered_tail: bool,
    /// The deployment's freshness anchor (`confidant broker anchor` output): the log must
    /// hold the anchored checkpoint, signed by the anchor's key, so that a cut-off tail or
    /// an older copy of the log is detected.
    #[arg(long, value_name = "FILE")]
    pub anchor: Option<PathBuf>,
}

/// `confidant audit export`.
#[derive(Debug, Args)]
pub struct AuditExportArgs {
    /// The audit directory (`<data-dir>/audit`).
    pub dir: PathBuf,
    /// A trusted checkpoint key: 64 hex digits, or a file holding them (repeatable).
    #[arg(long = "pubkey")]
    pub pubkeys: Vec<String>,
    /// The state key: a file of 32 bytes or 64 hex digits (development). Without it, the
    /// key is found as `confidant keys` finds it, from the data directory (the parent of
    /// DIR unless --data-dir) or the broker.
    #[arg(long, conflicts_with_all = ["broker", "data_dir"])]
    pub state_key_file: Option<PathBuf>,
    /// Where the state key comes from.
    #[command(flatten)]
    pub state: StateSourceArgs,
    /// The data directory [default: the parent of DIR].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// An auditor outside the attested VM: ask the broker (`--broker`, `--broker-ca`,
    /// `--deployment`) for the deployment's audit-records key with the broker's admin key.
    /// Only that key is released (not the state key, which also opens the database), and the
    /// deployment's checkpoint key comes with it, so signatures are checked against it.
    #[arg(long, requires_all = ["broker", "admin_key"], conflicts_with = "state_key_file")]
    pub key_from_broker: bool,
    /// The broker's admin key (a path to admin.key or the 64 hex digits), for
    /// `--key-from-broker`.
    #[arg(long, env = "CONFIDANT_BROKER_ADMIN_KEY", hide_env_values = true)]
    pub admin_key: Option<String>,
}

/// Where a command beside the server gets the deployment's state key, which encrypts the
/// database and the audit log: the broker (run inside the attested VM: the command attests
/// as the server does), else the demo's embedded broker in `<data-dir>/broker`, else the
/// development key file `<data-dir>/state.key` (created on first use).
#[derive(Debug, Args, Default)]
pub struct StateSourceArgs {
    /// Key broker URL: obtain the state key by attestation, as the server does.
    #[arg(long)]
    pub broker: Option<String>,
    /// The broker's CA or self-signed certificate (PEM).
    #[arg(long, requires = "broker")]
    pub broker_ca: Option<PathBuf>,
    /// The deployment (state key resource default/state/<NAME>) [default: default].
    #[arg(long, value_name = "NAME")]
    pub deployment: Option<String>,
    /// The evidence sent to the broker, as `serve --tee`: auto or sample (Trustee's
    /// development sample evidence; not confidential).
    #[arg(long, default_value = "auto", value_name = "auto|sample")]
    pub tee: confidant::tee::TeeChoice,
}

/// `confidant keys`.
#[derive(Debug, Args)]
pub struct KeysArgs {
    /// The keys command.
    #[command(subcommand)]
    pub command: KeysCommand,
}

/// `confidant keys …` subcommands.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key; prints {"principal", "api_key", …} once. Only its hash is stored.
    Create(KeysCreateArgs),
    /// List keys (ids, principals, scopes, purposes, limits; never the keys).
    List(KeysDirArgs),
    /// Revoke one key (--key-id) or every key of a principal (--principal).
    Revoke(KeysRevokeArgs),
}

/// `confidant keys create`.
#[derive(Debug, Args)]
pub struct KeysCreateArgs {
    /// The server's data directory.
    #[arg(long, env = "CONFIDANT_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Where the state key comes from.
    #[command(flatten)]
    pub state: StateSourceArgs,
    /// Who the key belongs to.
    #[arg(long)]
    pub principal: String,
    /// Comma-separated scopes: predict, explain, admin.
    #[arg(long, default_value = "predict")]
    pub scopes: String,
    /// Comma-separated purposes the key may declare.
    #[arg(long, default_value = "")]
    pub purposes: String,
    /// Requests per minute for this key (overrides the server default).
    #[arg(long)]
    pub rpm: Option<u32>,
    /// Requests per UTC day for this key (overrides the server default).
    #[arg(long)]
    pub rpd: Option<u32>,
    /// Register this client certificate (PEM) for mutual TLS instead of creating an API
    /// key; the server must run with --client-ca.
    #[arg(long)]
    pub client_cert: Option<PathBuf>,
}

/// A data directory only.
#[derive(Debug, Args)]
pub struct KeysDirArgs {
    /// The server's data directory.
    #[arg(long, env = "CONFIDANT_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Where the state key comes from.
    #[command(flatten)]
    pub state: StateSourceArgs,
}

/// `confidant keys revoke`.
#[derive(Debug, Args)]
pub struct KeysRevokeArgs {
    /// The server's data directory.
    #[arg(long, env = "CONFIDANT_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Where the state key comes from.
    #[command(flatten)]
    pub state: StateSourceArgs,
    /// The key id (from `keys list`).
    #[arg(
        long,
        conflicts_with = "principal",
        required_unless_present = "principal"
    )]
    pub key_id: Option<String>,
    /// Revoke every live key of this principal.
    #[arg(long)]
    pub principal: Option<String>,
}

/// `confidant keygen`.
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Directory to write publisher.key and publisher.pub into (created if absent).
    #[arg(long)]
    pub out: PathBuf,
    /// Overwrite existing key files.
    #[arg(long)]
    pub force: bool,
}

/// `confidant seal`.
#[derive(Debug, Args)]
pub struct SealArgs {
    /// The weights, in safetensors (PyTorch `nn.Sequential` names: `0.weight`, `0.bias`, ...).
    #[arg(long, required_unless_present = "hf_dir", conflicts_with = "hf_dir")]
    pub weights: Option<PathBuf>,
    /// A Hugging Face model directory (model.safetensors, config.json, tokenizer.json and
    /// the sentence-transformers configs) to seal as one bundle, for a text encoder config
    /// (`architecture.kind = "bert"`).
    #[arg(long)]
    pub hf_dir: Option<PathBuf>,
    /// The model config (JSON; see README).
    #[arg(long)]
    pub config: PathBuf,
    /// The publisher's private key (from `confidant keygen`).
    #[arg(long)]
    pub signing_key: PathBuf,
    /// Where to write the sealed model.
    #[arg(long)]
    pub out: PathBuf,
    /// Where to write the fresh data key (32 bytes, mode 0600). Register it with the key
    /// broker; never ship it beside the model.
    #[arg(long)]
    pub key_out: PathBuf,
    /// Key broker resource path of the data key [default: default/models/<model id>].
    #[arg(long)]
    pub resource_path: Option<String>,
    /// Plaintext bytes per encrypted chunk (4096 ..= 67108864).
    #[arg(long, default_value_t = confidant::sealed::manifest::DEFAULT_CHUNK_SIZE)]
    pub chunk_size: u32,
    /// Overwrite existing output files.
    #[arg(long)]
    pub force: bool,
}

/// `confidant inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The sealed model.
    pub sealed: PathBuf,
    /// A trusted publisher public key; the signature must verify under it.
    #[arg(long)]
    pub publisher_key: Option<PathBuf>,
    /// The data key: also decrypt every chunk and check the plaintext digest.
    #[arg(long)]
    pub key_file: Option<PathBuf>,
}

/// `confidant serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// A TOML config file; flags override its values.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Listen address [default: 127.0.0.1:50051].
    #[arg(long)]
    pub listen: Option<String>,
    /// Prometheus /metrics address, HOST:PORT or `off` [default: 127.0.0.1:8002].
    #[arg(long)]
    pub metrics_listen: Option<String>,
    /// OpenAI-compatible embeddings API (POST /v1/embeddings, GET /v1/models) over HTTPS
    /// with the server's TLS certificate, HOST:PORT or `off` [default: 127.0.0.1:50052].
    #[arg(long)]
    pub http_listen: Option<String>,
    /// Data directory [default: $CONFIDANT_DATA_DIR or ./confidant-data].
    #[arg(long, env = "CONFIDANT_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// A sealed model to serve (repeatable). Its data key comes from --broker, or, on the
    /// development path, from the --key-file at the same position.
    #[arg(long = "model")]
    pub models: Vec<PathBuf>,
    /// Where models run: auto (the first CUDA device if this build has CUDA and one
    /// answers, else the CPU), cpu, or cuda:N.
    #[arg(long, default_value = "auto", value_parser = parse_device)]
    pub device: confidant::gpu::DeviceSpec,
    /// How sealed weights reach a CUDA device: staged (CPU decryption into page-locked
    /// buffers, zeroized after each copy) or device-decrypt (AES-GCM on the GPU: no host
    /// plaintext).
    #[arg(long, default_value = "staged", value_parser = parse_gpu_load)]
    pub gpu_load: confidant::gpu::LoadPath,
    /// The data-key file of the --model at the same position. DEVELOPMENT PATH: it bypasses
    /// attestation, and the server logs a warning.
    #[arg(long = "key-file")]
    pub key_files: Vec<PathBuf>,
    /// Key broker URL (https://HOST:PORT; ours or a Trustee KBS): each model's data key is
    /// released after attestation (RCAR), for the manifest's resource path.
    #[arg(long)]
    pub broker: Option<String>,
    /// The broker's CA or self-signed certificate (PEM), e.g. <broker-data>/tls/cert.pem.
    #[arg(long, requires = "broker")]
    pub broker_ca: Option<PathBuf>,
    /// The deployment: the server's state key (which keys its database and audit log) is
    /// the broker resource default/state/<NAME> [default: default].
    #[arg(long, value_name = "NAME")]
    pub deployment: Option<String>,
    /// Serve without rollback protection: do not keep a freshness anchor at the broker (for
    /// a broker without the anchor API, such as an upstream Trustee KBS). The host can then
    /// restore an older data directory (budgets, quotas, consent, erasures) unnoticed; the
    /// server warns at every start and every checkpoint.
    #[arg(long)]
    pub without_freshness_anchor: bool,
    /// Every Predict, ModelInfer and embeddings answer carries a signed receipt (also
    /// `[receipts] require = true`); without it a client asks per request with the
    /// x-confidant-receipt header.
    #[arg(long)]
    pub require_receipts: bool,
    /// The evidence sent to the broker and to clients: auto (this machine's TEE, else the
    /// simulated one) or sample (Trustee's development sample evidence, for a Trustee KBS
    /// running its sample verifier: NOT CONFIDENTIAL, warned at every start; Confidant's own
    /// broker and clients refuse it unless the policy sets allow_simulated).
    #[arg(long, default_value = "auto", value_name = "auto|sample")]
    pub tee: confidant::tee::TeeChoice,
    /// A trusted publisher public key (repeatable).
    #[arg(long = "publisher-key")]
    pub publisher_keys: Vec<PathBuf>,
    /// TLS certificate chain (PEM) [default: self-signed at start].
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// CA (PEM) whose client certificates may authenticate by mutual TLS; each certificate
    /// must also be registered with `keys create --client-cert`.
    #[arg(long)]
    pub client_ca: Option<PathBuf>,
    /// Most rows per forward pass [default: 256].
    #[arg(long)]
    pub max_batch: Option<usize>,
    /// Microseconds the batcher waits for more requests [default: 0].
    #[arg(long)]
    pub max_wait_us: Option<u64>,
    /// Most requests queued per model before RESOURCE_EXHAUSTED [default: 1024].
    #[arg(long)]
    pub queue_capacity: Option<usize>,
    /// Largest gRPC message in bytes [default: 16777216].
    #[arg(long)]
    pub max_message_bytes: Option<usize>,
    /// Most rows per request [default: 4096].
    #[arg(long)]
    pub max_rows: Option<usize>,
    /// Seconds a stop (SIGTERM, Ctrl-C) waits for open connections to finish their requests
    /// before it drops them, 1..=3600 [default: 10]. A client that stops reading cannot hold
    /// the stop longer: the final audit checkpoint and the broker's lease follow it.
    #[arg(long)]
    pub drain_secs: Option<u64>,
    /// Skip recomputing the ciphertext and plaintext SHA-256 at load (AES-GCM still
    /// authenticates every byte).
    #[arg(long)]
    pub skip_digest_check: bool,
    /// Default requests per minute per principal [default: unlimited].
    #[arg(long)]
    pub rpm: Option<u32>,
    /// Default requests per UTC day per principal [default: unlimited].
    #[arg(long)]
    pub rpd: Option<u32>,
}

/// `confidant predict`.
#[derive(Debug, Args)]
pub struct PredictArgs {
    /// API key (sent as x-api-key).
    #[arg(long, env = "CONFIDANT_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// The purpose of this processing (sent as x-purpose).
    #[arg(long)]
    pub purpose: Option<String>,
    /// The data subject the rows are about (sent as x-subject-id); the server then requires
    /// the subject's consent for the purpose.
    #[arg(long)]
    pub subject_id: Option<String>,
    /// Server URL, https://HOST:PORT.
    #[arg(long, default_value = "https://127.0.0.1:50051")]
    pub addr: String,
    /// CA or server certificate (PEM) to trust [default: <data-dir>/tls/cert.pem].
    #[arg(long, conflicts_with = "policy")]
    pub tls_ca: Option<PathBuf>,
    /// A client attestation policy (TOML): verify the server's evidence and its binding to
    /// this TLS connection before sending anything; no CA is needed.
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// NVIDIA references for a server on GPUs (with --policy).
    #[command(flatten)]
    pub gpu: super::attest::GpuReferenceArgs,
    /// Client certificate (PEM) for mutual TLS; the server maps it to its principal.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// The model id.
    #[arg(long)]
    pub model: String,
    /// Input rows as JSON: [[f, f, ...], ...] (or one row [f, f, ...]).
    #[arg(
        long,
        conflicts_with_all = ["input_csv", "text", "input_jsonl"],
        required_unless_present_any = ["input_csv", "text", "input_jsonl"]
    )]
    pub input: Option<String>,
    /// Input rows from a CSV file. With a header row, columns are matched to the model's
    /// feature names (extra columns ignored); without one, all columns are used in order.
    #[arg(long, conflicts_with_all = ["text", "input_jsonl"])]
    pub input_csv: Option<PathBuf>,
    /// A text for a text model (repeatable: one output row per text, in order).
    #[arg(long)]
    pub text: Vec<String>,
    /// Texts for a text model from a JSON Lines file: one object per line with a `text`
    /// field (after any --text).
    #[arg(long)]
    pub input_jsonl: Option<PathBuf>,
    /// Data directory, used to find the default --tls-ca.
    #[arg(long, env = "CONFIDANT_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Ask for a signed receipt (with a fresh salt) and write it to FILE, with
    /// FILE.request.json (the salt and the inputs) and FILE.response.json (the printed
    /// answer): what `confidant receipt verify` checks.
    #[arg(long, value_name = "FILE")]
    pub receipt_out: Option<PathBuf>,
}

/// `confidant explain`.
#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// The request, as for predict.
    #[command(flatten)]
    pub predict: PredictArgs,
    /// The output column to explain [default: each row's predicted column]; for an
    /// embedding model, the embedding dimension (required).
    #[arg(long)]
    pub target: Option<u32>,
}

/// `confidant models`.
#[derive(Debug, Args)]
pub struct ModelsArgs {
    /// API key (sent as x-api-key).
    #[arg(long, env = "CONFIDANT_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// The purpose of this processing (sent as x-purpose).
    #[arg(long)]
    pub purpose: Option<String>,
    /// Server URL, https://HOST:PORT.
    #[arg(long, default_value = "https://127.0.0.1:50051")]
    pub addr: String,
    /// CA or server certificate (PEM) to trust [default: <data-dir>/tls/cert.pem].
    #[arg(long, conflicts_with = "policy")]
    pub tls_ca: Option<PathBuf>,
    /// A client attestation policy (TOML): verify the server's evidence and its binding to
    /// this TLS connection before sending anything; no CA is needed.
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// NVIDIA references for a server on GPUs (with --policy).
    #[command(flatten)]
    pub gpu: super::attest::GpuReferenceArgs,
    /// Client certificate (PEM) for mutual TLS; the server maps it to its principal.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Data directory, used to find the default --tls-ca.
    #[arg(long, env = "CONFIDANT_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
}

fn parse_device(s: &str) -> Result<confidant::gpu::DeviceSpec, String> {
    s.parse()
        .map_err(|e: confidant::gpu::GpuError| e.to_string())
}

fn parse_gpu_load(s: &str) -> Result<confidant::gpu::LoadPath, String> {
    s.parse()
        .map_err(|e: confidant::gpu::GpuError| e.to_string())
}
