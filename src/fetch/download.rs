//! Resumable HTTP downloads with a progress bar and digest check.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use indicatif::{ProgressBar, ProgressStyle};

use super::FileSpec;
use super::install::sha256_file;

/// The HTTP client: TLS by rustls with the webpki roots (no system library), statuses handled here
/// (a refused range is not an error), no automatic decompression (the digests are of the bytes as
/// served). Connecting and waiting for the response headers are bounded; the body is not, since a
/// large file on a slow link may take long, and an interrupted body resumes anyway.
pub(crate) fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(Duration::from_secs(60)))
        .user_agent(concat!(
            "fedsim/",
            env!("CARGO_PKG_VERSION"),
            " (data fetch)"
        ))
        .build()
        .new_agent()
}

/// Downloads `file` to `file.part()` from the first of its addresses that works, resuming a partial
/// download, and checks its size and SHA-256. A download whose digest does not match is removed.
/// The error of a failed download names every address tried and why each failed.
pub(crate) fn download(agent: &ureq::Agent, file: &FileSpec) -> Result<()> {
    let part = file.part();
    if let Some(dir) = part.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut failures = Vec::new();
    let mut done = false;
    for url in &file.urls {
        match fetch_url(agent, url, file) {
            Ok(()) => {
                done = true;
                break;
            }
            Err(e) => {
                eprintln!("{}: {url}: {e:#}", file.file_name);
                failures.push(format!("{url}: {e:#}"));
            }
        }
    }
    if !done {
        bail!(
            "could not download {}:\n  {}",
            file.file_name,
            failures.join("\n  ")
        );
    }
    let got = sha256_file(&part)?;
    if got != file.sha256 {
        std::fs::remove_file(&part).with_context(|| format!("removing {}", part.display()))?;
        bail!(
            "{}: SHA-256 mismatch: expected {}, got {got}; the download was removed (a damaged \
             transfer or a changed file on the server: run the command again, and if it persists \
             get the file elsewhere)",
            file.file_name,
            file.sha256
        );
    }
    Ok(())
}

/// The start offset a `Content-Range: bytes START-END/TOTAL` header announces.
fn range_start(header: &str) -> Option<u64> {
    header
        .trim()
        .strip_prefix("bytes ")?
        .split('-')
        .next()?
        .trim()
        .parse()
        .ok()
}

/// One attempt at `url`: continues `file.part()` where it ends when the server honours a range
/// request (206 from that offset), else starts over (200).
fn fetch_url(agent: &ureq::Agent, url: &str, file: &FileSpec) -> Result<()> {
    let part = file.part();
    let mut have = std::fs::metadata(&part).map_or(0, |m| m.len());
    if let Some(size) = file.size {
        if have == size {
            // Complete already (interrupted before it was checked): the digest check decides.
            return Ok(());
        }
        if have > size {
            have = 0;
        }
    }
    let mut request = agent.get(url);
    if have > 0 {
        request = request.header("Range", format!("bytes={have}-"));
    }
    let response = request.call().map_err(|e| anyhow!("{e}"))?;
    let status = response.status().as_u16();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let resumed = match status {
        206 if have > 0 && header("content-range").and_then(|h| range_start(&h)) == Some(have) => {
            true
        }
        206 => bail!("the server answered a range this download did not ask for"),
        200 => false,
        416 if have > 0 => {
            // Nothing left past the partial file: it is complete (its size was not known), or it
            // does not fit what the server holds, and then the download starts over.
            if sha256_file(&part)? == file.sha256 {
                return Ok(());
            }
            drop(response);
            std::fs::remove_file(&part).with_context(|| format!("removing {}", part.display()))?;
            return fetch_url(agent, url, file);
        }
        s => bail!("HTTP {s}"),
    };
    let remaining: Option<u64> = header("content-length").and_then(|l| l.parse().ok());
    let start = if resumed { have } else { 0 };
    let total = remaining.map(|r| start + r).or(file.size);
    let mut out = OpenOptions::new()
        .create(true)
        .write(true)
        .append(resumed)
        .truncate(!resumed)
        .open(&part)
        .with_context(|| format!("opening {}", part.display()))?;
    if resumed {
        eprintln!("{}: resuming at {have} bytes from {url}", file.file_name);
    } else {
        eprintln!("{}: downloading {url}", file.file_name);
    }
    let bar = progress_bar(total, start, &file.file_name);
    let mut body = response.into_body().into_reader();
    let mut buf = vec![0u8; 1 << 16];
    let mut written = start;
    loop {
        let n = match body.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                bar.abandon();
                // What arrived stays in the .part file: the next run resumes from there.
                out.flush().ok();
                return Err(anyhow!(
                    "transfer interrupted after {written} bytes ({e}); run the command again to resume"
                ));
            }
        };
        out.write_all(&buf[..n])
            .with_context(|| format!("writing {}", part.display()))?;
        written += n as u64;
        bar.set_position(written);
    }
    out.flush()
        .and_then(|()| out.sync_all())
        .with_context(|| format!("writing {}", part.display()))?;
    bar.finish_and_clear();
    if let Some(size) = file.size
        && written != size
    {
        bail!(
            "the download ended after {written} of {size} bytes; run the command again to resume"
        );
    }
    Ok(())
}

/// A byte progress bar on stderr (drawn only when stderr is a terminal).
fn progress_bar(total: Option<u64>, start: u64, name: &str) -> ProgressBar {
    let bar = match total {
        Some(t) => ProgressBar::new(t),
        None => ProgressBar::no_length(),
    };
    let style = ProgressStyle::with_template(
        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    )
    .map(|s| s.progress_chars("=> "))
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_message(name.to_string());
    bar.set_position(start);
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_start() {
        assert_eq!(range_start("bytes 100-199/200"), Some(100));
        assert_eq!(range_start("bytes */200"), None);
        assert_eq!(range_start("items 1-2/3"), None);
    }
}
