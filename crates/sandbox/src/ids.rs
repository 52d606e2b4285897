//! Unix ids for plugins, from a configured range, without editing `/etc/passwd`.
//!
//! Each identity (a plugin's name, or the name plugins share) gets `first + hash(name) mod
//! size`, probing upwards on a collision, in name order. The same names give the same ids on
//! every start, so files a plugin created keep their owner. Ids that `/etc/passwd` or
//! `/etc/group` already name are skipped: a plugin never becomes an existing user.

use std::collections::{BTreeMap, BTreeSet};

use crate::SandboxError;

/// Allocates one id (used as both uid and gid) per identity in `first..=last`.
///
/// # Errors
///
/// [`SandboxError::Ids`] when the range is empty, includes 0, or is too small.
pub fn allocate_ids<'a>(
    identities: impl IntoIterator<Item = &'a str>,
    first: u32,
    last: u32,
) -> Result<BTreeMap<String, u32>, SandboxError> {
    let taken = system_ids();
    allocate_with(identities, first, last, &taken)
}

fn allocate_with<'a>(
    identities: impl IntoIterator<Item = &'a str>,
    first: u32,
    last: u32,
    taken: &BTreeSet<u32>,
) -> Result<BTreeMap<String, u32>, SandboxError> {
    let err = |message: &str| SandboxError::Ids {
        first,
        last,
        message: message.to_owned(),
    };
    if first == 0 || last < first {
        return Err(err("must be a non-empty range above 0"));
    }
    let size = u64::from(last - first) + 1;
    let names: BTreeSet<&str> = identities.into_iter().collect();
    let mut used: BTreeSet<u32> = BTreeSet::new();
    let mut out = BTreeMap::new();
    for name in names {
        let start = fnv1a(name.as_bytes()) % size;
        let mut found = None;
        for step in 0..size {
            let offset = u32::try_from((start + step) % size).map_err(|_| err("too large"))?;
            let id = first + offset;
            if !used.contains(&id) && !taken.contains(&id) {
                found = Some(id);
                break;
            }
        }
        let id = found.ok_or_else(|| err("has no free id left"))?;
        used.insert(id);
        out.insert(name.to_owned(), id);
    }
    Ok(out)
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// Uids and gids named in `/etc/passwd` and `/etc/group`.
fn system_ids() -> BTreeSet<u32> {
    let mut ids = BTreeSet::new();
    for file in ["/etc/passwd", "/etc/group"] {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for line in text.lines() {
            let mut fields = line.split(':');
            if let Some(id) = fields.nth(2).and_then(|f| f.parse().ok()) {
                ids.insert(id);
            }
        }
    }
    ids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_distinct_and_skip_taken_ones() {
        let names = ["files", "http", "vault", "shell", "model"];
        let a = allocate_with(names, 61000, 61999, &BTreeSet::new()).unwrap();
        let b = allocate_with(names.iter().rev().copied(), 61000, 61999, &BTreeSet::new()).unwrap();
        assert_eq!(a, b);
        let distinct: BTreeSet<_> = a.values().collect();
        assert_eq!(distinct.len(), names.len());
        assert!(a.values().all(|id| (61000..=61999).contains(id)));
        let taken: BTreeSet<u32> = [a["files"]].into();
        let c = allocate_with(names, 61000, 61999, &taken).unwrap();
        assert_ne!(c["files"], a["files"]);
        // A full range is an error, not a loop.
        assert!(allocate_with(names, 61000, 61002, &BTreeSet::new()).is_err());
        assert!(allocate_with(names, 0, 10, &BTreeSet::new()).is_err());
    }
}
