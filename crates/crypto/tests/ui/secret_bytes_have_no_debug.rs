// Document plaintext cannot be formatted with `{:?}` either.
fn main() {
    let s = p3ak_crypto::SecretBytes::new(b"plaintext".to_vec());
    let _ = format!("{s:?}");
}
