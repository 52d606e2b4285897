//! Inclusion and consistency proofs for every size 1..=300, checked by our RFC 9162 verifiers
//! and against `ct-merkle`, an independent implementation.

#![cfg(test)]

use ct_merkle::HashableLeaf;
use ct_merkle::mem_backed_tree::MemoryBackedTree;
use p3ak_audit::{Hash, Tree, leaf_hash, verify_consistency, verify_inclusion};

#[derive(Clone)]
struct Leaf(Vec<u8>);

impl HashableLeaf for Leaf {
    fn hash<H: digest::Update>(&self, hasher: &mut H) {
        hasher.update(&self.0);
    }
}

fn data(i: u64) -> Vec<u8> {
    format!("entry number {i}").into_bytes()
}

fn trees(n: u64) -> (Tree, MemoryBackedTree<sha2::Sha256, Leaf>) {
    let mut ours = Tree::new();
    let mut theirs = MemoryBackedTree::new();
    for i in 0..n {
        ours.push(leaf_hash(&data(i)));
        theirs.push(Leaf(data(i)));
    }
    (ours, theirs)
}

fn flat(proof: &[Hash]) -> Vec<u8> {
    proof.concat()
}

#[test]
fn inclusion_proofs_verify_for_every_leaf_of_every_size_up_to_300() {
    let (full, _) = trees(300);
    for size in 1..=300u64 {
        let root = full.root_at(size).unwrap();
        for index in 0..size {
            let proof = full.inclusion_proof(index, size).unwrap();
            let leaf = full.leaf(index).unwrap();
            verify_inclusion(leaf, index, size, &proof, &root)
                .unwrap_or_else(|e| panic!("size {size} index {index}: {e}"));
        }
    }
}

#[test]
fn roots_and_proofs_match_ct_merkle() {
    for size in 1..=300u64 {
        let (ours, theirs) = trees(size);
        assert_eq!(
            ours.root().as_slice(),
            theirs.root().as_bytes().as_slice(),
            "root of {size}"
        );
        for index in (0..size).step_by(7) {
            let proof = ours.inclusion_proof(index, size).unwrap();
            let their = theirs.prove_inclusion(index as usize);
            assert_eq!(
                flat(&proof),
                their.as_bytes(),
                "inclusion {index} of {size}"
            );
        }
        for old in (1..size).step_by(11) {
            let proof = ours.consistency_proof(old, size).unwrap();
            let their = theirs.prove_consistency((size - old) as usize);
            assert_eq!(
                flat(&proof),
                their.as_bytes(),
                "consistency {old} -> {size}"
            );
        }
    }
}

#[test]
fn consistency_proofs_verify_for_a_sample_of_pairs() {
    let (full, _) = trees(300);
    let mut checked = 0;
    for new in 1..=300u64 {
        let new_root = full.root_at(new).unwrap();
        // Every old size for small trees, a stride of them for larger ones.
        let step = if new <= 64 { 1 } else { 5 };
        for old in (0..=new).step_by(step) {
            let old_root = full.root_at(old).unwrap();
            let proof = full.consistency_proof(old, new).unwrap();
            verify_consistency(old, new, &old_root, &new_root, &proof)
                .unwrap_or_else(|e| panic!("{old} -> {new}: {e}"));
            checked += 1;
        }
    }
    assert!(checked > 5_000);
}

#[test]
fn forged_proofs_are_refused() {
    let (full, _) = trees(100);
    let root = full.root();
    for index in [0u64, 1, 37, 63, 64, 99] {
        let proof = full.inclusion_proof(index, 100).unwrap();
        let leaf = *full.leaf(index).unwrap();
        // Another leaf, another index, a changed sibling, a shortened or lengthened path.
        assert!(verify_inclusion(&leaf_hash(b"forged"), index, 100, &proof, &root).is_err());
        assert!(verify_inclusion(&leaf, (index + 1) % 100, 100, &proof, &root).is_err());
        for i in 0..proof.len() {
            let mut bad = proof.clone();
            bad[i][0] ^= 1;
            assert!(verify_inclusion(&leaf, index, 100, &bad, &root).is_err());
        }
        assert!(verify_inclusion(&leaf, index, 100, &proof[1..], &root).is_err());
        let mut long = proof.clone();
        long.push([0; 32]);
        assert!(verify_inclusion(&leaf, index, 100, &long, &root).is_err());
        assert!(verify_inclusion(&leaf, index, 100, &proof, &full.root_at(99).unwrap()).is_err());
        assert!(verify_inclusion(&leaf, 100, 100, &proof, &root).is_err());
    }
    for (old, new) in [(1u64, 2u64), (3, 7), (32, 100), (50, 99), (64, 65)] {
        let proof = full.consistency_proof(old, new).unwrap();
        let (r1, r2) = (full.root_at(old).unwrap(), full.root_at(new).unwrap());
        assert!(verify_consistency(old, new, &r1, &r2, &proof).is_ok());
        for i in 0..proof.len() {
            let mut bad = proof.clone();
            bad[i][31] ^= 0x80;
            assert!(
                verify_consistency(old, new, &r1, &r2, &bad).is_err(),
                "{old}->{new}"
            );
        }
        // A rewritten history: a different old root with the same proof.
        assert!(verify_consistency(old, new, &leaf_hash(b"other"), &r2, &proof).is_err());
        assert!(verify_consistency(new, old, &r2, &r1, &proof).is_err());
    }
}

#[test]
fn requests_outside_the_tree_are_errors() {
    let (full, _) = trees(10);
    assert!(full.inclusion_proof(10, 10).is_err());
    assert!(full.inclusion_proof(0, 11).is_err());
    assert!(full.consistency_proof(5, 11).is_err());
    assert!(full.consistency_proof(6, 5).is_err());
    assert!(full.root_at(11).is_err());
}
