//! The `cred-proxy` sidecar: the base-URL style door. `http://127.0.0.1:9099/<route>/...`
//! goes to the route's upstream with its credential injected, through pipelock.

pub mod routes;
pub mod server;

pub use server::run;
