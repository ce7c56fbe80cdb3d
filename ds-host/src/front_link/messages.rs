//! What the supervisor and the front door say to each other. Every
//! message is one JSON object (`"type"` names it); unknown kinds and
//! fields are refused, and descriptors arrive only with the kinds that
//! [`ToFront::descriptors`] names.

use serde::{Deserialize, Serialize};

/// Largest message either side sends or accepts (a route table is sent
/// in chunks well below it).
pub const MAX_MESSAGE: usize = 256 * 1024;

/// Routes per [`ToFront::Routes`] message.
pub const ROUTES_PER_MESSAGE: usize = 500;

/// How one listening socket is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ListenerRole {
    /// Plain HTTP, proxied (dev mode).
    Http,
    /// HTTPS, proxied.
    Https,
    /// Plain HTTP that only redirects to HTTPS on `https_port`
    /// (production).
    Redirect {
        /// The HTTPS port redirected to.
        https_port: u16,
    },
}

/// The front door's set-up, the first message it gets (with one listening
/// socket per entry of `listeners`, in order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Init {
    /// The uid and gid to become (root supervisor only).
    pub ids: Option<(u32, u32)>,
    /// The supervisor's pid: the front door dies with it.
    pub supervisor_pid: u32,
    /// How each listening socket is served.
    pub listeners: Vec<ListenerRole>,
    /// The certificate chain, PEM.
    pub certificate_pem: String,
    /// Its private key, PEM (kept in memory only).
    pub private_key_pem: String,
    /// Time to send a complete request head, ms.
    pub header_read_timeout_ms: u64,
    /// Largest request head.
    pub max_header_bytes: usize,
    /// Time to finish a TLS handshake, ms.
    pub tls_handshake_timeout_ms: u64,
    /// Time for the app to start answering, ms.
    pub response_timeout_ms: u64,
    /// Longest pause in a body, ms.
    pub body_idle_timeout_ms: u64,
    /// An appspace without requests this long is stopped, ms.
    pub idle_timeout_ms: u64,
    /// How long a start may take before the supervisor answers, ms: the
    /// front door gives up waiting for an answer after it.
    pub start_answer_timeout_ms: u64,
}

/// One domain the front door serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Lower-case domain.
    pub domain: String,
    /// The appspace's name.
    pub name: String,
}

/// Why a start failed, as the front door shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Refusal {
    /// An administrator paused it.
    Paused,
    /// Anything else: it could not be started.
    Unavailable,
}

/// Supervisor to front door.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ToFront {
    /// The set-up; carries the listening sockets.
    Init(Init),
    /// Part of a new route table; the table is replaced when `last` comes.
    Routes {
        /// These routes.
        routes: Vec<Route>,
        /// Whether this is the table's last part.
        last: bool,
    },
    /// An appspace's sandbox runs; carries its handoff socket. The answer
    /// to `Start` (`request`), or sent unasked to a restarted front door.
    Running {
        /// The `Start` answered, if any.
        request: Option<u64>,
        /// The appspace.
        name: String,
        /// Which run of its sandbox (never reused while the host runs).
        run: u64,
        /// The app's port inside the sandbox.
        app_port: u16,
    },
    /// The answer to a `Start` that failed.
    StartFailed {
        /// The `Start` answered.
        request: u64,
        /// Why, as a category.
        refusal: Refusal,
        /// Why, in words.
        reason: String,
    },
    /// Look `name` up on the nameserver socket this carries (a UDP
    /// socket connected to one nameserver, or a TCP connection to it when
    /// its UDP answer was truncated) and answer `Resolved`.
    Resolve {
        /// Echoed in the answer.
        request: u64,
        /// The name (lower case, no trailing dot).
        name: String,
    },
    /// Please send `Usage` with this request number.
    UsageRequest {
        /// Echoed in the answer.
        request: u64,
    },
    /// The host is stopping: 503 from now on, and stop accepting.
    Stopping,
}

impl ToFront {
    /// How many descriptors this message carries.
    pub fn descriptors(&self) -> usize {
        match self {
            ToFront::Init(init) => init.listeners.len(),
            ToFront::Running { .. } | ToFront::Resolve { .. } => 1,
            _ => 0,
        }
    }
}

/// Requests counted for one appspace since the front door started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Usage {
    /// The appspace.
    pub name: String,
    /// Requests served.
    pub requests: u64,
    /// Requests in flight now.
    pub in_flight: u64,
    /// Connections to the app the agent handed over.
    pub connections_handed_over: u64,
    /// Connections to the app the agent could not make.
    pub connections_refused: u64,
}

/// What the front door applied to itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Confined {
    /// Its uid now.
    pub uid: u32,
    /// Its gid now.
    pub gid: u32,
    /// The Landlock ABI enforced (0: none).
    pub landlock_abi: i32,
    /// The seccomp phase loaded.
    pub seccomp_phase: u8,
}

/// Front door to supervisor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ToSupervisor {
    /// Confinement is in force; serving starts.
    Confined(Confined),
    /// A cold start: start the appspace and answer `Running` or
    /// `StartFailed`.
    Start {
        /// Echoed in the answer.
        request: u64,
        /// The appspace.
        name: String,
    },
    /// The appspace's run `run` served nothing for the idle timeout and
    /// the front door let go of it: stop it if it is still that run.
    Idle {
        /// The appspace.
        name: String,
        /// Its run.
        run: u64,
    },
    /// The answer to `Resolve`: the addresses, or why there are none.
    Resolved {
        /// The request answered.
        request: u64,
        /// Its addresses (empty on failure).
        addresses: Vec<std::net::IpAddr>,
        /// Why there are none.
        error: Option<String>,
    },
    /// The answer to `UsageRequest`.
    Usage {
        /// The request answered.
        request: u64,
        /// Per appspace.
        usage: Vec<Usage>,
    },
}
