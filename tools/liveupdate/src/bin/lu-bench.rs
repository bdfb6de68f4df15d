// SPDX-License-Identifier: GPL-2.0
//! lu-bench: the in-VM agent of `lu bench`.
//!
//! Each mode does one side of a live update and prints `LU-BENCH key=value ...` lines with
//! timings (CLOCK_MONOTONIC, within one kernel) and memory figures (/proc/meminfo). Times that
//! span the kexec are measured by the host from the serial log.
//!
//! ```text
//! lu-bench memfd-preserve  --total BYTES --count N [--thp] [--populate-pct P] [--seed S]
//! lu-bench memfd-retrieve  --total BYTES --count N [--populate-pct P] [--seed S]
//! lu-bench scale-preserve  --sessions N --files M
//! lu-bench scale-retrieve  --sessions N --files M
//! lu-bench meminfo
//! ```

use liveupdate::{memfd, Device, IncomingSession, OutgoingSession, Token};
use rustix::fd::{AsFd, OwnedFd};
use std::process::ExitCode;
use std::time::Instant;

const SESSION: &str = "bench";
const SCALE_FILES: &str = "bench-files";
const PAGE: u64 = 4096;

#[derive(Default)]
struct Opts {
    total: u64,
    count: u64,
    thp: bool,
    pct: u64,
    seed: u64,
    sessions: u64,
    files: u64,
}

fn parse(args: &[String]) -> Result<Opts, String> {
    let mut o = Opts {
        pct: 100,
        seed: 1,
        ..Default::default()
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut num = || -> Result<u64, String> {
            it.next()
                .and_then(|v| v.parse().ok())
                .ok_or(format!("{a} needs a number"))
        };
        match a.as_str() {
            "--total" => o.total = num()?,
            "--count" => o.count = num()?,
            "--populate-pct" => o.pct = num()?,
            "--seed" => o.seed = num()?,
            "--sessions" => o.sessions = num()?,
            "--files" => o.files = num()?,
            "--thp" => o.thp = true,
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok(o)
}

fn meminfo(key: &str) -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            let rest = l.strip_prefix(key)?.strip_prefix(':')?;
            rest.split_whitespace().next()?.parse::<u64>().ok()
        })
        .map_or(0, |kb| kb * 1024)
}

/// A counter of /proc/vmstat, or 0.
fn vmstat(key: &str) -> u64 {
    std::fs::read_to_string("/proc/vmstat")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.parse::<u64>().ok())
        .unwrap_or(0)
}

fn report(fields: &[(&str, String)]) {
    let kv: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!("LU-BENCH {}", kv.join(" "));
}

fn secs(t: Instant) -> String {
    format!("{:.6}", t.elapsed().as_secs_f64())
}

/// Keep fds open across the kexec in a detached child.
fn hold(fds: Vec<OwnedFd>) -> Result<(), String> {
    liveupdate::holder::spawn(fds).map_err(|e| format!("cannot start the holder: {e}"))?;
    Ok(())
}

/// Fill a memfd: every word (100%) or one word on `pct`% of its pages.
fn populate(fd: impl AsFd, size: u64, pct: u64, seed: u64) -> Result<(), String> {
    if pct >= 100 {
        return memfd::fill(fd, seed).map_err(|e| e.to_string());
    }
    let stride = (100 / pct.max(1)) * PAGE;
    let mut off = 0;
    while off < size {
        let w = memfd::pattern(seed, off).to_ne_bytes();
        rustix::io::pwrite(fd.as_fd(), &w, off).map_err(|e| e.to_string())?;
        off += stride;
    }
    Ok(())
}

/// Check what `populate` wrote (and, for sparse files, that the rest reads as zero).
fn check(fd: impl AsFd, size: u64, pct: u64, seed: u64) -> Result<u64, String> {
    if pct >= 100 {
        return memfd::verify(fd, seed)
            .map(|v| v.bad_words)
            .map_err(|e| e.to_string());
    }
    let stride = (100 / pct.max(1)) * PAGE;
    let mut bad = 0;
    let mut buf = vec![0u8; PAGE as usize];
    let mut off = 0;
    while off < size {
        rustix::io::pread(fd.as_fd(), &mut buf, off).map_err(|e| e.to_string())?;
        let want = if off % stride == 0 {
            memfd::pattern(seed, off)
        } else {
            0
        };
        let got = u64::from_ne_bytes(buf[..8].try_into().unwrap_or_default());
        if got != want || buf[8..].iter().any(|&b| b != 0) {
            bad += 1;
        }
        off += PAGE;
    }
    Ok(bad)
}

/// Bytes of memory the memfds hold (their `st_blocks`), holes excluded.
fn held_bytes(fds: &[OwnedFd]) -> Result<u64, String> {
    fds.iter().try_fold(0u64, |sum, fd| {
        let st = rustix::fs::fstat(fd).map_err(|e| format!("fstat: {e}"))?;
        Ok(sum + st.st_blocks as u64 * 512)
    })
}

fn memfd_preserve(o: &Opts) -> Result<(), String> {
    if o.count == 0 || o.total % (o.count * PAGE) != 0 {
        return Err("--total must be a multiple of --count pages".into());
    }
    if o.thp {
        std::fs::write(
            "/sys/kernel/mm/transparent_hugepage/shmem_enabled",
            "always",
        )
        .map_err(|e| format!("enable shmem THP: {e}"))?;
    }
    let each = o.total / o.count;
    let free0 = meminfo("MemFree");
    let t = Instant::now();
    let mut fds = Vec::new();
    for i in 0..o.count {
        let fd = memfd::create(&format!("ram{i}"), each).map_err(|e| e.to_string())?;
        populate(&fd, each, o.pct, o.seed.wrapping_add(i)).map_err(|e| format!("fill: {e}"))?;
        fds.push(fd);
    }
    let fill_s = secs(t);
    let free1 = meminfo("MemFree");
    let huge = meminfo("ShmemHugePages");
    let held_filled = held_bytes(&fds)?;
    let migrated0 = vmstat("pgmigrate_success");
    let dev = Device::open().map_err(|e| e.to_string())?;
    let t = Instant::now();
    let session = dev.create_session(SESSION).map_err(|e| e.to_string())?;
    for (i, fd) in fds.iter().enumerate() {
        session
            .preserve(fd, Token(i as u64 + 1))
            .map_err(|e| e.to_string())?;
    }
    let preserve_s = secs(t);
    let free2 = meminfo("MemFree");
    let held_preserved = held_bytes(&fds)?;
    // Pages PRESERVE_FD migrated (out of CMA, such as KHO's scratch) before pinning them.
    let migrated = vmstat("pgmigrate_success") - migrated0;
    report(&[
        ("phase", "preserve".into()),
        ("count", o.count.to_string()),
        ("bytes", o.total.to_string()),
        ("populate_pct", o.pct.to_string()),
        ("thp_bytes", huge.to_string()),
        ("fill_s", fill_s),
        ("preserve_s", preserve_s),
        ("memfree_start", free0.to_string()),
        ("memfree_filled", free1.to_string()),
        ("memfree_preserved", free2.to_string()),
        ("held_filled", held_filled.to_string()),
        ("held_preserved", held_preserved.to_string()),
        ("migrated_pages", migrated.to_string()),
    ]);
    drop(fds);
    drop(dev);
    hold(vec![session.into_fd()])
}

fn memfd_retrieve(o: &Opts) -> Result<(), String> {
    let free0 = meminfo("MemFree");
    let t = Instant::now();
    let dev = Device::open().map_err(|e| e.to_string())?;
    let session = dev.retrieve_session(SESSION).map_err(|e| e.to_string())?;
    let mut fds = Vec::new();
    for i in 0..o.count {
        fds.push(session.retrieve(Token(i + 1)).map_err(|e| e.to_string())?);
    }
    let retrieve_s = secs(t);
    let t = Instant::now();
    session.finish().map_err(|e| e.to_string())?;
    let finish_s = secs(t);
    // The host takes the end of the blackout from this line.
    report(&[
        ("phase", "retrieved".into()),
        ("count", o.count.to_string()),
        ("retrieve_s", retrieve_s),
        ("finish_s", finish_s),
        ("memfree_start", free0.to_string()),
    ]);
    let each = o.total / o.count.max(1);
    let mut bad = 0;
    for (i, fd) in fds.iter().enumerate() {
        let size = memfd::size(fd).map_err(|e| e.to_string())?;
        if size != each {
            return Err(format!("memfd {i}: {size} bytes, expected {each}"));
        }
        bad += check(fd, size, o.pct, o.seed.wrapping_add(i as u64))?;
    }
    drop(fds);
    drop(session);
    drop(dev);
    report(&[
        ("phase", "verified".into()),
        ("bad", bad.to_string()),
        ("memfree_end", meminfo("MemFree").to_string()),
        ("memtotal", meminfo("MemTotal").to_string()),
    ]);
    if bad != 0 {
        return Err(format!("{bad} words or pages differ"));
    }
    Ok(())
}

/// Allow `n` more open files than the default (one fd per session and per memfd).
fn raise_nofile(n: u64) -> Result<(), String> {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut lim = getrlimit(Resource::Nofile);
    let want = n + 64;
    if lim.current.is_some_and(|c| c >= want) {
        return Ok(());
    }
    lim.current = Some(want);
    if lim.maximum.is_some_and(|m| m < want) {
        lim.maximum = Some(want);
    }
    setrlimit(Resource::Nofile, lim).map_err(|e| format!("RLIMIT_NOFILE to {want}: {e}"))
}

fn scale_preserve(o: &Opts) -> Result<(), String> {
    raise_nofile(o.sessions + o.files)?;
    let dev = Device::open().map_err(|e| e.to_string())?;
    let t = Instant::now();
    let mut keep: Vec<OutgoingSession> = Vec::new();
    for i in 0..o.sessions {
        keep.push(
            dev.create_session(&format!("s{i}"))
                .map_err(|e| e.to_string())?,
        );
    }
    let sessions_s = secs(t);
    let files = dev.create_session(SCALE_FILES).map_err(|e| e.to_string())?;
    let mut fds = Vec::new();
    for i in 0..o.files {
        fds.push(memfd::create(&format!("f{i}"), PAGE).map_err(|e| e.to_string())?);
    }
    let t = Instant::now();
    for (i, fd) in fds.iter().enumerate() {
        files
            .preserve(fd, Token(i as u64 + 1))
            .map_err(|e| e.to_string())?;
    }
    let files_s = secs(t);
    report(&[
        ("phase", "scale-preserve".into()),
        ("sessions", o.sessions.to_string()),
        ("create_sessions_s", sessions_s),
        ("files", o.files.to_string()),
        ("preserve_files_s", files_s),
    ]);
    drop(fds);
    drop(dev);
    let mut all: Vec<OwnedFd> = keep.into_iter().map(OutgoingSession::into_fd).collect();
    all.push(files.into_fd());
    hold(all)
}

fn scale_retrieve(o: &Opts) -> Result<(), String> {
    raise_nofile(o.sessions + o.files)?;
    let dev = Device::open().map_err(|e| e.to_string())?;
    let t = Instant::now();
    for i in 0..o.sessions {
        let s: IncomingSession = dev
            .retrieve_session(&format!("s{i}"))
            .map_err(|e| e.to_string())?;
        s.finish().map_err(|e| e.to_string())?;
    }
    let sessions_s = secs(t);
    let t = Instant::now();
    let files = dev
        .retrieve_session(SCALE_FILES)
        .map_err(|e| e.to_string())?;
    let mut fds = Vec::new();
    for i in 0..o.files {
        fds.push(files.retrieve(Token(i + 1)).map_err(|e| e.to_string())?);
    }
    files.finish().map_err(|e| e.to_string())?;
    let files_s = secs(t);
    report(&[
        ("phase", "scale-retrieve".into()),
        ("sessions", o.sessions.to_string()),
        ("retrieve_finish_sessions_s", sessions_s),
        ("files", o.files.to_string()),
        ("retrieve_finish_files_s", files_s),
    ]);
    Ok(())
}

fn main() -> ExitCode {
    liveupdate::holder::run_if_holder();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(mode) = args.first() else {
        eprintln!("usage: see the source of lu-bench");
        return ExitCode::from(2);
    };
    let res = parse(&args[1..]).and_then(|o| match mode.as_str() {
        "memfd-preserve" => memfd_preserve(&o),
        "memfd-retrieve" => memfd_retrieve(&o),
        "scale-preserve" => scale_preserve(&o),
        "scale-retrieve" => scale_retrieve(&o),
        "meminfo" => {
            report(&[
                ("phase", "meminfo".into()),
                ("memfree", meminfo("MemFree").to_string()),
                ("memtotal", meminfo("MemTotal").to_string()),
            ]);
            Ok(())
        }
        other => Err(format!("unknown mode {other}")),
    });
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            println!("LU-BENCH phase=error error={}", e.replace(' ', "_"));
            ExitCode::FAILURE
        }
    }
}
