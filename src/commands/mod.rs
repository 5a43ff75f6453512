//! The glue behind each CLI command.

mod check;
mod lake;
mod manual;
mod produce;
mod summary;
mod sync;

pub use check::{check, CheckLine};
pub use lake::{checkpoint, compact, history, query, schema, vacuum};
pub use manual::{completions, man_pages};
pub use produce::produce;
pub use summary::print_summary;
pub use sync::sync;
