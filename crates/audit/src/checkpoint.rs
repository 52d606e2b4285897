//! Signed checkpoints: {log, size, root, time} under Ed25519.

use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use p3ak_crypto::Key;
use serde::{Deserialize, Serialize};

use crate::entry::{Chain, Tip};
use crate::error::LogError;
use crate::merkle::Hash;

const DOMAIN: &[u8] = b"p3ak audit checkpoint v1\n";

/// The log's signing key. Zeroized on drop (ed25519-dalek's `zeroize`); no `Debug`, no `Clone`.
pub struct Signer(SigningKey);

impl Signer {
    /// A signer from a 32-byte secret seed.
    pub fn from_seed(seed: &Key) -> Self {
        Self(SigningKey::from_bytes(seed.expose()))
    }

    pub fn public_key(&self) -> [u8; 32] {
        self.0.verifying_key().to_bytes()
    }

    /// Signs the state of a log at `tip`.
    pub fn checkpoint(&self, log_id: [u8; 16], tip: &Tip, time_ms: i64) -> Checkpoint {
        let root = tip.root();
        let message = message(&log_id, tip.len(), &root, time_ms);
        let signature = self.0.sign(&message).to_bytes();
        Checkpoint {
            log_id,
            size: tip.len(),
            root,
            time_ms,
            signature,
        }
    }
}

fn message(log_id: &[u8; 16], size: u64, root: &Hash, time_ms: i64) -> Vec<u8> {
    [
        DOMAIN,
        log_id,
        &size.to_be_bytes(),
        root,
        &time_ms.to_be_bytes(),
    ]
    .concat()
}

/// A signed statement that the log `log_id` had `size` entries with Merkle root `root`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    pub log_id: [u8; 16],
    pub size: u64,
    pub root: Hash,
    pub time_ms: i64,
    pub signature: [u8; 64],
}

/// Fixed binary form, for headers: 16 + 8 + 32 + 8 + 64 bytes.
pub const CHECKPOINT_LEN: usize = 128;

impl Checkpoint {
    /// Checks the signature against `public_key`.
    pub fn verify_signature(&self, public_key: &[u8; 32]) -> Result<(), LogError> {
        let bad = |reason: &str| LogError::Checkpoint {
            size: self.size,
            reason: reason.to_owned(),
        };
        let key = VerifyingKey::from_bytes(public_key).map_err(|_| bad("bad public key"))?;
        let signature = Signature::from_bytes(&self.signature);
        key.verify(
            &message(&self.log_id, self.size, &self.root, self.time_ms),
            &signature,
        )
        .map_err(|_| bad("signature does not verify"))
    }

    /// Checks the checkpoint against the log read so far: signature, log id, and that the
    /// first `size` entries have `root`.
    pub fn verify_against(
        &self,
        log_id: &[u8; 16],
        chain: &Chain,
        public_key: &[u8; 32],
    ) -> Result<(), LogError> {
        self.verify_signature(public_key)?;
        self.matches(log_id, chain)
    }

    /// Checks the log id and the root against the log, without the signature (for records
    /// already authenticated by other means).
    pub fn matches(&self, log_id: &[u8; 16], chain: &Chain) -> Result<(), LogError> {
        let bad = |reason: String| LogError::Checkpoint {
            size: self.size,
            reason,
        };
        if &self.log_id != log_id {
            return Err(bad("belongs to another log".into()));
        }
        if self.size > chain.len() {
            return Err(bad(format!(
                "covers {} entries but the log has {}: entries were cut from the end",
                self.size,
                chain.len()
            )));
        }
        let root = if self.size == chain.len() {
            chain.tree().root()
        } else {
            chain
                .tree()
                .root_at(self.size)
                .map_err(|e| bad(e.to_string()))?
        };
        if !p3ak_crypto::constant_time_eq(&root, &self.root) {
            return Err(bad(format!(
                "root differs from the log's first {} entries: the log was changed",
                self.size
            )));
        }
        Ok(())
    }

    /// True when the checkpoint names exactly the log at `tip`.
    pub fn matches_tip(&self, log_id: &[u8; 16], tip: &Tip) -> bool {
        &self.log_id == log_id
            && self.size == tip.len()
            && p3ak_crypto::constant_time_eq(&self.root, &tip.root())
    }

    pub fn to_bytes(&self) -> [u8; CHECKPOINT_LEN] {
        let mut out = [0u8; CHECKPOINT_LEN];
        let parts: [&[u8]; 5] = [
            &self.log_id,
            &self.size.to_le_bytes(),
            &self.root,
            &self.time_ms.to_le_bytes(),
            &self.signature,
        ];
        let mut at = 0;
        for part in parts {
            if let Some(slot) = out.get_mut(at..at + part.len()) {
                slot.copy_from_slice(part);
            }
            at += part.len();
        }
        out
    }

    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let take = |at: usize, n: usize| bytes.get(at..at + n);
        Some(Self {
            log_id: take(0, 16)?.try_into().ok()?,
            size: u64::from_le_bytes(take(16, 8)?.try_into().ok()?),
            root: take(24, 32)?.try_into().ok()?,
            time_ms: i64::from_le_bytes(take(56, 8)?.try_into().ok()?),
            signature: take(64, 64)?.try_into().ok()?,
        })
    }
}

/// The JSON form of a checkpoint (printed by `p3ak audit checkpoint`, kept in the external
/// checkpoint file), with the public key that verifies it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointJson {
    pub log_id: String,
    pub size: u64,
    pub root: String,
    pub time_ms: i64,
    pub signature: String,
    pub public_key: String,
}

impl CheckpointJson {
    pub fn new(cp: &Checkpoint, public_key: &[u8; 32]) -> Self {
        Self {
            log_id: hex::encode(cp.log_id),
            size: cp.size,
            root: hex::encode(cp.root),
            time_ms: cp.time_ms,
            signature: hex::encode(cp.signature),
            public_key: hex::encode(public_key),
        }
    }

    /// Parses the hex fields; `None` when any is malformed.
    pub fn decode(&self) -> Option<(Checkpoint, [u8; 32])> {
        fn arr<const N: usize>(text: &str) -> Option<[u8; N]> {
            let mut out = [0u8; N];
            hex::decode_to_slice(text, &mut out).ok()?;
            Some(out)
        }
        Some((
            Checkpoint {
                log_id: arr(&self.log_id)?,
                size: self.size,
                root: arr(&self.root)?,
                time_ms: self.time_ms,
                signature: arr(&self.signature)?,
            },
            arr(&self.public_key)?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_sign_verify_and_round_trip() {
        let signer = Signer::from_seed(&Key::from_bytes(&mut [9; 32]));
        let mut chain = Chain::new();
        for i in 0..5 {
            let bytes = chain
                .tip()
                .append(i, "test", "me", &serde_json::json!({ "i": i }))
                .unwrap();
            chain.push(&bytes).unwrap();
        }
        let cp = signer.checkpoint([1; 16], &chain.tip(), 1234);
        cp.verify_against(&[1; 16], &chain, &signer.public_key())
            .unwrap();
        assert_eq!(Checkpoint::from_bytes(&cp.to_bytes()), Some(cp));
        let json = CheckpointJson::new(&cp, &signer.public_key());
        assert_eq!(json.decode(), Some((cp, signer.public_key())));

        let mut forged = cp;
        forged.size = 4;
        assert!(forged.verify_signature(&signer.public_key()).is_err());
        let other = Signer::from_seed(&Key::from_bytes(&mut [8; 32]));
        assert!(cp.verify_signature(&other.public_key()).is_err());
        assert!(
            cp.verify_against(&[2; 16], &chain, &signer.public_key())
                .is_err()
        );
    }
}
