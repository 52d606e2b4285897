// A passphrase cannot be formatted with `{:?}`: it would end up in a log.
fn main() {
    let p = p3ak_crypto::Passphrase::new("secret".into());
    let _ = format!("{p:?}");
}
