//! The CSV files measured rows go to: appended and flushed one by one while a run
//! measures, or rewritten whole when a partial run merges its rows.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
};

use tracing::info;

use crate::{BenchError, results::Row};

/// CSV sink: appends and flushes each row.
pub(crate) struct Sink {
    pub(crate) file: std::fs::File,
    /// The file written.
    pub(crate) path: PathBuf,
}

impl Sink {
    /// Creates the directory `out` and in it the CSV file `name`, header written.
    pub(crate) fn create(out: &Path, name: &str) -> Result<Sink, BenchError> {
        std::fs::create_dir_all(out)
            .map_err(|e| BenchError::io(format!("mkdir {}", out.display()), e))?;
        let path = out.join(name);
        let mut sink = Sink {
            file: std::fs::File::create(&path)
                .map_err(|e| BenchError::io(format!("create {}", path.display()), e))?,
            path,
        };
        writeln!(sink.file, "{}", Row::HEADER)
            .map_err(|e| BenchError::io(format!("write {}", sink.path.display()), e))?;
        Ok(sink)
    }

    /// Appends `row` (flushed: a run cut short keeps what it measured).
    pub(crate) fn push(&mut self, row: Row) -> Result<(), BenchError> {
        info!(
            n = row.n,
            datapath = %row.datapath,
            metric = %row.metric,
            target = %row.target,
            run = row.run,
            value = row.value,
            "measured"
        );
        writeln!(self.file, "{}", row.to_csv())
            .and_then(|()| self.file.flush())
            .map_err(|e| BenchError::io(format!("write {}", self.path.display()), e))
    }
}

/// Writes `rows` as the CSV file `path` (header first), replacing it.
pub(crate) fn write_csv(path: &Path, rows: &[Row]) -> Result<(), BenchError> {
    let mut text = format!("{}\n", Row::HEADER);
    for r in rows {
        text.push_str(&r.to_csv());
        text.push('\n');
    }
    std::fs::write(path, text).map_err(|e| BenchError::io(format!("write {}", path.display()), e))
}
