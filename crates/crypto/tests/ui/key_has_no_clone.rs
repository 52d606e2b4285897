// A key cannot be cloned: copies would outlive the zeroizing original.
fn main() {
    let k = p3ak_crypto::Key::generate().unwrap();
    let _copy = k.clone();
}
