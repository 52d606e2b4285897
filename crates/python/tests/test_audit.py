"""The kernel's audit log (`P3AK_HOME/audit/kernel.vault`), as `p3ak audit tail|verify`."""

from __future__ import annotations

import pytest

import p3ak

KERNEL_PASSPHRASE = "kernel passphrase for tests"


@pytest.fixture
def kernel_log(home):
    """What `p3ak audit init` makes: the kernel's vault, holding its log."""
    (home / "audit").mkdir(mode=0o700)
    with p3ak.create(home / "audit" / "kernel.vault", KERNEL_PASSPHRASE) as v:
        v.put("an entry's worth of activity")
    return home / "audit" / "kernel.vault"


def test_read_and_verify_the_kernel_log(kernel_log, home):
    with p3ak.audit_log(KERNEL_PASSPHRASE) as log:
        assert repr(log) == f"<p3ak.AuditLog path={str(kernel_log)!r}>"
        entries = log.entries()
        assert entries and entries[0].seq == 0
        assert log.entries(1) == entries[-1:]
        report = log.verify()
        assert report.ok and report.log.log_entries == len(entries)
        assert any("no external checkpoint yet" in w for w in report.checkpoint_warnings)
        assert log.entries() == entries, "verifying the kernel's log writes nothing to it"
    assert log.closed
    with p3ak.audit_log(KERNEL_PASSPHRASE, home=home) as log:
        assert log.path == kernel_log


def test_audit_log_errors(kernel_log, home, tmp_path):
    with pytest.raises(p3ak.WrongPassphraseError):
        p3ak.audit_log("wrong")
    empty = tmp_path / "empty-home"
    with pytest.raises(p3ak.NotFoundError,
                       match=r"^no audit log at `.*kernel\.vault`: run `p3ak audit init` first$"):
        p3ak.audit_log(KERNEL_PASSPHRASE, home=empty)

    data = bytearray(kernel_log.read_bytes())
    data[len(data) // 2] ^= 0xFF
    kernel_log.write_bytes(bytes(data))
    with p3ak.audit_log(KERNEL_PASSPHRASE) as log:
        with pytest.raises(p3ak.DamagedError, match="^audit log is damaged: ") as error:
            log.verify()
        assert not error.value.report.ok
