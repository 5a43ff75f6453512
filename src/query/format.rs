//! Printing results: an aligned table for people, CSV or JSON lines for programs.

use std::io::Write;

use deltalake::arrow::array::RecordBatch;
use deltalake::arrow::csv::WriterBuilder;
use deltalake::arrow::json::LineDelimitedWriter;
use deltalake::arrow::util::pretty::pretty_format_batches;

use super::QueryError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Aligned text table.
    Table,
    /// CSV with a header line.
    Csv,
    /// One JSON object per row.
    Json,
}

pub fn write_batches(
    batches: &[RecordBatch],
    format: OutputFormat,
    out: &mut dyn Write,
) -> Result<(), QueryError> {
    let err = |e: &dyn std::fmt::Display| QueryError::Output(e.to_string());
    match format {
        OutputFormat::Table => {
            let text = pretty_format_batches(batches).map_err(|e| err(&e))?;
            writeln!(out, "{text}").map_err(|e| err(&e))?;
            let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
            writeln!(out, "({rows} row{})", if rows == 1 { "" } else { "s" })
                .map_err(|e| err(&e))?;
        }
        OutputFormat::Csv => {
            let mut writer = WriterBuilder::new().with_header(true).build(&mut *out);
            for b in batches {
                writer.write(b).map_err(|e| err(&e))?;
            }
        }
        OutputFormat::Json => {
            let mut writer = LineDelimitedWriter::new(&mut *out);
            for b in batches {
                writer.write(b).map_err(|e| err(&e))?;
            }
            writer.finish().map_err(|e| err(&e))?;
        }
    }
    out.flush().map_err(|e| err(&e))
}
