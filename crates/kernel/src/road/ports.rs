//! What the road needs of the world, as small traits: the kernel plugs in the plugin host,
//! the approval daemon and the system clock; tests plug in fakes and run the road in-process.

use std::sync::Arc;
use std::time::Duration;

use p3ak_approval::binding::Request;
use p3ak_proto::Message;
use tokio::sync::mpsc;

use crate::KernelError;
pub use crate::audit::{AuditSink, BoxFuture};
use crate::hitl::HitlLink;
use crate::host::{Connection, Host, HostError};

/// The time, for the policy's `time` conditions and the approval deadlines.
pub trait Clock: Send + Sync {
    /// The local time now.
    fn now(&self) -> jiff::Zoned;

    /// Milliseconds since the Unix epoch.
    fn unix_ms(&self) -> i64 {
        self.now().timestamp().as_millisecond()
    }
}

/// The system's clock, in the system's time zone.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> jiff::Zoned {
        jiff::Zoned::now()
    }
}

/// One running plugin, as the road talks to it.
pub trait PluginLink: Send + Sync {
    /// Sends a request and waits at most `timeout` for its answer; streamed text goes to
    /// `chunks`.
    fn request(
        &self,
        message: Message,
        timeout: Duration,
        chunks: Option<mpsc::Sender<String>>,
    ) -> BoxFuture<'_, Result<Message, HostError>>;
}

/// The running plugins, by name.
pub trait Plugins: Send + Sync {
    /// The link to plugin `name`, if it runs now.
    fn link(&self, name: &str) -> Option<Arc<dyn PluginLink>>;
}

/// Tools built into the kernel (its `agents` tool): offered and decided like a plugin's
/// actions, run in-process once authorised.
pub trait Builtins: Send + Sync {
    /// The plugin names it answers for, with their actions.
    fn registrations(&self) -> Vec<(&str, &crate::host::registration::Registration)>;

    /// Runs an authorised call of `plugin.action` for `caller`.
    fn run<'a>(
        &'a self,
        caller: crate::road::Caller<'a>,
        plugin: &'a str,
        action: &'a str,
        args: serde_json::Value,
    ) -> BoxFuture<'a, Result<serde_json::Value, HostError>>;
}

/// The approval daemon, as the road hands it escalations. Its answers arrive through the
/// [`PendingQueue`](crate::pending::PendingQueue).
pub trait ApprovalDesk: Send + Sync {
    /// Stages `request` for a human; returns it as staged (the category may change).
    fn stage<'a>(&'a self, request: &'a Request) -> BoxFuture<'a, Result<Request, KernelError>>;

    /// The road stopped waiting for `id`.
    fn withdraw(&self, id: &str);
}

impl PluginLink for Connection {
    fn request(
        &self,
        message: Message,
        timeout: Duration,
        chunks: Option<mpsc::Sender<String>>,
    ) -> BoxFuture<'_, Result<Message, HostError>> {
        Box::pin(Connection::request(self, message, timeout, chunks))
    }
}

impl Plugins for Host {
    fn link(&self, name: &str) -> Option<Arc<dyn PluginLink>> {
        self.connection(name).map(|c| c as Arc<dyn PluginLink>)
    }
}

impl ApprovalDesk for HitlLink {
    fn stage<'a>(&'a self, request: &'a Request) -> BoxFuture<'a, Result<Request, KernelError>> {
        Box::pin(HitlLink::stage(self, request))
    }

    fn withdraw(&self, id: &str) {
        HitlLink::withdraw(self, id);
    }
}
