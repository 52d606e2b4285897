#!/usr/bin/env python3
"""An independent reader of the P3AK vault format, written from docs/vault-format.md.

Usage: read_vault.py VAULT   (passphrase in P3AK_PASSPHRASE; ignored for unencrypted vaults)

Prints JSON: {"encryption", "vault_id", "generation", "log", "canary", "documents": [{id,
title, tags, size, sha256}]}; internal objects (a `space` in their metadata) are not documents,
and the canary's check value is checked. Exits 1 with a message on any check that fails. It
shares no code with the Rust implementation; the test suite compares the two.
"""
import hashlib
import hmac
import json
import os
import struct
import sys

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

MAGIC = b"\x89P3AKV\r\n"
HEADER_LEN = 4096
KEY_SLOTS_END = 64 + 4 * 128
COMMIT_SLOTS = (1024, 1536)


def fail(msg):
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(1)


def hkdf(master, vault_id, info):
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=vault_id, info=info).derive(master)


def mth(leaves):
    """Merkle tree hash of RFC 9162 section 2.1.1."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return hashlib.sha256(b"\x01" + mth(leaves[:k]) + mth(leaves[k:])).digest()


def main(path):
    data = open(path, "rb").read()
    if data[:8] != MAGIC:
        fail("not a p3ak vault")
    (version,) = struct.unpack_from("<H", data, 8)
    if version != 1:
        fail(f"version {version}")
    encrypted = data[10] == 1
    vault_id = data[16:32]
    prefix = data[:64]

    content_key = mac_key = ids_key = None
    if encrypted:
        passphrase = os.environ["P3AK_PASSPHRASE"].encode()
        master = None
        for i in range(4):
            slot = data[64 + i * 128 : 64 + (i + 1) * 128]
            if slot[0] != 1 or slot[1] != 0x13:
                continue
            m, t, p = struct.unpack_from("<III", slot, 4)
            salt, nonce, wrapped = slot[16:32], slot[32:44], slot[44:92]
            kek = Argon2id(salt=salt, length=32, iterations=t, lanes=p, memory_cost=m).derive(passphrase)
            aad = b"p3ak vault v1 key wrap" + prefix + slot[:44]
            try:
                master = AESGCM(kek).decrypt(nonce, wrapped, aad)
                break
            except Exception:
                continue
        if master is None:
            fail("wrong passphrase or damaged header")
        content_key = AESGCM(hkdf(master, vault_id, b"p3ak vault v1 content"))
        mac_key = hkdf(master, vault_id, b"p3ak vault v1 header mac")
        ids_key = hkdf(master, vault_id, b"p3ak vault v1 ids")

    bound = data[:KEY_SLOTS_END]
    best = None
    for at in COMMIT_SLOTS:
        raw = data[at : at + 256]
        body, tag = raw[:224], raw[224:]
        msg = b"p3ak vault v1 commit slot" + bound + body
        want = hmac.new(mac_key, msg, hashlib.sha256).digest() if encrypted else hashlib.sha256(msg).digest()
        gen, end, count, reserved = struct.unpack_from("<QQQQ", body, 0)
        if gen > 0 and hmac.compare_digest(want, tag) and (best is None or gen > best[0]):
            best = (gen, end, count, body[40:168])
    if best is None:
        fail("no intact commit slot")
    generation, committed_end, record_count, checkpoint = best
    if len(data) < committed_end:
        fail("truncated")

    docs = {}
    order = []
    log_entries = []
    log_seed = None
    pending = None
    pos, index = HEADER_LEN, 0
    while pos < committed_end:
        head = data[pos : pos + 28]
        if head[:4] != b"P3r\x01":
            fail(f"bad record magic at {pos}")
        if hashlib.sha256(b"p3ak record header" + head[:24]).digest()[:4] != head[24:28]:
            fail(f"bad record header check at {pos}")
        body_len, rec_index, counter = struct.unpack_from("<IQQ", head, 4)
        if rec_index != index:
            fail(f"record index {rec_index} at {pos}, expected {index}")
        body = data[pos + 28 : pos + 28 + body_len]
        aad = (b"p3ak-vault-record-v1" + vault_id + struct.pack("<QQIQ", rec_index, pos, body_len, counter))
        assert len(aad) == 64
        if encrypted:
            nonce = b"\0\0\0\0" + struct.pack(">Q", counter)
            try:
                plain = content_key.decrypt(nonce, body, aad)
            except Exception:
                fail(f"record {index} at byte {pos} failed authentication")
        else:
            plain, tag = body[:-16], body[-16:]
            if hashlib.sha256(b"p3ak vault v1 plain record" + aad + plain).digest()[:16] != tag:
                fail(f"record {index} at byte {pos} failed authentication")
        kind, payload = plain[0], plain[1:]
        if kind == 1:
            meta = json.loads(payload)
            pending = {"meta": meta, "content": b""}
            if meta["chunks"] == 0:
                docs[meta["id"]] = pending
                order.append(meta["id"])
                pending = None
        elif kind == 2:
            pending["content"] += payload
            pending["meta"]["chunks"] -= 1
            if pending["meta"]["chunks"] == 0:
                docs[pending["meta"]["id"]] = pending
                order.append(pending["meta"]["id"])
                pending = None
        elif kind == 3:
            docs.pop(json.loads(payload)["id"], None)
        elif kind == 4:
            entry = json.loads(payload)
            prev = hashlib.sha256(b"\x00" + log_entries[-1]).hexdigest() if log_entries else "0" * 64
            if entry["seq"] != len(log_entries) or entry["prev"] != prev:
                fail(f"log entry {len(log_entries)} breaks the chain")
            log_entries.append(payload)
        elif kind == 5:
            log_seed = payload
        elif kind == 6:
            pass  # checkpoints in the log; the header's is checked below
        else:
            fail(f"unknown kind {kind}")
        pos += 28 + body_len
        index += 1
    if index != record_count:
        fail("record count differs from the commit slot")

    leaves = [hashlib.sha256(b"\x00" + e).digest() for e in log_entries]
    log = {"entries": len(leaves), "root": mth(leaves).hex()}
    if any(checkpoint):
        log_id, size = checkpoint[:16], struct.unpack_from("<Q", checkpoint, 16)[0]
        root, time_ms, sig = checkpoint[24:56], struct.unpack_from("<q", checkpoint, 56)[0], checkpoint[64:128]
        if log_id != vault_id or size > len(leaves) or mth(leaves[:size]) != root:
            fail("header checkpoint does not match the log")
        msg = b"p3ak audit checkpoint v1\n" + log_id + struct.pack(">Q", size) + root + struct.pack(">q", time_ms)
        Ed25519PrivateKey.from_private_bytes(log_seed).public_key().verify(sig, msg)
        log["checkpoint_size"] = size

    out = []
    canary = False
    for doc_id in order:
        if doc_id not in docs:
            continue
        meta, content = docs[doc_id]["meta"], docs[doc_id]["content"]
        if len(content) != meta["size"]:
            fail(f"size of {doc_id}")
        if "space" in meta:
            # An internal object (search index, canary): not a document, no fingerprint.
            if meta["space"] == "vault-canary":
                check = hashlib.sha256(b"p3ak vault v1 canary" + content[:32]).digest()
                if len(content) != 64 or content[32:] != check:
                    fail("the canary does not match its check value")
                canary = True
            continue
        fp_msg = b"p3ak vault v1 fingerprint" + content
        fp = hmac.new(ids_key, fp_msg, hashlib.sha256).hexdigest() if encrypted else hashlib.sha256(fp_msg).hexdigest()
        if fp != meta["fingerprint"]:
            fail(f"fingerprint of {doc_id}")
        out.append({
            "id": doc_id,
            "title": meta.get("title"),
            "tags": meta.get("tags", {}),
            "size": meta["size"],
            "sha256": hashlib.sha256(content).hexdigest(),
        })
    print(json.dumps({
        "encryption": "aes-256-gcm" if encrypted else "none",
        "vault_id": vault_id.hex(),
        "generation": generation,
        "log": log,
        "canary": canary,
        "documents": out,
    }))


if __name__ == "__main__":
    main(sys.argv[1])
