//! Logging into the host's log (tagged by the host with the context name and trace id).

pub use crate::bindings::ctxhost::platform::log::Level;
use crate::bindings::ctxhost::platform::log::log;

/// Log `message` at `level`.
pub fn at(level: Level, message: &str) {
    log(level, message);
}

/// Log at debug level.
pub fn debug(message: &str) {
    log(Level::Debug, message);
}

/// Log at info level.
pub fn info(message: &str) {
    log(Level::Info, message);
}

/// Log at warn level.
pub fn warn(message: &str) {
    log(Level::Warn, message);
}

/// Log at error level.
pub fn error(message: &str) {
    log(Level::Error, message);
}
