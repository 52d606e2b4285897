//! I4: secret types can't be printed or duplicated. Each file in `tests/ui/` must fail to
//! compile.

#[test]
fn invariant_i4_secret_types_have_no_debug_and_no_clone() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
