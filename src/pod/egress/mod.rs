//! The `egress` sidecar: the agent's HTTP(S) proxy. It intercepts TLS with the bottle CA,
//! allows only declared hosts and paths, injects route credentials, tunnels passthrough hosts
//! untouched, and forwards everything through the next proxy (pipelock).

pub mod policy;
pub mod server;

pub use server::run;
