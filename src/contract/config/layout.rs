//! Fixed places in the bottle Pod: ports, mount paths, user IDs. The renderer and the sidecars
//! both read these, so a path changes in one place.

/// Where every container mounts its slice of the bottle ConfigMap.
pub const CONFIG_DIR: &str = "/etc/bottle/config";
/// Where the bottle CA Secret is mounted (cert for all sidecars, key only for interceptors).
pub const CA_DIR: &str = "/etc/bottle/ca";
/// Where projected Secret keys are mounted in the sidecar that uses them.
pub const SECRETS_DIR: &str = "/var/run/bottle/secrets";
/// Where the init container writes the agent's trust bundle.
pub const TRUST_DIR: &str = "/etc/bottle/trust";
/// Where config-sync delivers pipelock's config (an emptyDir pipelock watches).
pub const PIPELOCK_CONFIG_DIR: &str = "/etc/pipelock";
/// git-gate's mirrors and private key copies (an emptyDir).
pub const GIT_GATE_STATE_DIR: &str = "/var/lib/git-gate";
/// The agent's workspace.
pub const WORKSPACE_DIR: &str = "/workspace";
/// Where the supervise container (and no other) mounts its ServiceAccount token and the
/// API server's CA.
pub const SUPERVISE_IDENTITY_DIR: &str = "/var/run/bottle/supervise";
/// Where the agent finds its MCP server list (the supervise tool server).
pub const AGENT_MCP_DIR: &str = "/etc/bottle/mcp";

/// The multi-call binary of the sidecar image (on its PATH).
pub const SIDECAR_BIN: &str = "bottle-sidecar";

/// Environment variable naming a sidecar's mounted config file, for `config-status`.
pub const CONFIG_ENV: &str = "BOTTLE_CONFIG";
/// Environment variable naming the file config-sync delivers to pipelock.
pub const DELIVERED_CONFIG_ENV: &str = "BOTTLE_CONFIG_DELIVERED";

/// CA certificate file name in the CA Secret.
pub const CA_CERT_FILE: &str = "ca.crt";
/// CA private key file name in the CA Secret (SEC1 PEM, as pipelock requires).
pub const CA_KEY_FILE: &str = "ca.key";
/// The bottle CA alone, for Node's `NODE_EXTRA_CA_CERTS`.
pub const TRUST_CA_FILE: &str = "bottle-ca.crt";
/// System roots plus the bottle CA.
pub const TRUST_BUNDLE_FILE: &str = "ca-bundle.crt";

/// egress: the agent's HTTP(S) proxy.
pub const EGRESS_PORT: u16 = 9090;
/// egress admin (health, config version).
pub const EGRESS_ADMIN_PORT: u16 = 9091;
/// pipelock's proxy listener.
pub const PIPELOCK_PORT: u16 = 8888;
/// cred-proxy: base-URL style API door.
pub const CRED_PROXY_PORT: u16 = 9099;
/// cred-proxy admin.
pub const CRED_PROXY_ADMIN_PORT: u16 = 9100;
/// git-gate smart HTTP.
pub const GIT_GATE_PORT: u16 = 9420;
/// git-gate admin (config version).
pub const GIT_GATE_ADMIN_PORT: u16 = 9421;
/// supervise: the agent's MCP tool server and JSON API for access requests.
pub const SUPERVISE_PORT: u16 = 9430;

/// UID of the agent container.
pub const AGENT_UID: i64 = 1000;
/// UID of the egress sidecar.
pub const EGRESS_UID: i64 = 1001;
/// UID of pipelock.
pub const PIPELOCK_UID: i64 = 1002;
/// UID of cred-proxy.
pub const CRED_PROXY_UID: i64 = 1003;
/// UID of git-gate.
pub const GIT_GATE_UID: i64 = 1004;
/// UID of the init container that builds the trust bundle.
pub const CA_BUNDLE_UID: i64 = 1005;
/// UID of supervise, the one container holding an API server token.
pub const SUPERVISE_UID: i64 = 1006;
/// Group shared by the sidecars for Secret volume access.
pub const SIDECAR_GID: i64 = 2000;

/// The sidecars whose config a bottle reloads live, and the containers that answer for them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Sidecar {
    /// The agent's HTTP(S) proxy.
    Egress,
    /// The base-URL API door.
    CredProxy,
    /// The git push gate.
    GitGate,
    /// pipelock, whose config `config-sync` delivers.
    Pipelock,
}

impl Sidecar {
    /// Every kind, in the order status lists them.
    pub const ALL: [Sidecar; 4] = [
        Sidecar::Egress,
        Sidecar::Pipelock,
        Sidecar::CredProxy,
        Sidecar::GitGate,
    ];

    /// The container that answers for this sidecar's config (for pipelock: the container
    /// that delivers it, since the pipelock image holds none of our code).
    pub fn container(self) -> &'static str {
        match self {
            Sidecar::Egress => "egress",
            Sidecar::CredProxy => "cred-proxy",
            Sidecar::GitGate => "git-gate",
            Sidecar::Pipelock => "pipelock-config",
        }
    }

    /// Its file in the bottle ConfigMap.
    pub fn file(self) -> &'static str {
        match self {
            Sidecar::Egress => files::EGRESS,
            Sidecar::CredProxy => files::CRED_PROXY,
            Sidecar::GitGate => files::GIT_GATE,
            Sidecar::Pipelock => files::PIPELOCK,
        }
    }

    /// The name people know it by.
    pub fn label(self) -> &'static str {
        match self {
            Sidecar::Pipelock => "pipelock",
            k => k.container(),
        }
    }

    /// The `config-status` argument naming it.
    pub fn arg(self) -> &'static str {
        match self {
            Sidecar::Egress => "egress",
            Sidecar::CredProxy => "cred-proxy",
            Sidecar::GitGate => "git-gate",
            Sidecar::Pipelock => "pipelock",
        }
    }
}

/// Config file names, one per sidecar, in the ConfigMap.
pub mod files {
    /// egress routes.
    pub const EGRESS: &str = "egress.yaml";
    /// pipelock's own config.
    pub const PIPELOCK: &str = "pipelock.yaml";
    /// cred-proxy routes.
    pub const CRED_PROXY: &str = "cred-proxy.yaml";
    /// git-gate remotes.
    pub const GIT_GATE: &str = "git-gate.yaml";
    /// The agent's system gitconfig.
    pub const AGENT_GITCONFIG: &str = "agent.gitconfig";
    /// supervise's identity and where it finds the API server.
    pub const SUPERVISE: &str = "supervise.yaml";
    /// The agent's MCP server list (Claude Code's `--mcp-config` shape).
    pub const AGENT_MCP: &str = "mcp.json";
}

/// Loopback address every in-Pod listener binds to.
pub const LOOPBACK: &str = "127.0.0.1";
