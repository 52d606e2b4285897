//! `p3ak-redteam`: the hostile plugin (`src/bin/hostile.rs`) and the integration tests in
//! `tests/` that run it inside a real kernel. See `docs/threat-model.md`.
#![forbid(unsafe_code)]

/// Every attack the hostile plugin knows, as named on its command line.
pub const ATTACKS: &[&str] = &[
    "read_vault",
    "audit_log",
    "other_socket",
    "approve",
    "outbox",
    "ptrace_kernel",
    "signal_kernel",
    "kernel_environ",
    "exec_sh",
    "tcp_connect",
    "fork_bomb",
    "alloc_10g",
    "write_outside",
    "symlink_escape",
    "big_frame",
    "invalid_json",
    "impersonate",
    "flood",
];
