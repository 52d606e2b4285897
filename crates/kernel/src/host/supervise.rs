//! One plugin's life: start it, take its handshake, serve its connection until it ends, and
//! restart it with backoff (or give up after too many restarts).

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use p3ak_proto::{Credential, Envelope, Message};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::{mpsc, oneshot, watch};
use zeroize::Zeroizing;

use super::connection::{Connection, FrameReader, HostError, Violation};
use super::handshake::{Handshake, HandshakeError, Step};
use super::registration::Registration;
use super::{Host, PluginState, Slot, stopped};
use crate::audit::AuditEvent;
use crate::launch::{ExitInfo, ExitWatch, LaunchError};
use crate::scrub::StreamScrubber;

/// Why one run of a plugin ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ending {
    /// It was not started.
    NotStarted(String),
    /// It exited (before or while being served).
    Exited(ExitInfo),
    /// It closed its connection.
    Closed,
    /// It closed its connection and exited.
    ClosedAndExited(ExitInfo),
    /// Its handshake failed.
    Handshake(HandshakeError),
    /// It broke the protocol on a live connection.
    Violation(Violation),
    /// It did not answer a ping in time.
    Hung,
    /// A ping got another answer, or failed otherwise.
    PingFailed(String),
    /// The kernel stopped it (shutdown or maintenance).
    ShutDown,
}

impl std::fmt::Display for Ending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotStarted(why) => f.write_str(why),
            Self::Exited(status) => write!(f, "exited ({status})"),
            Self::Closed => f.write_str("closed the connection"),
            Self::ClosedAndExited(status) => {
                write!(f, "closed the connection and exited ({status})")
            }
            Self::Handshake(e) => e.fmt(f),
            Self::Violation(v) => write!(f, "protocol violation: {v}"),
            Self::Hung => f.write_str("did not answer a ping in time (hung)"),
            Self::PingFailed(why) => write!(f, "ping failed: {why}"),
            Self::ShutDown => f.write_str("shut down"),
        }
    }
}

impl Ending {
    /// Whether the plugin broke the protocol (audited as `plugin.misbehaved`).
    fn misbehaved(&self) -> bool {
        matches!(
            self,
            Self::Violation(_)
                | Self::Handshake(
                    HandshakeError::Protocol(_)
                        | HandshakeError::OutOfOrder { .. }
                        | HandshakeError::WrongName { .. }
                        | HandshakeError::Registration(_)
                        | HandshakeError::NoCommonVersion(_)
                )
        )
    }
}

impl Host {
    pub(super) async fn supervise(self: Arc<Self>, slot: Arc<Slot>) {
        let name = slot.spec.name.clone();
        let mut recent: Vec<Instant> = Vec::new();
        let mut backoff = Duration::from_millis(500);
        loop {
            if *slot.held.borrow() {
                slot.state
                    .send_replace(PluginState::Restarting("held for maintenance".to_owned()));
                let mut held = slot.held.subscribe();
                let mut shutdown = self.shutdown.subscribe();
                tokio::select! {
                    _ = held.wait_for(|h| !*h) => {}
                    () = stopped(&mut shutdown) => {}
                }
                if self.stopping.load(Ordering::SeqCst) {
                    slot.state.send_replace(PluginState::Stopped);
                    return;
                }
                slot.state.send_replace(PluginState::Starting);
            }
            let started = Instant::now();
            let ending = self.run_once(&slot).await;
            if let Ok(mut c) = slot.connection.write() {
                *c = None;
            }
            if let Ok(mut p) = slot.pid.write() {
                *p = None;
            }
            if self.stopping.load(Ordering::SeqCst) {
                self.audit
                    .note(AuditEvent::PluginStop {
                        plugin: name.clone(),
                    })
                    .await;
                slot.state.send_replace(PluginState::Stopped);
                return;
            }
            if *slot.held.borrow() {
                self.audit
                    .note(AuditEvent::PluginHeld {
                        plugin: name.clone(),
                    })
                    .await;
                continue;
            }
            let reason = ending.to_string();
            tracing::warn!(plugin = %name, %reason, "plugin stopped");
            self.audit
                .note(AuditEvent::PluginExit {
                    plugin: name.clone(),
                    reason: reason.clone(),
                })
                .await;
            // A plugin that ran well for a while starts again from the shortest delay.
            if started.elapsed() > self.settings.restart_window {
                backoff = Duration::from_millis(500);
            }
            let now = Instant::now();
            recent.retain(|t| now.duration_since(*t) < self.settings.restart_window);
            if recent.len() >= self.settings.restart_limit as usize {
                let detail = format!(
                    "{} restarts within {}; last: {reason}",
                    recent.len(),
                    humantime::format_duration(self.settings.restart_window)
                );
                self.audit
                    .note(AuditEvent::PluginFailed {
                        plugin: name.clone(),
                        reason: detail.clone(),
                    })
                    .await;
                tracing::error!(plugin = %name, "{detail}: given up");
                slot.state.send_replace(PluginState::Failed(detail));
                return;
            }
            recent.push(now);
            slot.state.send_replace(PluginState::Restarting(reason));
            let mut shutdown = self.shutdown.subscribe();
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = stopped(&mut shutdown) => {}
            }
            if self.stopping.load(Ordering::SeqCst) {
                slot.state.send_replace(PluginState::Stopped);
                return;
            }
            backoff = (backoff * 2).min(Duration::from_secs(30));
            slot.restarts.fetch_add(1, Ordering::Relaxed);
            self.audit
                .note(AuditEvent::PluginRestart {
                    plugin: name.clone(),
                })
                .await;
            slot.state.send_replace(PluginState::Starting);
        }
    }

    /// Starts the plugin once and serves it until it goes away; returns why it did.
    async fn run_once(&self, slot: &Arc<Slot>) -> Ending {
        let name = &slot.spec.name;
        let launched = match self.launcher.launch(name).await {
            Ok(launched) => launched,
            Err(e) => {
                if let LaunchError::Refused(_) = &e {
                    self.audit
                        .note(AuditEvent::SandboxRefused {
                            plugin: name.clone(),
                            missing: serde_json::json!(self.launcher.refusal().1),
                        })
                        .await;
                }
                return Ending::NotStarted(e.to_string());
            }
        };
        let pid = launched.pid;
        self.audit
            .note(AuditEvent::PluginStart {
                plugin: name.clone(),
                pid,
                sandbox: serde_json::json!(launched.sandbox),
            })
            .await;
        if let Ok(mut p) = slot.pid.write() {
            *p = Some(pid);
        }
        if let Ok(mut u) = slot.uid.write() {
            *u = Some(launched.uid);
        }
        if let Some(stderr) = launched.stderr {
            self.forward_stderr(name, stderr);
        }
        let mut exit = launched.exit;
        let ending = self.serve(slot, launched.connection, &mut exit).await;
        // A plugin killed by its sandbox closes the connection as it dies: give its exit a
        // moment to arrive, so that what killed it is audited.
        let status = match ending {
            Ending::Exited(status) => Some(status),
            Ending::Closed => tokio::time::timeout(Duration::from_secs(3), exit.wait())
                .await
                .ok()
                .flatten(),
            _ => exit.now(),
        };
        let ending = match (ending, status) {
            (Ending::Closed, Some(status)) => Ending::ClosedAndExited(status),
            (ending, _) => ending,
        };
        if let Some(status) = status {
            self.audit_exit_signal(name, status).await;
        }
        self.launcher.kill(name, pid);
        let _ = tokio::time::timeout(Duration::from_secs(2), exit.wait()).await;
        ending
    }

    fn forward_stderr(&self, name: &str, stderr: OwnedFd) {
        let Ok(stderr) = tokio::net::unix::pipe::Receiver::from_owned_fd(stderr) else {
            return;
        };
        let name = name.to_owned();
        let scrubber = self.broker.scrubber();
        tokio::spawn(async move {
            // Plugins see injected secrets; what they print is scrubbed like results, as one
            // stream, so that a secret split over two lines is caught too.
            let mut stream = StreamScrubber::new(scrubber);
            let mut released = String::new();
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                released.push_str(&stream.push(&line));
                released.push_str(&stream.push("\n"));
                while let Some(end) = released.find('\n') {
                    let line: String = released.drain(..=end).collect();
                    tracing::info!(plugin = %name, "{}", line.trim_end());
                }
            }
            released.push_str(&stream.finish());
            for line in released.lines() {
                tracing::info!(plugin = %name, "{line}");
            }
        });
    }

    /// Takes the handshake on `stream` and serves the plugin until it ends.
    async fn serve(
        &self,
        slot: &Arc<Slot>,
        stream: tokio::net::UnixStream,
        exit: &mut ExitWatch,
    ) -> Ending {
        let spec = &slot.spec;
        let (read, mut write) = stream.into_split();
        let mut reader = FrameReader::new(read, self.settings.max_frame);
        let key = match self.plugin_token(&spec.name, &spec.config) {
            Some(token) => Some(token),
            None => slot
                .handoff
                .read()
                .ok()
                .and_then(|h| h.as_ref().map(|k| Credential::new(hex::encode(k.expose())))),
        };
        let registration = tokio::select! {
            result = self.handshake(&spec.name, spec.config.clone(), key, &mut reader, &mut write) => result,
            status = exit.wait() => return status.map_or(Ending::Closed, Ending::Exited),
        };
        let registration = match registration {
            Ok(registration) => registration,
            Err(e) => {
                let ending = Ending::Handshake(e);
                self.audit_misbehaved(&spec.name, &ending).await;
                return ending;
            }
        };
        self.audit_registration(&spec.name, &registration).await;

        let (frames, mut outgoing) = mpsc::channel::<Zeroizing<Vec<u8>>>(64);
        let connection = Connection::new(
            spec.name.clone(),
            frames,
            self.settings.max_frame,
            registration,
            self.connectors.get().map(|c| c.requests.clone()),
        );
        if let Ok(mut c) = slot.connection.write() {
            *c = Some(Arc::clone(&connection));
        }
        slot.state.send_replace(PluginState::Running);
        if connection.kind() == p3ak_proto::PluginKind::Connector
            && let Some(connectors) = self.connectors.get()
        {
            let _ = connectors
                .requests
                .send(super::connection::PluginEvent::Up(Arc::clone(&connection)))
                .await;
        }

        let writer = tokio::spawn(async move {
            while let Some(frame) = outgoing.recv().await {
                if write.write_all(&frame).await.is_err() {
                    break;
                }
            }
        });
        let mut shutdown = self.shutdown.subscribe();
        let mut held = slot.held.subscribe();
        let mut ping = tokio::time::interval(self.settings.ping_interval);
        ping.tick().await;
        let ending = loop {
            tokio::select! {
                frame = reader.read_message() => match frame {
                    Ok(Some(envelope)) => if let Err(v) = connection.deliver(envelope) {
                        break Ending::Violation(v);
                    },
                    Ok(None) => break Ending::Closed,
                    Err(e) => break Ending::Violation(e.into()),
                },
                status = exit.wait() => break status.map_or(Ending::Closed, Ending::Exited),
                _ = ping.tick(), if connection.idle() => {
                    if let Err(ending) = self.ping(&connection, &mut reader, exit).await {
                        break ending;
                    }
                }
                () = stopped_or_held(&mut shutdown, &mut held) => {
                    let bye = Envelope::new(0, Message::Shutdown(p3ak_proto::Shutdown {}));
                    if let Ok(frame) = p3ak_proto::encode(&bye, self.settings.max_frame) {
                        connection.send_frame(Zeroizing::new(frame)).await;
                    }
                    let _ = tokio::time::timeout(Duration::from_secs(2), exit.wait()).await;
                    break Ending::ShutDown;
                }
            }
        };
        self.audit_misbehaved(&spec.name, &ending).await;
        if let Ok(mut c) = slot.connection.write() {
            *c = None;
        }
        connection.fail_all();
        writer.abort();
        ending
    }

    /// Drives the handshake state machine over the connection, within the start timeout.
    async fn handshake(
        &self,
        plugin: &str,
        config: serde_json::Value,
        key: Option<Credential>,
        reader: &mut FrameReader,
        write: &mut OwnedWriteHalf,
    ) -> Result<Registration, HandshakeError> {
        let deadline = tokio::time::Instant::now() + self.settings.start_timeout;
        let mut handshake = Handshake::new(plugin, config, key);
        loop {
            let frame = tokio::time::timeout_at(deadline, reader.read_message())
                .await
                .map_err(|_| HandshakeError::Timeout(handshake.expected()))?;
            let send = |envelope: &Envelope| {
                p3ak_proto::encode(envelope, self.settings.max_frame)
                    .map(Zeroizing::new)
                    .map_err(|e| HandshakeError::Protocol(e.to_string()))
            };
            match handshake.receive(frame) {
                Step::Send(envelope) => {
                    let frame = send(&envelope)?;
                    write
                        .write_all(&frame)
                        .await
                        .map_err(|_| HandshakeError::Closed(handshake.expected()))?;
                }
                Step::Registered(envelope, registration) => {
                    let frame = send(&envelope)?;
                    write
                        .write_all(&frame)
                        .await
                        .map_err(|_| HandshakeError::Closed("registered"))?;
                    return Ok(registration);
                }
                Step::Refuse(envelope, error) => {
                    if let Ok(frame) = send(&envelope) {
                        let _ = write.write_all(&frame).await;
                    }
                    return Err(error);
                }
                Step::Fail(error) => return Err(error),
            }
        }
    }

    /// Pings an idle plugin and waits for the answer while still reading its frames (the
    /// pong arrives through them).
    async fn ping(
        &self,
        connection: &Arc<Connection>,
        reader: &mut FrameReader,
        exit: &mut ExitWatch,
    ) -> Result<(), Ending> {
        let pinger = Arc::clone(connection);
        let timeout = self.settings.ping_timeout;
        let (tx, mut rx) = oneshot::channel();
        tokio::spawn(async move {
            let result = pinger
                .request(Message::Ping(p3ak_proto::Ping {}), timeout, None)
                .await;
            let _ = tx.send(result);
        });
        loop {
            tokio::select! {
                answer = &mut rx => {
                    return match answer {
                        Ok(Ok(Message::Pong(_))) => Ok(()),
                        Ok(Ok(other)) => Err(Ending::PingFailed(format!("answered with `{}`", other.type_name()))),
                        Ok(Err(HostError::Timeout(_))) => Err(Ending::Hung),
                        Ok(Err(e)) => Err(Ending::PingFailed(e.to_string())),
                        Err(_) => Err(Ending::PingFailed("abandoned".to_owned())),
                    };
                }
                frame = reader.read_message() => match frame {
                    Ok(Some(envelope)) => connection.deliver(envelope).map_err(Ending::Violation)?,
                    Ok(None) => return Err(Ending::Closed),
                    Err(e) => return Err(Ending::Violation(e.into())),
                },
                status = exit.wait() => {
                    return Err(status.map_or(Ending::Closed, Ending::Exited));
                }
            }
        }
    }

    async fn audit_misbehaved(&self, plugin: &str, ending: &Ending) {
        if ending.misbehaved() {
            self.audit
                .note(AuditEvent::PluginMisbehaved {
                    plugin: plugin.to_owned(),
                    reason: ending.to_string(),
                })
                .await;
        }
    }

    /// A plugin killed by a signal: `SIGSYS` is its seccomp filter stopping a system call,
    /// `SIGXCPU`/`SIGKILL` after `RLIMIT_CPU` its CPU limit.
    async fn audit_exit_signal(&self, plugin: &str, status: ExitInfo) {
        let Some(signal) = status.signal else {
            return;
        };
        let (violation, layer) = match signal {
            31 => (true, "seccomp: a system call outside its profile"),
            24 => (true, "rlimit: CPU time"),
            25 => (true, "rlimit: file size"),
            _ => (false, "killed by a signal"),
        };
        let (plugin, stopped_by) = (plugin.to_owned(), layer.to_owned());
        let event = if violation {
            AuditEvent::SandboxViolation {
                plugin,
                signal,
                stopped_by,
                core_dumped: status.core_dumped,
            }
        } else {
            AuditEvent::PluginSignal {
                plugin,
                signal,
                stopped_by,
                core_dumped: status.core_dumped,
            }
        };
        self.audit.note(event).await;
    }

    /// Records what a plugin registered. Returns nothing to the plugin about masking.
    async fn audit_registration(&self, plugin: &str, registration: &Registration) {
        let actions: Vec<String> = registration
            .actions
            .iter()
            .map(|a| format!("{plugin}.{}", a.spec.name))
            .collect();
        self.audit
            .note(AuditEvent::PluginRegistered {
                plugin: plugin.to_owned(),
                kind: registration.kind,
                actions,
            })
            .await;
    }
}

/// Resolves when the kernel stops or the plugin is held.
async fn stopped_or_held(shutdown: &mut watch::Receiver<bool>, held: &mut watch::Receiver<bool>) {
    tokio::select! {
        () = stopped(shutdown) => {}
        () = stopped(held) => {}
    }
}
