use std::path::PathBuf;

/// What can go wrong in the loop.
#[derive(Debug, thiserror::Error)]
pub enum HitlError {
    /// No such item waits (never staged, already answered, or timed out).
    #[error("no pending approval `{0}`")]
    Unknown(String),
    /// The approval names an action other than the one waiting under that id.
    #[error(
        "approval for `{id}` does not match the waiting action (it changed, or the approval is for another one)"
    )]
    Mismatch {
        /// The id.
        id: String,
    },
    /// The factor given is weaker than the level needs.
    #[error("`{id}` needs level {level}: {needed}; {given} is level {strength}")]
    TooWeak {
        /// The id.
        id: String,
        /// The level asked for.
        level: u8,
        /// What the level needs, in words.
        needed: &'static str,
        /// What was given.
        given: crate::level::Factor,
        /// Its strength.
        strength: u8,
    },
    /// The item's timeout ran out; it was denied.
    #[error("`{0}` timed out and was denied")]
    Expired(String),
    /// The owner's "remember this" cannot be granted (level 5, a path the call lacks, too long).
    #[error("`{id}` not approved: {source}")]
    Remember {
        /// The id.
        id: String,
        /// Why.
        #[source]
        source: p3ak_approval::remember::RememberError,
    },
    /// Already approved: an approval is used once.
    #[error("`{0}` is already approved; an approval cannot be given again")]
    AlreadyApproved(String),
    /// Pull-back after the window, or for an action that has none.
    #[error("`{id}` cannot be pulled back: {reason}")]
    NoPullback {
        /// The id.
        id: String,
        /// Why.
        reason: String,
    },
    /// A staged request that cannot be admitted.
    #[error("invalid staged request `{id}`: {reason}")]
    InvalidRequest {
        /// The id (or file name).
        id: String,
        /// Why.
        reason: String,
    },
    /// A factor was wrong, missing, malformed or cannot be added.
    #[error(transparent)]
    Factor(#[from] FactorError),
    /// Too many wrong factors: locked for a while.
    #[error("too many wrong tries: locked for {seconds} s more")]
    LockedOut {
        /// Seconds left.
        seconds: u64,
    },
    /// A file or directory operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A spool file or state file that does not open.
    #[error("`{path}`: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A process that is not one of the operators asked the daemon something.
    #[error("uid {uid} is not an operator of this approval daemon")]
    NotOperator {
        /// The peer's uid.
        uid: u32,
    },
    /// Nothing answers on the daemon's socket.
    #[error("no approval daemon is running (nothing answers on `{}`): start the kernel with `p3ak up`", socket.display())]
    NotRunning {
        /// The socket tried.
        socket: PathBuf,
    },
    /// A lock was poisoned by a panic elsewhere.
    #[error("{what} is poisoned")]
    Poisoned {
        /// Whose state (`the daemon's state`).
        what: &'static str,
    },
    /// A message or state could not be encoded.
    #[error("{0}")]
    Encode(#[source] serde_json::Error),
    /// The factor store could not be encoded.
    #[error("cannot encode the factor store: {0}")]
    EncodeFactors(#[source] serde_json::Error),
    /// A passkey could not be encoded for the factor store.
    #[error("cannot store the key: {0}")]
    StoreKey(#[source] serde_json::Error),
    /// A message over the frame limit.
    #[error("{0}")]
    FrameSize(#[source] p3ak_proto::ProtoError),
    /// The daemon hung up before its answer.
    #[error("the approval daemon closed the connection without answering")]
    ClosedWithoutAnswer,
    /// An operator connection closed before its request.
    #[error("the connection closed before a request")]
    ClosedBeforeRequest,
    /// An operator connection sent no request in time.
    #[error("no request in time")]
    RequestTimeout,
    /// The kernel's channel closed before the start frame.
    #[error("no start frame on the channel")]
    NoStartFrame,
    /// A key in the start frame is not hex.
    #[error("the {what} is not hex")]
    NotHex {
        /// Which key.
        what: &'static str,
    },
    /// A login token that is not 64 hex digits.
    #[error("a console login token is 64 hex digits")]
    LoginToken,
    /// A login link was asked for while no console runs.
    #[error("the web console is not running")]
    ConsoleNotRunning,
    /// The console's default origin could not be made.
    #[error("cannot make the console's origin: {0}")]
    ConsoleOrigin(#[source] url::ParseError),
    /// The console's origin is not `http(s)://host[:port]`.
    #[error("the console's origin `{origin}` must be `http(s)://host[:port]`")]
    ConsoleOriginForm {
        /// The origin given.
        origin: url::Url,
    },
    /// The console's origin is not a URL.
    #[error("the console origin `{origin}` is not a URL: {source}")]
    ConsoleOriginUrl {
        /// The origin given.
        origin: String,
        /// Why.
        source: url::ParseError,
    },
    /// The console's address is not `ip:port`.
    #[error("the console address `{listen}` is not `ip:port`")]
    ConsoleAddress {
        /// The address given.
        listen: String,
    },
    /// A non-loopback console address the operator did not allow.
    #[error(
        "the console would listen on `{listen}`, which is not a loopback address; it listens on another only when configured to"
    )]
    ConsolePublic {
        /// The address.
        listen: std::net::SocketAddr,
    },
    /// The bound port does not fit the origin.
    #[error("cannot put the port in the console's origin `{origin}`")]
    ConsolePort {
        /// The origin.
        origin: url::Url,
    },
    /// A blocking task of the console did not finish.
    #[error("the console's task failed: {0}")]
    ConsoleTask(#[source] tokio::task::JoinError),
    /// The console runs without WebAuthn (its setup failed when it started).
    #[error("{0}")]
    WebauthnUnavailable(#[source] std::sync::Arc<WebauthnSetupError>),
    /// A frame on the kernel's channel or the operator socket that is not what this side
    /// expects, or that could not be sent.
    #[error("{context}: {source}")]
    Frame {
        /// What was being read or written.
        context: &'static str,
        /// Why.
        #[source]
        source: p3ak_proto::ProtoError,
    },
    /// The daemon refused an operator's request (its words).
    #[error("{message}")]
    Refused {
        /// Why.
        message: String,
    },
    /// The daemon answered with something other than what was asked for.
    #[error("unexpected answer from the approval daemon")]
    UnexpectedAnswer,
    /// An approver's identity is not `NAME:<platform user id>`.
    #[error(
        "`{id}` is not an approver identity: {reason} (expected `NAME:<user id>`, e.g. `telegram:7`)"
    )]
    BadApprover {
        /// What was given.
        id: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Staging, sealing or moving a request failed.
    #[error(transparent)]
    Approval(#[from] p3ak_approval::ApprovalError),
    /// Crypto failed.
    #[error(transparent)]
    Crypto(#[from] p3ak_crypto::CryptoError),
}

impl HitlError {
    pub(crate) fn frame(context: &'static str) -> impl FnOnce(p3ak_proto::ProtoError) -> Self {
        move |source| Self::Frame { context, source }
    }

    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| Self::Io { context, source }
    }
}

/// Why the console cannot offer WebAuthn.
#[derive(Debug, thiserror::Error)]
pub enum WebauthnSetupError {
    /// The console is reached by an IP address: WebAuthn needs a domain as relying party.
    #[error("WebAuthn needs the console reached by a host name such as `localhost`, not `{host}`")]
    NoHostName {
        /// The host it is reached at.
        host: String,
    },
    /// webauthn-rs refused the relying party.
    #[error("cannot set up WebAuthn for `{origin}`: {}", crate::webauthn::lower(&source.to_string()))]
    RelyingParty {
        /// The console's origin.
        origin: url::Url,
        /// Why.
        source: webauthn_rs::prelude::WebauthnError,
    },
}

/// Why a factor was refused, or cannot be set up or added.
#[derive(Debug, thiserror::Error)]
pub enum FactorError {
    /// A PIN was asked for and none is set.
    #[error("no PIN is set: `p3ak hitl pin set`")]
    NoPin,
    /// A TOTP code was given and TOTP is not set up.
    #[error("TOTP is not set up: `p3ak hitl totp enroll`")]
    NoTotp,
    /// A wrong PIN or code; more tries are left before a lockout.
    #[error("wrong {factor} ({left} more wrong {} before a lockout)", if *left == 1 { "try" } else { "tries" })]
    Wrong {
        /// `PIN` or `TOTP code`.
        factor: &'static str,
        /// Wrong tries left.
        left: u32,
    },
    /// A wrong PIN or code that started (or is under) a lockout.
    #[error("wrong {factor}: too many wrong tries, locked for {seconds} s")]
    WrongLocked {
        /// `PIN` or `TOTP code`.
        factor: &'static str,
        /// Seconds locked.
        seconds: u64,
    },
    /// Changing factors needs the current PIN (or a TOTP code).
    #[error("a PIN is set: give the current PIN (or a TOTP code) to change factors")]
    PinNeededForChange,
    /// Changing factors needs a current TOTP code.
    #[error("TOTP is set up: give a current TOTP code to change factors")]
    TotpNeededForChange,
    /// A PIN too short.
    #[error("a PIN needs at least {min} characters, this one has {count}")]
    PinTooShort {
        /// The minimum.
        min: usize,
        /// Its length.
        count: usize,
    },
    /// A PIN too long.
    #[error("a PIN has at most {max} characters, this one has {count}")]
    PinTooLong {
        /// The maximum.
        max: usize,
        /// Its length.
        count: usize,
    },
    /// A PIN of one character repeated.
    #[error("a PIN of one character repeated is too easy to guess")]
    PinRepeated,
    /// No TOTP enrollment waits for its confirming code.
    #[error("no TOTP enrollment is waiting: `p3ak hitl totp enroll`")]
    NoTotpEnrollment,
    /// The TOTP enrollment waited too long.
    #[error("the TOTP enrollment expired: start it again (`p3ak hitl totp enroll`)")]
    TotpEnrollmentExpired,
    /// A TOTP code that is not six digits.
    #[error("a TOTP code is {digits} digits (from your authenticator app)")]
    TotpCodeForm {
        /// The digits a code has.
        digits: u8,
    },
    /// A TOTP secret of the wrong length.
    #[error("a TOTP secret is {expected} bytes ({} base32 characters), this one is {len}", expected * 8 / 5)]
    TotpSecretLength {
        /// The length a secret has.
        expected: usize,
        /// Its length.
        len: usize,
    },
    /// A TOTP secret with a character outside base32.
    #[error("a TOTP secret is base32 (A-Z and 2-7)")]
    TotpSecretSymbol(#[source] data_encoding::DecodeError),
    /// A TOTP secret that is not valid base32 otherwise.
    #[error("a TOTP secret is not valid base32: {0}")]
    TotpSecretBase32(#[source] data_encoding::DecodeError),
    /// The TOTP generator refused its parameters.
    #[error("cannot compute a TOTP code: {0}")]
    TotpCompute(#[source] totp_rs::TotpError),
    /// A TOTP code could not be written out.
    #[error("cannot format a TOTP code")]
    TotpFormat(#[source] std::fmt::Error),
    /// The clock says before 1970.
    #[error("the system clock is before 1970: TOTP codes cannot be checked")]
    ClockBefore1970,
    /// A TOTP account name of the wrong length.
    #[error("a TOTP account name has 1 to {max} characters")]
    TotpAccountLength {
        /// The maximum.
        max: usize,
    },
    /// A TOTP account name with a colon or a control character.
    #[error("TOTP account name `{}` has a colon or a control character", account.escape_default())]
    TotpAccountChars {
        /// The name as given.
        account: String,
    },
    /// A security key's name that is empty, too long or not printable.
    #[error("a key's name is 1–{max} printable characters")]
    KeyName {
        /// The maximum.
        max: usize,
    },
    /// A security key of that name exists.
    #[error("a key named `{name}` exists already")]
    KeyExists {
        /// The name.
        name: String,
    },
    /// Adding a key needs the PIN.
    #[error("adding a security key needs your PIN")]
    PinNeededForKey,
    /// A second key needs a PIN first.
    #[error("set a PIN first (`p3ak hitl pin set`): a second key is added with it")]
    PinFirst,
    /// No registration waits for this session.
    #[error("no key registration is in progress (it expired or was used): start again")]
    NoRegistration,
    /// The key is registered already.
    #[error("this key is registered already")]
    KeyRegistered,
    /// No security key is registered.
    #[error("no security key is registered: add one on the keys page")]
    NoKeys,
    /// No security key check waits for this session and item.
    #[error(
        "no security key check is in progress for `{id}` (it expired or was used): start again"
    )]
    NoKeyCheck {
        /// The item.
        id: String,
    },
    /// The key's answer did not verify the user.
    #[error("the security key did not verify you (no PIN or biometric)")]
    NotVerified,
    /// A stored key does not decode.
    #[error("the stored key `{name}` does not read: {source}")]
    StoredKeyUnreadable {
        /// Its name.
        name: String,
        /// Why.
        source: serde_json::Error,
    },
    /// webauthn-rs refused a key's answer.
    #[error("{what}: {}", crate::webauthn::lower(&source.to_string()))]
    Refused {
        /// Which answer.
        what: &'static str,
        /// Why.
        source: webauthn_rs::prelude::WebauthnError,
    },
}
