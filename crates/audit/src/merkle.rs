//! The Merkle tree of RFC 9162 §2.1: leaf = SHA-256(0x00 ‖ data), node = SHA-256(0x01 ‖ l ‖ r),
//! with inclusion and consistency proofs and the RFC's verification algorithms.

use serde::{Deserialize, Serialize};

use crate::error::ProofError;

/// A SHA-256 output.
pub type Hash = [u8; 32];

/// The hash of a leaf's data.
pub fn leaf_hash(data: &[u8]) -> Hash {
    p3ak_crypto::sha256(&[&[0x00], data])
}

/// The hash of an interior node.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    p3ak_crypto::sha256(&[&[0x01], left, right])
}

/// The root of the empty tree: SHA-256 of the empty string.
pub fn empty_root() -> Hash {
    p3ak_crypto::sha256(&[])
}

/// Largest power of two strictly below `n` (n ≥ 2).
fn split(n: u64) -> u64 {
    let mut k = 1u64;
    while k << 1 < n {
        k <<= 1;
    }
    k
}

/// The right edge of a tree: the roots of its perfect subtrees, tallest first. Enough to append
/// and to compute the root in O(log n), without the leaves.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier {
    len: u64,
    nodes: Vec<(u32, Hash)>,
}

impl Frontier {
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn push(&mut self, leaf: Hash) {
        self.len += 1;
        let mut height = 0u32;
        let mut hash = leaf;
        while let Some(&(h, left)) = self.nodes.last() {
            if h != height {
                break;
            }
            self.nodes.pop();
            hash = node_hash(&left, &hash);
            height += 1;
        }
        self.nodes.push((height, hash));
    }

    pub fn root(&self) -> Hash {
        let mut iter = self.nodes.iter().rev();
        let Some(&(_, mut acc)) = iter.next() else {
            return empty_root();
        };
        for (_, left) in iter {
            acc = node_hash(left, &acc);
        }
        acc
    }
}

/// An append-only tree over leaf hashes.
#[derive(Debug, Clone, Default)]
pub struct Tree {
    leaves: Vec<Hash>,
    frontier: Frontier,
}

impl Tree {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> u64 {
        self.leaves.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.leaves.is_empty()
    }

    pub fn leaf(&self, index: u64) -> Option<&Hash> {
        self.leaves.get(usize::try_from(index).ok()?)
    }

    /// Appends a leaf hash.
    pub fn push(&mut self, leaf: Hash) {
        self.leaves.push(leaf);
        self.frontier.push(leaf);
    }

    /// The root of the whole tree.
    pub fn root(&self) -> Hash {
        self.frontier.root()
    }

    pub fn frontier(&self) -> &Frontier {
        &self.frontier
    }

    /// The root of the first `size` leaves (MTH(D[0:size])).
    pub fn root_at(&self, size: u64) -> Result<Hash, ProofError> {
        if size > self.len() {
            return Err(ProofError::OutOfRange {
                what: "tree size",
                value: size,
                limit: self.len(),
            });
        }
        Ok(if size == 0 {
            empty_root()
        } else {
            self.subtree(0, size)
        })
    }

    /// MTH of leaves[start..start+n], n ≥ 1 and in range (checked by callers).
    fn subtree(&self, start: u64, n: u64) -> Hash {
        if n == 1 {
            return self.leaf(start).copied().unwrap_or_default();
        }
        let k = split(n);
        node_hash(&self.subtree(start, k), &self.subtree(start + k, n - k))
    }

    /// PATH(index, D[0:size]) of RFC 9162 §2.1.3.1.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, ProofError> {
        if size > self.len() || index >= size {
            return Err(ProofError::OutOfRange {
                what: "leaf index",
                value: index,
                limit: size.min(self.len()),
            });
        }
        let mut path = Vec::new();
        self.path(index, 0, size, &mut path);
        Ok(path)
    }

    fn path(&self, m: u64, start: u64, n: u64, out: &mut Vec<Hash>) {
        if n <= 1 {
            return;
        }
        let k = split(n);
        if m < k {
            self.path(m, start, k, out);
            out.push(self.subtree(start + k, n - k));
        } else {
            self.path(m - k, start + k, n - k, out);
            out.push(self.subtree(start, k));
        }
    }

    /// PROOF(old, D[0:new]) of RFC 9162 §2.1.4.1.
    pub fn consistency_proof(&self, old: u64, new: u64) -> Result<Vec<Hash>, ProofError> {
        if new > self.len() || old > new {
            return Err(ProofError::OutOfRange {
                what: "old tree size",
                value: old,
                limit: new.min(self.len()),
            });
        }
        let mut proof = Vec::new();
        if old > 0 && old < new {
            self.subproof(old, 0, new, true, &mut proof);
        }
        Ok(proof)
    }

    fn subproof(&self, m: u64, start: u64, n: u64, complete: bool, out: &mut Vec<Hash>) {
        if m == n {
            if !complete {
                out.push(self.subtree(start, n));
            }
            return;
        }
        let k = split(n);
        if m <= k {
            self.subproof(m, start, k, complete, out);
            out.push(self.subtree(start + k, n - k));
        } else {
            self.subproof(m - k, start + k, n - k, false, out);
            out.push(self.subtree(start, k));
        }
    }
}

/// Verifies an inclusion proof (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(
    leaf: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::Invalid("leaf index is not below the tree size"));
    }
    let (mut fnode, mut snode) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if snode == 0 {
            return Err(ProofError::Invalid("proof is longer than the tree is deep"));
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(ProofError::Invalid(
            "proof is shorter than the tree is deep",
        ));
    }
    if !p3ak_crypto::constant_time_eq(&r, root) {
        return Err(ProofError::Invalid("proof does not lead to the root"));
    }
    Ok(())
}

/// Verifies a consistency proof between two tree sizes (RFC 9162 §2.1.4.2).
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    if old_size > new_size {
        return Err(ProofError::Invalid("old tree is larger than the new one"));
    }
    if old_size == new_size {
        return if proof.is_empty() && p3ak_crypto::constant_time_eq(old_root, new_root) {
            Ok(())
        } else {
            Err(ProofError::Invalid(
                "equal sizes need equal roots and an empty proof",
            ))
        };
    }
    if old_size == 0 {
        // Every tree extends the empty one.
        return if proof.is_empty() {
            Ok(())
        } else {
            Err(ProofError::Invalid("a proof from the empty tree is empty"))
        };
    }
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if old_size.is_power_of_two() {
        path.push(*old_root);
    }
    path.extend_from_slice(proof);
    let (mut fnode, mut snode) = (old_size - 1, new_size - 1);
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    let Some((first, rest)) = path.split_first() else {
        return Err(ProofError::Invalid("empty consistency proof"));
    };
    let (mut fr, mut sr) = (*first, *first);
    for c in rest {
        if snode == 0 {
            return Err(ProofError::Invalid("proof is longer than the tree is deep"));
        }
        if fnode & 1 == 1 || fnode == snode {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(ProofError::Invalid(
            "proof is shorter than the tree is deep",
        ));
    }
    if !p3ak_crypto::constant_time_eq(&fr, old_root)
        || !p3ak_crypto::constant_time_eq(&sr, new_root)
    {
        return Err(ProofError::Invalid("proof does not connect the two roots"));
    }
    Ok(())
}

/// A proof as printed and exchanged: sizes, indexes and hex hashes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HexProof(pub Vec<String>);

impl HexProof {
    pub fn from_hashes(hashes: &[Hash]) -> Self {
        Self(hashes.iter().map(hex::encode).collect())
    }

    pub fn to_hashes(&self) -> Result<Vec<Hash>, ProofError> {
        self.0
            .iter()
            .map(|h| {
                let mut out = [0u8; 32];
                hex::decode_to_slice(h, &mut out)
                    .map_err(|_| ProofError::Invalid("proof hash is not 64 hex digits"))?;
                Ok(out)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(n: u64) -> Tree {
        let mut t = Tree::new();
        for i in 0..n {
            t.push(leaf_hash(&i.to_le_bytes()));
        }
        t
    }

    #[test]
    fn frontier_root_matches_the_recursive_definition() {
        for n in 0..70 {
            let t = tree(n);
            assert_eq!(t.root(), t.root_at(n).unwrap(), "size {n}");
        }
    }

    #[test]
    fn empty_tree_root_is_sha256_of_nothing() {
        assert_eq!(
            hex::encode(Tree::new().root()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
