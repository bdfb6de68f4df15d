// SPDX-License-Identifier: GPL-2.0
//! lu-agent: the VMM-like agent of the live-update demo (`lu demo`).
//!
//! `lu-agent preserve SIZE_MIB` fills a memfd ("guest RAM") with a position-dependent pattern,
//! preserves it by name in session `lu-demo` and keeps the session open in a detached child.
//! `lu-agent retrieve SIZE_MIB`, in the new kernel, retrieves it, checks every byte and
//! finishes the session. Besides its own words it prints `LU-DEMO key=value` lines for the
//! harness's report.

use liveupdate::named::{self, NamedSession};
use liveupdate::{memfd, Device};
use std::process::ExitCode;
use std::time::Instant;

const SESSION: &str = "lu-demo";
const MEMFD: &str = "guest-ram";
const SEED: u64 = 0x4c55_444d_4f5f_3031;

fn preserve(size: u64) -> Result<(), String> {
    let dev = Device::open().map_err(|e| e.to_string())?;
    let session = dev.create_session(SESSION).map_err(|e| e.to_string())?;
    let fd = memfd::create(MEMFD, size).map_err(|e| format!("memfd: {e}"))?;
    let t0 = Instant::now();
    memfd::fill(&fd, SEED).map_err(|e| format!("fill: {e}"))?;
    let fill_s = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let mut named = NamedSession::new(session);
    let token = named.preserve(MEMFD, &fd).map_err(|e| e.to_string())?;
    let session = named.commit().map_err(|e| e.to_string())?;
    let preserve_s = t1.elapsed().as_secs_f64();
    println!(
        "agent: preserved {} MiB memfd '{MEMFD}' as token {token} in session '{SESSION}' \
         (fill {fill_s:.2} s, preserve {:.0} ms)",
        size >> 20,
        preserve_s * 1e3
    );
    println!(
        "LU-DEMO stage=preserve session={SESSION} token={token} bytes={size} fill_s={fill_s:.3} \
         preserve_s={preserve_s:.3}"
    );
    drop(fd);
    drop(dev);
    // Hold the session across the kexec in a detached child, as a VMM agent's holder does.
    hold_in_child(session)
}

fn hold_in_child(session: liveupdate::OutgoingSession) -> Result<(), String> {
    let pid = liveupdate::holder::spawn(vec![session.into_fd()])
        .map_err(|e| format!("cannot start the holder: {e}"))?;
    println!("agent: holder pid {pid} keeps the session open; ready for reboot(KEXEC)");
    Ok(())
}

fn retrieve(size: u64) -> Result<bool, String> {
    let t0 = Instant::now();
    let dev = Device::open().map_err(|e| e.to_string())?;
    let session = dev.retrieve_session(SESSION).map_err(|e| e.to_string())?;
    let (manifest, fds) = named::retrieve_all(&session).map_err(|e| e.to_string())?;
    let retrieve_s = t0.elapsed().as_secs_f64();
    let (name, fd) = fds.into_iter().find(|(n, _)| n == MEMFD).ok_or(format!(
        "no '{MEMFD}' in the manifest ({} entries)",
        manifest.entries.len()
    ))?;
    let got = memfd::size(&fd).map_err(|e| e.to_string())?;
    if got != size {
        return Err(format!("'{name}' has {got} bytes, expected {size}"));
    }
    let t1 = Instant::now();
    let v = memfd::verify(&fd, SEED).map_err(|e| format!("verify: {e}"))?;
    let verify_s = t1.elapsed().as_secs_f64();
    drop(fd);
    let t2 = Instant::now();
    session.finish().map_err(|e| e.to_string())?;
    let finish_s = t2.elapsed().as_secs_f64();
    println!(
        "agent: retrieved '{name}' ({} MiB) from session '{SESSION}' in {:.0} ms; \
         {} of {} words differ; finished the session",
        got >> 20,
        retrieve_s * 1e3,
        v.bad_words,
        v.bytes / 8
    );
    println!(
        "LU-DEMO stage=retrieve session={SESSION} bytes={} bad_words={} first_bad={} \
         retrieve_s={retrieve_s:.3} verify_s={verify_s:.3} finish_s={finish_s:.3}",
        v.bytes,
        v.bad_words,
        v.first_bad.unwrap_or(0)
    );
    let ok = v.bad_words == 0;
    println!("LU-DEMO verify={}", if ok { "OK" } else { "FAIL" });
    Ok(ok)
}

fn main() -> ExitCode {
    liveupdate::holder::run_if_holder();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let size = args
        .get(1)
        .and_then(|s| s.parse::<u64>().ok())
        .map(|m| m << 20);
    let res = match (args.first().map(String::as_str), size) {
        (Some("preserve"), Some(size)) => preserve(size).map(|_| true),
        (Some("retrieve"), Some(size)) => retrieve(size),
        _ => {
            eprintln!("usage: lu-agent preserve|retrieve SIZE_MIB");
            return ExitCode::from(2);
        }
    };
    match res {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            println!("LU-DEMO error=\"{e}\"");
            eprintln!("lu-agent: {e}");
            ExitCode::FAILURE
        }
    }
}
