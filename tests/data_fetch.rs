//! `fedsim data fetch` and `fedsim data list` against a loopback HTTP server that serves small files
//! generated here (the test-only `FEDSIM_FETCH_BASE_URL` points the fetcher at it, and
//! `FEDSIM_FETCH_SHA256` gives the digests of these files): a good fetch, a resumed one, a wrong
//! digest, a server that is down, a CIFAR archive unpacked and checked, and a scenario whose missing
//! MNIST is fetched and then runs.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use sha2::{Digest, Sha256};

/// A loopback HTTP/1.1 server for a fixed set of files: GET with an optional `Range: bytes=N-`
/// (answered 206 from N, or 416 past the end), one request per connection. It records the requests
/// it saw and stops when dropped.
struct Server {
    addr: String,
    requests: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    fn start(files: HashMap<String, Vec<u8>>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let addr = listener.local_addr().unwrap().to_string();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (log, halt) = (requests.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if halt.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(conn) = conn {
                    // A failed exchange (the client went away) only ends that connection.
                    let _ = answer(conn, &files, &log);
                }
            }
        });
        Server {
            addr,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so that it sees the flag.
        let _ = TcpStream::connect(&self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Serves one request on `conn`.
fn answer(
    mut conn: TcpStream,
    files: &HashMap<String, Vec<u8>>,
    log: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .trim_start_matches('/')
        .to_string();
    let mut range: Option<u64> = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.trim().eq_ignore_ascii_case("range")
        {
            range = value
                .trim()
                .strip_prefix("bytes=")
                .and_then(|v| v.trim_end_matches('-').parse().ok());
        }
    }
    log.lock().unwrap().push(match range {
        Some(r) => format!("GET {path} from {r}"),
        None => format!("GET {path}"),
    });
    let Some(body) = files.get(&path) else {
        return conn.write_all(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
    };
    let len = body.len() as u64;
    match range {
        Some(start) if start >= len => conn.write_all(
            format!("HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{len}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        ),
        Some(start) => {
            conn.write_all(
                format!(
                    "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {start}-{}/{len}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    len - 1,
                    len - start
                )
                .as_bytes(),
            )?;
            conn.write_all(&body[start as usize..])
        }
        None => {
            conn.write_all(
                format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )?;
            conn.write_all(body)
        }
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// Writes the digest file of `FEDSIM_FETCH_SHA256` for `files` (name, content) into `dir`.
fn digests(dir: &Path, files: &[(&str, &[u8])]) -> PathBuf {
    let path = dir.join("sha256sums.txt");
    let text: String = files
        .iter()
        .map(|(name, bytes)| format!("{}  {name}\n", sha256_hex(bytes)))
        .collect();
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs the binary from the workspace root with the test-only overrides and extra environment.
fn fedsim(args: &[&str], base_url: &str, sums: &Path, env: &[(&str, &Path)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fedsim"));
    cmd.args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("FEDSIM_FETCH_BASE_URL", base_url)
        .env("FEDSIM_FETCH_SHA256", sums)
        .env_remove("FEDSIM_DATA");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run fedsim")
}

fn text(o: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn ok(o: &Output) -> String {
    assert!(o.status.success(), "{}", text(o));
    text(o)
}

fn failed(o: &Output) -> String {
    assert!(!o.status.success(), "expected a failure: {}", text(o));
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A small MNIST in IDX format, gzip-compressed under the real file names: `n_train` and `n_test`
/// 28×28 images with labels cycling through 0..9 (pixels depend on the label, so it can be learnt).
fn tiny_mnist(n_train: u32, n_test: u32) -> Vec<(&'static str, Vec<u8>)> {
    let images = |n: u32| {
        let mut b = vec![0, 0, 8, 3];
        for d in [n, 28, 28] {
            b.extend(d.to_be_bytes());
        }
        for i in 0..n {
            let label = (i % 10) as usize;
            b.extend((0..784).map(|p| {
                if p / 78 == label {
                    255u8
                } else {
                    (p % 7) as u8
                }
            }));
        }
        gzip(&b)
    };
    let labels = |n: u32| {
        let mut b = vec![0, 0, 8, 1];
        b.extend(n.to_be_bytes());
        b.extend((0..n).map(|i| (i % 10) as u8));
        gzip(&b)
    };
    vec![
        ("train-images-idx3-ubyte.gz", images(n_train)),
        ("train-labels-idx1-ubyte.gz", labels(n_train)),
        ("t10k-images-idx3-ubyte.gz", images(n_test)),
        ("t10k-labels-idx1-ubyte.gz", labels(n_test)),
    ]
}

/// Serves `files` and writes their digests: (server, digest file).
fn serve(tmp: &Path, files: &[(&str, Vec<u8>)]) -> (Server, PathBuf) {
    let sums = digests(
        tmp,
        &files
            .iter()
            .map(|(n, b)| (*n, b.as_slice()))
            .collect::<Vec<_>>(),
    );
    let server = Server::start(
        files
            .iter()
            .map(|(n, b)| (n.to_string(), b.clone()))
            .collect(),
    );
    (server, sums)
}

#[test]
fn a_good_fetch_installs_verified_files_and_a_second_fetch_is_a_no_op() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let files = tiny_mnist(20, 10);
    let (server, sums) = serve(tmp.path(), &files);
    let r = root.to_str().unwrap();
    let out = ok(&fedsim(
        &["data", "fetch", "mnist", "--data-dir", r],
        &server.url(),
        &sums,
        &[],
    ));
    assert!(out.contains("mnist: fetched and verified"), "{out}");
    for (name, bytes) in &files {
        let installed = std::fs::read(root.join("mnist").join(name)).unwrap();
        assert_eq!(&installed, bytes, "{name}");
        assert!(!root.join("mnist").join(format!("{name}.part")).exists());
    }
    assert_eq!(server.requests().len(), 4);
    // A decoded-data cache file next to the data set, and an empty user cache.
    std::fs::create_dir_all(root.join("mnist/.fedsim-cache")).unwrap();
    std::fs::write(
        root.join("mnist/.fedsim-cache/idx-0123.bin"),
        vec![0u8; 3 << 20],
    )
    .unwrap();
    let user_cache = tmp.path().join("user-cache");
    let list = ok(&fedsim(
        &["data", "list", "--data-dir", r],
        &server.url(),
        &sums,
        &[("XDG_CACHE_HOME", &user_cache)],
    ));
    assert!(
        list.contains(".fedsim-cache  1 file, 3.0 MiB"),
        "the decoded-data cache is listed: {list}"
    );
    let line = |name: &str| {
        list.lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} line: {list}"))
            .to_string()
    };
    assert!(
        list.contains(&format!(
            "data root: {}",
            root.canonicalize().unwrap().display()
        )),
        "{list}"
    );
    assert!(line("mnist").contains("present"), "{list}");
    assert!(line("cifar10").contains("missing"), "{list}");
    // Present and verified: nothing is downloaded again.
    let again = ok(&fedsim(
        &["data", "fetch", "mnist", "--data-dir", r],
        &server.url(),
        &sums,
        &[],
    ));
    assert!(
        again.contains("mnist: already present and verified"),
        "{again}"
    );
    assert_eq!(server.requests().len(), 4, "{:?}", server.requests());
}

#[test]
fn an_interrupted_download_is_resumed_with_a_range_request() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let body: Vec<u8> = (0..4000)
        .flat_map(|i| {
            format!("{} 1:{} 3:0.5\n", if i % 2 == 0 { 1 } else { -1 }, i % 3).into_bytes()
        })
        .collect();
    let (server, sums) = serve(tmp.path(), &[("a9a", body.clone())]);
    // What an interrupted run leaves: the first part of the file beside its destination.
    let half = body.len() / 2;
    std::fs::create_dir_all(root.join("libsvm")).unwrap();
    std::fs::write(root.join("libsvm/a9a.part"), &body[..half]).unwrap();
    let out = ok(&fedsim(
        &["data", "fetch", "a9a", "--data-dir", root.to_str().unwrap()],
        &server.url(),
        &sums,
        &[],
    ));
    assert!(out.contains(&format!("resuming at {half} bytes")), "{out}");
    assert_eq!(server.requests(), [format!("GET a9a from {half}")]);
    // Installed gzip-compressed where the scenarios read it, with the full content.
    let installed = std::fs::read(root.join("libsvm/a9a.txt.gz")).unwrap();
    assert_eq!(gunzip(&installed), body);
    assert!(!root.join("libsvm/a9a.part").exists());
}

#[test]
fn a_wrong_digest_removes_the_download_and_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let served = b"+1 1:1\n-1 2:1\n".to_vec();
    let server = Server::start(HashMap::from([("phishing".to_string(), served)]));
    let sums = digests(tmp.path(), &[("phishing", b"something else")]);
    let err = failed(&fedsim(
        &[
            "data",
            "fetch",
            "phishing",
            "--data-dir",
            root.to_str().unwrap(),
        ],
        &server.url(),
        &sums,
        &[],
    ));
    assert!(
        err.contains("SHA-256 mismatch") && err.contains(&sha256_hex(b"something else")),
        "{err}"
    );
    assert!(err.contains("the download was removed"), "{err}");
    assert!(!root.join("libsvm/phishing.part").exists());
    assert!(!root.join("libsvm/phishing.txt.gz").exists());
}

#[test]
fn a_server_that_is_down_gives_an_error_saying_where_to_put_the_files() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    // A port that was just free: nothing listens there.
    let dead = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let sums = digests(tmp.path(), &[("w8a", b"+1 1:1\n")]);
    let err = failed(&fedsim(
        &["data", "fetch", "w8a", "--data-dir", root.to_str().unwrap()],
        &dead,
        &sums,
        &[],
    ));
    let dest = root.join("libsvm/w8a.txt.gz");
    assert!(err.contains("could not download w8a"), "{err}");
    assert!(err.contains(&format!("{dead}/w8a")), "{err}");
    assert!(
        err.contains("To install it by hand") && err.contains(&dest.display().to_string()),
        "{err}"
    );
    assert!(!dest.exists());
}

/// A `.tar.gz` holding `cifar-10-batches-bin/` with the six files the loader reads (one record each).
fn tiny_cifar10_archive() -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    for (i, name) in [
        "data_batch_1.bin",
        "data_batch_2.bin",
        "data_batch_3.bin",
        "data_batch_4.bin",
        "data_batch_5.bin",
        "test_batch.bin",
    ]
    .iter()
    .enumerate()
    {
        let mut record = vec![i as u8];
        record.extend((0..3072).map(|p| (p % 251) as u8));
        let mut header = tar::Header::new_gnu();
        header.set_size(record.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(
            &mut header,
            format!("cifar-10-batches-bin/{name}"),
            record.as_slice(),
        )
        .unwrap();
    }
    gzip(&tar.into_inner().unwrap())
}

#[test]
fn a_cifar_archive_is_unpacked_checked_and_fetched_again_when_damaged() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let r = root.to_str().unwrap();
    let (server, sums) = serve(
        tmp.path(),
        &[("cifar-10-binary.tar.gz", tiny_cifar10_archive())],
    );
    ok(&fedsim(
        &["data", "fetch", "cifar10", "--data-dir", r],
        &server.url(),
        &sums,
        &[],
    ));
    let batches = root.join("cifar10/cifar-10-batches-bin");
    assert_eq!(
        std::fs::read(batches.join("test_batch.bin")).unwrap().len(),
        3073
    );
    assert!(
        !root.join("cifar10/cifar-10-binary.tar.gz.part").exists(),
        "archive not kept"
    );
    let list = ok(&fedsim(
        &["data", "list", "--data-dir", r],
        &server.url(),
        &sums,
        &[],
    ));
    assert!(
        list.lines()
            .any(|l| l.starts_with("cifar10 ") && l.contains("present")),
        "{list}"
    );
    // A damaged file is reported, and a fetch replaces it.
    std::fs::write(batches.join("data_batch_3.bin"), b"damaged").unwrap();
    let list = ok(&fedsim(
        &["data", "list", "--data-dir", r],
        &server.url(),
        &sums,
        &[],
    ));
    assert!(
        list.lines()
            .any(|l| l.starts_with("cifar10 ") && l.contains("corrupt")),
        "{list}"
    );
    assert!(list.contains("data_batch_3.bin"), "{list}");
    let out = ok(&fedsim(
        &["data", "fetch", "cifar10", "--data-dir", r],
        &server.url(),
        &sums,
        &[],
    ));
    assert!(out.contains("corrupt"), "{out}");
    assert_eq!(
        std::fs::read(batches.join("data_batch_3.bin"))
            .unwrap()
            .len(),
        3073
    );
    assert_eq!(server.requests().len(), 2);
}

#[test]
fn a_scenario_without_its_data_names_the_fetch_command_and_runs_once_fetched() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("empty-root");
    std::fs::create_dir_all(&root).unwrap();
    let files = tiny_mnist(200, 50);
    let (server, sums) = serve(tmp.path(), &files);
    let env = [("FEDSIM_DATA", root.as_path())];
    let out = tmp.path().join("run");
    let run = || {
        fedsim(
            &[
                "sim",
                "configs/mnist_2nn_iid.toml",
                "--set",
                "rounds=1",
                "-q",
                "--force",
                "--out",
                out.to_str().unwrap(),
            ],
            &server.url(),
            &sums,
            &env,
        )
    };
    let err = failed(&run());
    assert!(
        err.contains("fedsim data fetch mnist")
            && err.contains(
                &root
                    .canonicalize()
                    .unwrap()
                    .join("mnist")
                    .display()
                    .to_string()
            ),
        "{err}"
    );
    assert!(err.contains("FEDSIM_DATA"), "{err}");
    ok(&fedsim(
        &["data", "fetch", "mnist"],
        &server.url(),
        &sums,
        &env,
    ));
    assert!(root.join("mnist/train-images-idx3-ubyte.gz").is_file());
    ok(&run());
    assert!(out.join("summary.json").is_file());
}

#[test]
fn unknown_names_are_refused_with_the_known_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let err = failed(&fedsim(
        &[
            "data",
            "fetch",
            "imagenet",
            "--data-dir",
            tmp.path().to_str().unwrap(),
        ],
        "http://127.0.0.1:9",
        &tmp.path().join("none"),
        &[],
    ));
    assert!(
        err.contains("unknown data set `imagenet`") && err.contains("cifar100"),
        "{err}"
    );
}
