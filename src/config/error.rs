//! What is wrong with a config: always the key (or file) at fault.

/// A configuration problem, always naming the key (or file) at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {cause}")]
    Read { path: String, cause: std::io::Error },
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax { path: String, message: String },
    #[error("bad override '{text}': {message}")]
    Override { text: String, message: String },
    #[error("config key '{key}': {message}")]
    Key { key: String, message: String },
}

/// A value that does not parse, saying what was expected: the error of the config's small
/// grammars (fields, schedules, start positions), which the caller puts under its key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

impl ParseError {
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

impl From<ParseError> for String {
    fn from(e: ParseError) -> Self {
        e.0
    }
}

impl ConfigError {
    pub(crate) fn key(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Key {
            key: key.into(),
            message: message.into(),
        }
    }
}
