//! The PyO3 layer (feature `python`, which maturin turns on): convert arguments, release the
//! GIL around the work, and turn errors into Python exceptions.

use std::collections::BTreeMap;
use std::path::PathBuf;

use p3ak_vault::Passphrase;
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::error::{self, Kind, SdkError};
use crate::vault::{SearchArgs, VaultHandle};
use crate::{models, policy};

create_exception!(
    _native,
    P3akError,
    PyException,
    "Any P3AK failure; its message is the CLI's one-line error."
);
create_exception!(
    _native,
    WrongPassphraseError,
    P3akError,
    "The passphrase does not open the vault (or its header is damaged)."
);
create_exception!(
    _native,
    NotFoundError,
    P3akError,
    "No such document, file or model."
);
create_exception!(
    _native,
    InvalidInputError,
    P3akError,
    "An argument was refused: a mode, `k`, a tag, an id, JSON."
);
create_exception!(
    _native,
    LockedError,
    P3akError,
    "Another process holds the vault's writer lock."
);
create_exception!(
    _native,
    DamagedError,
    P3akError,
    "The vault or its search index is damaged; `report` holds a verification's findings."
);
create_exception!(
    _native,
    PolicyError,
    P3akError,
    "The policy file does not parse or validate."
);
create_exception!(
    _native,
    IngestError,
    P3akError,
    "Some files could not be ingested (the others were); `report` holds the whole ingest."
);
create_exception!(_native, ClosedError, P3akError, "The vault was closed.");

/// The Python exception for an error, with its report (JSON text) as `report_json`.
fn to_py_err(py: Python<'_>, error: SdkError) -> PyErr {
    let message = error.line();
    let err = match error.kind() {
        Kind::Other => P3akError::new_err(message),
        Kind::WrongPassphrase => WrongPassphraseError::new_err(message),
        Kind::NotFound => NotFoundError::new_err(message),
        Kind::InvalidInput => InvalidInputError::new_err(message),
        Kind::Locked => LockedError::new_err(message),
        Kind::Damaged => DamagedError::new_err(message),
        Kind::Policy => PolicyError::new_err(message),
        Kind::Ingest => IngestError::new_err(message),
        Kind::Closed => ClosedError::new_err(message),
    };
    let report = error.report().map(str::to_owned);
    if let Err(e) = err.value(py).setattr("report_json", report) {
        return e;
    }
    err
}

/// Runs `work` without the GIL and converts its error.
fn detached<T: Send>(
    py: Python<'_>,
    work: impl FnOnce() -> error::Result<T> + Send,
) -> PyResult<T> {
    py.detach(work).map_err(|e| to_py_err(py, e))
}

/// A passphrase as Python hands it over: `str`, or UTF-8 `bytes`/`bytearray`, which (unlike
/// a `str`) the caller can wipe once the call returns.
#[derive(FromPyObject)]
enum PassphraseArg {
    Text(String),
    Bytes(Vec<u8>),
}

/// The passphrase, moved into a zeroizing buffer at once.
fn secret(passphrase: Option<PassphraseArg>) -> PyResult<Option<Passphrase>> {
    match passphrase {
        None => Ok(None),
        Some(PassphraseArg::Text(text)) => Ok(Some(Passphrase::new(text))),
        Some(PassphraseArg::Bytes(bytes)) => match String::from_utf8(bytes) {
            Ok(text) => Ok(Some(Passphrase::new(text))),
            Err(error) => {
                zeroize::Zeroize::zeroize(&mut error.into_bytes());
                Err(InvalidInputError::new_err("the passphrase is not UTF-8"))
            }
        },
    }
}

/// An unlocked vault. Holds the key derived from the passphrase (zeroized by `close()` or when
/// the object is collected), never the passphrase; its repr shows the path only.
#[pyclass(module = "p3ak._native", frozen)]
struct NativeVault {
    handle: VaultHandle,
}

#[pymethods]
impl NativeVault {
    #[staticmethod]
    #[pyo3(signature = (path, passphrase=None, unencrypted=false))]
    fn create(
        py: Python<'_>,
        path: PathBuf,
        passphrase: Option<PassphraseArg>,
        unencrypted: bool,
    ) -> PyResult<Self> {
        let passphrase = secret(passphrase)?;
        let handle = detached(py, || VaultHandle::create(&path, passphrase, unencrypted))?;
        Ok(Self { handle })
    }

    #[staticmethod]
    #[pyo3(signature = (path, passphrase=None, unencrypted=false))]
    fn open(
        py: Python<'_>,
        path: PathBuf,
        passphrase: Option<PassphraseArg>,
        unencrypted: bool,
    ) -> PyResult<Self> {
        let passphrase = secret(passphrase)?;
        let handle = detached(py, || VaultHandle::open(&path, passphrase, unencrypted))?;
        Ok(Self { handle })
    }

    #[getter]
    fn path(&self) -> PathBuf {
        self.handle.path().to_path_buf()
    }

    #[getter]
    fn closed(&self) -> bool {
        self.handle.is_closed()
    }

    fn close(&self) {
        self.handle.close();
    }

    fn __repr__(&self) -> String {
        format!(
            "<p3ak._native.NativeVault path={:?}{}>",
            self.handle.path().display().to_string(),
            if self.handle.is_closed() {
                " closed"
            } else {
                ""
            }
        )
    }

    #[pyo3(signature = (content, title=None, source=None, tags=BTreeMap::new()))]
    fn put(
        &self,
        py: Python<'_>,
        content: Vec<u8>,
        title: Option<String>,
        source: Option<String>,
        tags: BTreeMap<String, String>,
    ) -> PyResult<String> {
        let content = zeroize::Zeroizing::new(content);
        detached(py, || self.handle.put(&content, title, source, tags))
    }

    #[pyo3(signature = (path, title=None, tags=BTreeMap::new()))]
    fn put_file(
        &self,
        py: Python<'_>,
        path: PathBuf,
        title: Option<String>,
        tags: BTreeMap<String, String>,
    ) -> PyResult<String> {
        detached(py, || self.handle.put_file(&path, title, tags))
    }

    /// `(metadata JSON, content bytes)`.
    fn get<'py>(&self, py: Python<'py>, id: &str) -> PyResult<(String, Bound<'py, PyBytes>)> {
        let (meta, content) = detached(py, || self.handle.get(id))?;
        Ok((meta, PyBytes::new(py, content.expose())))
    }

    #[pyo3(signature = (matching=None, tags=BTreeMap::new()))]
    fn list(
        &self,
        py: Python<'_>,
        matching: Option<String>,
        tags: BTreeMap<String, String>,
    ) -> PyResult<String> {
        detached(py, || self.handle.list(matching.as_deref(), tags))
    }

    fn delete(&self, py: Python<'_>, id: &str) -> PyResult<String> {
        detached(py, || self.handle.delete(id))
    }

    fn info(&self, py: Python<'_>) -> PyResult<String> {
        detached(py, || self.handle.info())
    }

    fn status(&self, py: Python<'_>) -> PyResult<String> {
        detached(py, || self.handle.status())
    }

    #[pyo3(signature = (paths, tags=BTreeMap::new(), embed=true))]
    fn ingest(
        &self,
        py: Python<'_>,
        paths: Vec<PathBuf>,
        tags: BTreeMap<String, String>,
        embed: bool,
    ) -> PyResult<String> {
        detached(py, || self.handle.ingest(&paths, tags, embed))
    }

    /// Chunks embedded; `None` when another process is embedding this vault.
    fn embed(&self, py: Python<'_>) -> PyResult<Option<usize>> {
        detached(py, || self.handle.embed())
    }

    #[pyo3(signature = (query, k=10, mode="hybrid", fusion="convex", tags=BTreeMap::new()))]
    fn search(
        &self,
        py: Python<'_>,
        query: &str,
        k: usize,
        mode: &str,
        fusion: &str,
        tags: BTreeMap<String, String>,
    ) -> PyResult<String> {
        let args = SearchArgs {
            query,
            k,
            mode,
            fusion,
            tags,
        };
        detached(py, || self.handle.search(args))
    }

    #[pyo3(signature = (count=None))]
    fn log(&self, py: Python<'_>, count: Option<u64>) -> PyResult<String> {
        detached(py, || self.handle.log(count))
    }

    fn verify(&self, py: Python<'_>) -> PyResult<String> {
        detached(py, || self.handle.verify())
    }

    /// For the kernel's audit log: `verify` plus the checkpoint file published outside it.
    fn verify_audit_log(&self, py: Python<'_>, checkpoint: PathBuf) -> PyResult<String> {
        detached(py, || self.handle.verify_audit_log(&checkpoint))
    }
}

#[pyfunction]
fn policy_check(py: Python<'_>, path: PathBuf) -> PyResult<String> {
    detached(py, || policy::check(&path))
}

#[pyfunction]
#[pyo3(signature = (path, agent, action, args_json="{}", context_json=None, declared=None, first_party=false, credentials=Vec::new()))]
#[expect(
    clippy::too_many_arguments,
    reason = "mirrors `p3ak policy explain`'s options; the Python wrapper takes keywords"
)]
fn policy_explain(
    py: Python<'_>,
    path: PathBuf,
    agent: &str,
    action: &str,
    args_json: &str,
    context_json: Option<&str>,
    declared: Option<&str>,
    first_party: bool,
    credentials: Vec<String>,
) -> PyResult<String> {
    let args = policy::ExplainArgs {
        agent,
        action,
        args_json,
        context_json,
        declared,
        first_party,
        credentials,
    };
    detached(py, || policy::explain(&path, args))
}

#[pyfunction]
fn models_dir() -> PyResult<PathBuf> {
    Python::attach(|py| models::models_dir().map_err(|e| to_py_err(py, e)))
}

#[pyfunction]
fn model_installed(py: Python<'_>) -> PyResult<Option<PathBuf>> {
    detached(py, models::installed)
}

#[pyfunction]
fn install_model(py: Python<'_>, source: PathBuf) -> PyResult<String> {
    detached(py, || models::install_from(&source))
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<NativeVault>()?;
    m.add("P3akError", py.get_type::<P3akError>())?;
    m.add(
        "WrongPassphraseError",
        py.get_type::<WrongPassphraseError>(),
    )?;
    m.add("NotFoundError", py.get_type::<NotFoundError>())?;
    m.add("InvalidInputError", py.get_type::<InvalidInputError>())?;
    m.add("LockedError", py.get_type::<LockedError>())?;
    m.add("DamagedError", py.get_type::<DamagedError>())?;
    m.add("PolicyError", py.get_type::<PolicyError>())?;
    m.add("IngestError", py.get_type::<IngestError>())?;
    m.add("ClosedError", py.get_type::<ClosedError>())?;
    m.add_function(wrap_pyfunction!(policy_check, m)?)?;
    m.add_function(wrap_pyfunction!(policy_explain, m)?)?;
    m.add_function(wrap_pyfunction!(models_dir, m)?)?;
    m.add_function(wrap_pyfunction!(model_installed, m)?)?;
    m.add_function(wrap_pyfunction!(install_model, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
