//! `creditbook revenue export`: the journal of a date range and the roll-forward and waterfall of
//! its months, as CSV files, written page by page (bounded memory) to temporary files that are
//! renamed into place only once complete.

use crate::domain::revrec::Period;
use crate::error::{Error, Result};
use crate::service::revenue::{Format, date_range, journal_stream, rollforward_csv, waterfall_csv};
use crate::store::Store;
use futures_util::StreamExt;
use std::io::Write;
use std::path::{Path, PathBuf};

/// What an export wrote.
#[derive(Debug, Clone)]
pub struct Exported {
    pub journal: PathBuf,
    pub rollforward: PathBuf,
    pub waterfall: PathBuf,
    pub journal_lines: u64,
}

/// `out` itself holds the journal; the roll-forward and the waterfall go beside it, named
/// `<stem>.rollforward.csv` and `<stem>.waterfall.csv`.
pub fn sibling(out: &Path, report: &str) -> PathBuf {
    let stem = out
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "revenue".into());
    out.with_file_name(format!("{stem}.{report}.csv"))
}

fn io(path: &Path, e: std::io::Error) -> Error {
    Error::invalid("out", format!("{}: {e}", path.display()))
}

/// Writes the three reports for the dates `from` to `to` (inclusive, `YYYY-MM-DD`).
/// `progress(lines_written, lines_total)` is called after every page.
pub async fn export(
    store: &Store,
    from: &str,
    to: &str,
    out: &Path,
    mut progress: impl FnMut(u64, u64),
) -> Result<Exported> {
    let (start, end) = date_range(from, to)?;
    let months = (
        Period::of(start),
        Period::of(end - chrono::Duration::microseconds(1)),
    );
    let total = store.journal_count(start, end).await?;
    let partial = out.with_extension("partial");
    let file = std::fs::File::create(&partial).map_err(|e| io(&partial, e))?;
    let mut writer = std::io::BufWriter::new(file);
    let mut stream = std::pin::pin!(journal_stream(store.clone(), start, end, Format::Csv));
    let mut written: u64 = 0;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        // Every chunk after the header is a page of whole lines.
        written += chunk.matches('\n').count() as u64;
        writer
            .write_all(chunk.as_bytes())
            .map_err(|e| io(&partial, e))?;
        progress(written.saturating_sub(1), total);
    }
    writer.flush().map_err(|e| io(&partial, e))?;
    drop(writer);
    let rollforward = store.rollforward(months.0, months.1).await?;
    let waterfall = store.waterfall(months.0, months.1).await?;
    let paths = (sibling(out, "rollforward"), sibling(out, "waterfall"));
    std::fs::write(&paths.0, rollforward_csv(&rollforward)).map_err(|e| io(&paths.0, e))?;
    std::fs::write(&paths.1, waterfall_csv(&waterfall, months.0, months.1))
        .map_err(|e| io(&paths.1, e))?;
    std::fs::rename(&partial, out).map_err(|e| io(out, e))?;
    Ok(Exported {
        journal: out.to_owned(),
        rollforward: paths.0,
        waterfall: paths.1,
        journal_lines: written.saturating_sub(1),
    })
}

/// A one-line progress bar for a terminal: `[#####-----]  50%  1000/2000 lines`.
pub fn progress_bar(done: u64, total: u64) -> String {
    const WIDTH: u64 = 30;
    let filled = (done * WIDTH)
        .checked_div(total)
        .unwrap_or(WIDTH)
        .min(WIDTH);
    let percent = (done * 100).checked_div(total).unwrap_or(100).min(100);
    format!(
        "[{}{}] {percent:>3}%  {done}/{total} lines",
        "#".repeat(filled as usize),
        "-".repeat((WIDTH - filled) as usize)
    )
}
