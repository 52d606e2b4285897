//! I1: an `Authorized` can only come from the enforcer or the approval gate. Each file in
//! `tests/ui/` tries to make one some other way and must fail to compile.

#[test]
fn invariant_i1_authorized_cannot_be_built_outside_the_enforcer() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
