//! The keys of an open vault and the sealing of records and commit slots.

use p3ak_crypto::{AeadKey, Key, MacKey, Passphrase, TAG_LEN, derive_subkey};

use crate::error::{Result, VaultError};
use crate::format::{self, KeySlot, RecordHeader};

/// HKDF info strings: one subkey per purpose, so no key ever serves two.
const INFO_CONTENT: &[u8] = b"p3ak vault v1 content";
const INFO_HEADER_MAC: &[u8] = b"p3ak vault v1 header mac";
const INFO_IDS: &[u8] = b"p3ak vault v1 ids";
const WRAP_AAD_LABEL: &[u8] = b"p3ak vault v1 key wrap";

/// How records are protected.
pub(crate) enum Sealer {
    Encrypted(Box<Keys>),
    /// `--no-encrypt`: SHA-256 integrity tags, no secrecy.
    Plain,
}

pub(crate) struct Keys {
    content: AeadKey,
    header_mac: MacKey,
    ids: MacKey,
    /// The passphrase-derived key-encryption key, kept so `compact` can wrap a fresh master key
    /// without asking for the passphrase again.
    kek: Key,
}

impl Keys {
    pub(crate) fn derive(master: &Key, vault_id: &[u8; 16], kek: Key) -> Result<Self> {
        Ok(Self {
            content: AeadKey::new(&derive_subkey(master, vault_id, INFO_CONTENT)?)?,
            header_mac: MacKey::new(&derive_subkey(master, vault_id, INFO_HEADER_MAC)?),
            ids: MacKey::new(&derive_subkey(master, vault_id, INFO_IDS)?),
            kek,
        })
    }

    pub(crate) fn kek(&self) -> &Key {
        &self.kek
    }
}

fn wrap_aad(prefix: &[u8], slot: &KeySlot) -> Vec<u8> {
    [WRAP_AAD_LABEL, prefix, &slot.aad_part()].concat()
}

/// Wraps `master` under `kek` into a passphrase key slot (fresh random nonce).
pub(crate) fn wrap_master(
    prefix: &[u8],
    master: &Key,
    kek: &Key,
    kdf: p3ak_crypto::KdfParams,
    salt: [u8; 16],
) -> Result<KeySlot> {
    let mut slot = KeySlot {
        kdf,
        salt,
        nonce: p3ak_crypto::random_array()?,
        wrapped: [0; format::WRAPPED_KEY_LEN],
    };
    let mut buf = zeroize::Zeroizing::new(master.expose().to_vec());
    AeadKey::new(kek)?.seal_in_place(slot.nonce, &wrap_aad(prefix, &slot), &mut buf)?;
    slot.wrapped = buf
        .as_slice()
        .try_into()
        .map_err(|_| p3ak_crypto::CryptoError::Length {
            what: "wrapped key",
            expected: format::WRAPPED_KEY_LEN,
            actual: buf.len(),
        })?;
    Ok(slot)
}

/// Derives the key-encryption key for a slot from a passphrase (Argon2id; the slow step).
pub(crate) fn derive_kek(passphrase: &Passphrase, slot: &KeySlot) -> Result<Key> {
    slot.kdf
        .validate()
        .map_err(|e| VaultError::HeaderDamaged(e.to_string()))?;
    Ok(p3ak_crypto::derive_key_from_passphrase(
        passphrase, &slot.salt, slot.kdf,
    )?)
}

/// Unwraps the master key of `slot` with `kek`; `None` when the key does not fit.
pub(crate) fn unwrap_slot(
    prefix: &[u8],
    vault_id: &[u8; 16],
    slot: &KeySlot,
    kek: Key,
) -> Result<Option<Keys>> {
    let mut buf = zeroize::Zeroizing::new(slot.wrapped.to_vec());
    if AeadKey::new(&kek)?
        .open_in_place(slot.nonce, &wrap_aad(prefix, slot), &mut buf)
        .is_err()
    {
        return Ok(None);
    }
    let master = Key::from_slice(&buf)?;
    Ok(Some(Keys::derive(&master, vault_id, kek)?))
}

impl Sealer {
    /// Protects `plaintext` in place (it becomes the record body).
    pub(crate) fn seal(
        &self,
        vault_id: &[u8; 16],
        offset: u64,
        header: &RecordHeader,
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        let aad = format::record_aad(vault_id, offset, header);
        match self {
            Self::Encrypted(keys) => {
                keys.content
                    .seal_in_place(format::record_nonce(header.counter), &aad, buf)?;
            }
            Self::Plain => {
                let tag = plain_tag(&aad, buf);
                buf.extend_from_slice(&tag);
            }
        }
        Ok(())
    }

    /// Authenticates and decrypts a record body in place; false when it fails.
    pub(crate) fn open(
        &self,
        vault_id: &[u8; 16],
        offset: u64,
        header: &RecordHeader,
        buf: &mut Vec<u8>,
    ) -> bool {
        let aad = format::record_aad(vault_id, offset, header);
        match self {
            Self::Encrypted(keys) => keys
                .content
                .open_in_place(format::record_nonce(header.counter), &aad, buf)
                .is_ok(),
            Self::Plain => {
                let Some(split) = buf.len().checked_sub(TAG_LEN) else {
                    return false;
                };
                let (body, tag) = buf.split_at(split);
                let ok = p3ak_crypto::constant_time_eq(&plain_tag(&aad, body), tag);
                buf.truncate(split);
                ok
            }
        }
    }

    /// MAC of a commit slot, bound to the header's prefix and key slots.
    pub(crate) fn commit_mac(&self, bound: &[u8], body: &[u8]) -> [u8; 32] {
        let parts: [&[u8]; 3] = [b"p3ak vault v1 commit slot", bound, body];
        match self {
            Self::Encrypted(keys) => keys.header_mac.sign(&parts),
            Self::Plain => p3ak_crypto::sha256(&parts),
        }
    }

    /// Keyed fingerprint of content (plain SHA-256 in an unencrypted vault).
    pub(crate) fn fingerprint(&self, content: &[u8]) -> String {
        let parts: [&[u8]; 2] = [b"p3ak vault v1 fingerprint", content];
        hex::encode(match self {
            Self::Encrypted(keys) => keys.ids.sign(&parts),
            Self::Plain => p3ak_crypto::sha256(&parts),
        })
    }
}

fn plain_tag(aad: &[u8], body: &[u8]) -> [u8; TAG_LEN] {
    let digest = p3ak_crypto::sha256(&[b"p3ak vault v1 plain record", aad, body]);
    format::take(&digest, 0).unwrap_or_default()
}
