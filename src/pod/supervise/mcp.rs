//! The MCP face of [`Ops`]: three tools over streamable HTTP, which Claude Code (or any MCP
//! client) calls like its other tools.

use std::sync::Arc;

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ServerCapabilities, ServerConfig};
use rmcp::{ErrorData, ServerHandler, tool, tool_handler, tool_router};
use serde_json::{Value, json};

use super::ops::{AccessAsk, OpError, Ops, StatusQuery};

/// One MCP session's handler; every session shares the same [`Ops`].
#[derive(Clone)]
pub struct Tools {
    ops: Arc<Ops>,
    tool_router: ToolRouter<Self>,
}

impl Tools {
    /// Tools over `ops`.
    pub fn new(ops: Arc<Ops>) -> Self {
        Self {
            ops,
            tool_router: Self::tool_router(),
        }
    }
}

/// A tool's answer: the value, or the error as a tool error the model reads (not a protocol
/// error: the agent should see why and decide what to do).
fn answer(result: Result<Value, OpError>) -> CallToolResult {
    match result {
        Ok(v) => CallToolResult::structured(v),
        Err(e) => CallToolResult::structured_error(json!({ "error": e.to_string() })),
    }
}

#[tool_router]
impl Tools {
    /// What the bottle may reach now.
    #[tool(
        description = "What this sandbox may reach over HTTPS right now: hosts open on every path, hosts open on some path prefixes only, and the hosts (and paths) refused lately, which a request could open. Read it before asking for access."
    )]
    async fn current_policy(&self) -> Result<CallToolResult, ErrorData> {
        let r = self.ops.current_policy().await.map(|p| json!(p));
        Ok(answer(r))
    }

    /// Files an access request.
    #[tool(
        description = "Ask a person for access to a host this sandbox cannot reach. Give the exact host, the path prefixes the task needs (none asks for the whole host), and why. Returns the request's name; a person approves or denies it, then request_status tells. Ask for as little as the task needs: narrow asks are approved sooner."
    )]
    async fn request_access(
        &self,
        Parameters(ask): Parameters<AccessAsk>,
    ) -> Result<CallToolResult, ErrorData> {
        Ok(answer(self.ops.request_access(&ask).await))
    }

    /// Where a request stands.
    #[tool(
        description = "Where an access request stands: Pending, Approved (with the paths granted and when it expires), Applied, Denied (with the reason) or Expired. With wait_seconds it waits up to that long (at most 300) for it to be applied or refused. Approved means a person said yes and the route is on its way; Applied means egress enforces it now: retry the blocked request then."
    )]
    async fn request_status(
        &self,
        Parameters(q): Parameters<StatusQuery>,
    ) -> Result<CallToolResult, ErrorData> {
        Ok(answer(self.ops.request_status(&q).await))
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Tools {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build()).with_instructions(
            "This sandbox reaches only the hosts its Bottle allows. When a request is refused \
             by the proxy, call current_policy, then request_access with the narrowest route \
             that would do, then request_status with wait_seconds to learn the decision.",
        )
    }
}
