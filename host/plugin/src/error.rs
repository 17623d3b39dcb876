//! Typed errors of the plugin host and the classification of plugin faults. Errors coming
//! from wasmtime are kept as text (`wasmtime::Error` is not a `std::error::Error`), with
//! the step and the plugin named, so an operator can act on the message alone.

use std::fmt;
use std::io;
use std::path::PathBuf;

use wasmtime::Trap;

/// A step of loading a plugin, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LoadStep {
    /// Reading the file.
    Read,
    /// Parsing it, and turning a core module into a component.
    Decode,
    /// Compiling (or loading the precompiled artifact).
    Compile,
    /// Matching the component's imports and exports against the `plugin` world.
    Link,
    /// Creating an instance.
    Instantiate,
    /// Calling `init` and checking what it returned.
    Init,
}

impl fmt::Display for LoadStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LoadStep::Read => "read",
            LoadStep::Decode => "decode",
            LoadStep::Compile => "compile",
            LoadStep::Link => "link",
            LoadStep::Instantiate => "instantiate",
            LoadStep::Init => "init",
        })
    }
}

/// Why a plugin could not be loaded. The previous version of the plugin, if any, keeps
/// serving.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("plugin {plugin}: read {}: {source}", path.display())]
    Read {
        /// The plugin's name.
        plugin: String,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The file is larger than `RuntimeConfig::max_plugin_bytes`.
    #[error("plugin {plugin}: read {}: {size} bytes, more than the {limit}-byte limit", path.display())]
    TooLarge {
        /// The plugin's name.
        plugin: String,
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The file is not a valid core module or component, or componentization failed
    /// (e.g. a truncated file, or a module without WIT metadata).
    #[error("plugin {plugin}: decode: {reason}")]
    Decode {
        /// The plugin's name.
        plugin: String,
        /// What the decoder said.
        reason: String,
    },
    /// Compilation failed.
    #[error("plugin {plugin}: compile: {reason}")]
    Compile {
        /// The plugin's name.
        plugin: String,
        /// What the compiler said.
        reason: String,
    },
    /// The component is not of world `mgre:policy/plugin@0.2.0`: it imports something the
    /// host does not provide (WASI, another ABI version) or lacks an export.
    #[error("plugin {plugin}: link: not a mgre:policy/plugin@0.2.0 component: {reason}")]
    Link {
        /// The plugin's name.
        plugin: String,
        /// The mismatch.
        reason: String,
    },
    /// Instantiation failed (e.g. its initial memory exceeds the cap).
    #[error("plugin {plugin}: instantiate: {reason}")]
    Instantiate {
        /// The plugin's name.
        plugin: String,
        /// The cause.
        reason: String,
    },
    /// `init` returned an error.
    #[error("plugin {plugin}: init refused: {message}")]
    InitRefused {
        /// The plugin's name.
        plugin: String,
        /// The plugin's message.
        message: String,
    },
    /// `init` trapped, ran past its deadline or hit the memory cap.
    #[error("plugin {plugin}: init failed ({kind}): {reason}")]
    InitFault {
        /// The plugin's name.
        plugin: String,
        /// What went wrong.
        kind: FaultKind,
        /// Details.
        reason: String,
    },
    /// `init` returned a `plugin-info` the host cannot accept.
    #[error("plugin {plugin}: init: invalid plugin-info: {reason}")]
    InvalidInfo {
        /// The plugin's name.
        plugin: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Two specs use the same name; the later one is not loaded.
    #[error("plugin {plugin}: the name is used by an earlier plugin")]
    DuplicateName {
        /// The plugin's name.
        plugin: String,
    },
}

impl LoadError {
    /// The plugin's name.
    pub fn plugin(&self) -> &str {
        match self {
            LoadError::Read { plugin, .. }
            | LoadError::TooLarge { plugin, .. }
            | LoadError::Decode { plugin, .. }
            | LoadError::Compile { plugin, .. }
            | LoadError::Link { plugin, .. }
            | LoadError::Instantiate { plugin, .. }
            | LoadError::InitRefused { plugin, .. }
            | LoadError::InitFault { plugin, .. }
            | LoadError::InvalidInfo { plugin, .. }
            | LoadError::DuplicateName { plugin } => plugin,
        }
    }

    /// The step that failed.
    pub fn step(&self) -> LoadStep {
        match self {
            LoadError::Read { .. }
            | LoadError::TooLarge { .. }
            | LoadError::DuplicateName { .. } => LoadStep::Read,
            LoadError::Decode { .. } => LoadStep::Decode,
            LoadError::Compile { .. } => LoadStep::Compile,
            LoadError::Link { .. } => LoadStep::Link,
            LoadError::Instantiate { .. } => LoadStep::Instantiate,
            LoadError::InitRefused { .. }
            | LoadError::InitFault { .. }
            | LoadError::InvalidInfo { .. } => LoadStep::Init,
        }
    }
}

/// Why the runtime could not start.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// wasmtime rejected the engine configuration.
    #[error("wasm engine: {0}")]
    Engine(String),
    /// The artifact cache directory cannot be created or is not private to this user.
    #[error("plugin cache {}: {reason}", path.display())]
    CacheDir {
        /// The directory.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The epoch ticker thread could not be started.
    #[error("epoch ticker thread: {0}")]
    Ticker(io::Error),
}

/// Why file watching could not start.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The watcher could not be created or a directory could not be watched.
    #[error("watch {}: {source}", path.display())]
    Notify {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: notify::Error,
    },
    /// The debounce thread could not be started.
    #[error("watch debounce thread: {0}")]
    Thread(io::Error),
}

/// What went wrong in one plugin call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FaultKind {
    /// A trap other than the two below (unreachable, out-of-bounds access, stack overflow,
    /// a guest panic), or any other error raised while the plugin ran.
    Trap,
    /// The call ran past its CPU deadline (`Trap::Interrupt`).
    Deadline,
    /// The plugin hit its memory cap (a `memory.grow` was refused during the call).
    MemoryLimit,
    /// The call put verdicts of the wrong total length.
    BadOutput,
    /// A fresh instance could not be created or initialised.
    Instantiate,
}

impl FaultKind {
    /// Classifies an error returned by a call into wasm.
    pub(crate) fn of(err: &wasmtime::Error, memory_denied: bool) -> FaultKind {
        match err.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => FaultKind::Deadline,
            _ if memory_denied => FaultKind::MemoryLimit,
            _ => FaultKind::Trap,
        }
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FaultKind::Trap => "trap",
            FaultKind::Deadline => "deadline exceeded",
            FaultKind::MemoryLimit => "memory limit",
            FaultKind::BadOutput => "malformed verdicts",
            FaultKind::Instantiate => "instantiation failed",
        })
    }
}

/// A one-line description of an error raised while wasm ran: the trap's own message if it
/// is one (`Display` of the full error is only "error while executing at wasm backtrace"),
/// else the root cause.
pub(crate) fn describe(err: &wasmtime::Error) -> String {
    match err.downcast_ref::<Trap>() {
        Some(trap) => trap.to_string(),
        None => err.root_cause().to_string(),
    }
}
