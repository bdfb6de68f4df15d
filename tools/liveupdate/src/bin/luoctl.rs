// SPDX-License-Identifier: GPL-2.0
//! luoctl: operate Linux's Live Update Orchestrator from the command line.

use liveupdate::named::{self, Manifest, NamedSession};
use liveupdate::{memfd, Device, ErrorKind, IncomingSession, Token};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

/// The last line the holder writes for `--daemon` once everything is preserved.
const READY: &str = "luoctl: holder ready";

const USAGE: &str = "\
luoctl: operate Linux's Live Update Orchestrator (/dev/liveupdate)

USAGE:
  luoctl hold SESSION [--memfd NAME:SIZE]... [--unpreserve NAME]... [--seed N] [--daemon]
        Create session SESSION, create each memfd (SIZE in bytes or with K/M/G), fill it
        with the position-dependent pattern of --seed, preserve it by NAME (a manifest at
        token 0 records the names), and keep the session open until killed. With
        --unpreserve, the memfd NAME is unpreserved again (LIVEUPDATE_SESSION_UNPRESERVE_FD)
        once all are preserved, and left out of the manifest. With --daemon it detaches
        once everything is preserved, as a VMM agent's holder does, and the session stays
        preserved across reboot(KEXEC).
  luoctl verify SESSION [--seed N] [--finish]
        In the new kernel: retrieve SESSION, every memfd named in its manifest, and check
        every byte against the pattern. With --finish, finish the session afterwards.
  luoctl finish SESSION
        Retrieve SESSION and finish it (releases whatever was not retrieved).
  luoctl manifest SESSION
        Retrieve SESSION and print its manifest (ours or systemd's), parsed and as written,
        without retrieving fds.
  luoctl kho
        Show the KHO state from debugfs: the outgoing and incoming FDTs, their subtrees
        and the scratch areas.

OPTIONS:
  --json      print one JSON object instead of text (every command)
  --device P  use P instead of /dev/liveupdate
  -h, --help  this help

Exit status: 0 on success, 1 on failure (the message says what to do), 2 on bad usage.
";

struct Args {
    cmd: String,
    session: Option<String>,
    memfds: Vec<(String, u64)>,
    unpreserve: Vec<String>,
    seed: u64,
    daemon: bool,
    finish: bool,
    json: bool,
    device: String,
    notify_stdout: bool,
}

fn parse_size(s: &str) -> Option<u64> {
    let (num, mult) = match s.chars().last()? {
        'K' | 'k' => (&s[..s.len() - 1], 1 << 10),
        'M' | 'm' => (&s[..s.len() - 1], 1 << 20),
        'G' | 'g' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<u64>().ok()?.checked_mul(mult)
}

fn parse_num(s: &str) -> Option<u64> {
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

fn parse_args(argv: &[String]) -> Result<Args, String> {
    let mut a = Args {
        cmd: String::new(),
        session: None,
        memfds: Vec::new(),
        unpreserve: Vec::new(),
        seed: 1,
        daemon: false,
        finish: false,
        json: false,
        device: liveupdate::DEVICE_PATH.into(),
        notify_stdout: false,
    };
    let mut it = argv.iter();
    while let Some(arg) = it.next() {
        let mut val = |what: &str| it.next().cloned().ok_or(format!("{arg} needs {what}"));
        match arg.as_str() {
            "-h" | "--help" => a.cmd = "help".into(),
            "--json" => a.json = true,
            "--daemon" => a.daemon = true,
            "--finish" => a.finish = true,
            "--notify-stdout" => a.notify_stdout = true,
            "--device" => a.device = val("a path")?,
            "--seed" => {
                let v = val("a number")?;
                a.seed = parse_num(&v).ok_or(format!("bad seed {v:?}"))?;
            }
            "--memfd" => {
                let v = val("NAME:SIZE")?;
                let (name, size) = v
                    .rsplit_once(':')
                    .ok_or(format!("--memfd {v:?}: want NAME:SIZE"))?;
                let size = parse_size(size).ok_or(format!("--memfd {v:?}: bad size"))?;
                if size % 8 != 0 {
                    return Err(format!("--memfd {v:?}: size must be a multiple of 8"));
                }
                named::check_name(name).map_err(|e| e.to_string())?;
                a.memfds.push((name.into(), size));
            }
            "--unpreserve" => {
                let v = val("a memfd NAME")?;
                if !a.memfds.iter().any(|(n, _)| *n == v) {
                    return Err(format!(
                        "--unpreserve {v:?}: no --memfd of that name before it"
                    ));
                }
                a.unpreserve.push(v);
            }
            s if s.starts_with('-') => return Err(format!("unknown option {s}")),
            s if a.cmd.is_empty() => a.cmd = s.into(),
            s if a.session.is_none() => a.session = Some(s.into()),
            s => return Err(format!("unexpected argument {s:?}")),
        }
    }
    if a.cmd.is_empty() {
        return Err("no command".into());
    }
    let needs_session = matches!(a.cmd.as_str(), "hold" | "verify" | "finish" | "manifest");
    if needs_session && a.session.is_none() {
        return Err(format!("{} needs a SESSION name", a.cmd));
    }
    Ok(a)
}

/// What a command reports: a JSON object, also rendered as text.
struct Report(serde_json::Map<String, Value>);

impl Report {
    fn new(cmd: &str) -> Self {
        let mut m = serde_json::Map::new();
        m.insert("command".into(), json!(cmd));
        Self(m)
    }
    fn set(&mut self, k: &str, v: Value) {
        self.0.insert(k.into(), v);
    }
    fn print(&self, as_json: bool) {
        if as_json {
            println!("{}", Value::Object(self.0.clone()));
            return;
        }
        for (k, v) in &self.0 {
            match v {
                Value::Array(items) => {
                    println!("{k}:");
                    for i in items {
                        println!("  {}", text(i));
                    }
                }
                _ => println!("{k}: {}", text(v)),
            }
        }
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| format!("{k}={}", text(v)))
            .collect::<Vec<_>>()
            .join(" "),
        other => other.to_string(),
    }
}

type CmdResult = Result<Report, String>;

fn hint(e: &liveupdate::Error) -> String {
    let tip = match e.kind() {
        ErrorKind::NotAvailable => "; boot with liveupdate=on and CONFIG_LIVEUPDATE=y",
        ErrorKind::Busy => "; another agent holds the device: stop it or use its sessions",
        ErrorKind::SessionExists => "; pick another name or close the process holding it",
        ErrorKind::SessionNotFound => "; was the session preserved before the kexec?",
        ErrorKind::BadManifest => "; was the session made with `luoctl hold`?",
        _ => "",
    };
    format!("{e}{tip}")
}

fn cmd_hold(a: &Args) -> CmdResult {
    let name = a.session.as_deref().unwrap_or_default();
    if a.daemon && !a.notify_stdout {
        return spawn_daemon();
    }
    let dev = Device::open_path(&a.device).map_err(|e| hint(&e))?;
    let session = dev.create_session(name).map_err(|e| hint(&e))?;
    let mut named = NamedSession::new(session);
    let mut items = Vec::new();
    for (mname, size) in &a.memfds {
        let fd = memfd::create(mname, *size).map_err(|e| format!("memfd {mname}: {e}"))?;
        let t0 = Instant::now();
        memfd::fill(&fd, a.seed).map_err(|e| format!("fill {mname}: {e}"))?;
        let fill_s = t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        let token = named.preserve(mname, &fd).map_err(|e| hint(&e))?;
        let preserve_s = t1.elapsed().as_secs_f64();
        items.push(json!({"name": mname, "token": token.0, "bytes": size,
                          "fill_s": fill_s, "preserve_s": preserve_s}));
    }
    let mut unpreserved = Vec::new();
    for mname in &a.unpreserve {
        let token = named.unpreserve(mname).map_err(|e| hint(&e))?;
        unpreserved.push(json!({"name": mname, "token": token.0}));
        items.retain(|i| i["name"] != json!(mname));
    }
    let session = named.commit().map_err(|e| hint(&e))?;
    drop(dev);
    let mut r = Report::new("hold");
    r.set("session", json!(name));
    r.set("seed", json!(a.seed));
    r.set("memfds", Value::Array(items));
    if !unpreserved.is_empty() {
        r.set("unpreserved", Value::Array(unpreserved));
    }
    r.set("state", json!("preserved; holding the session open"));
    r.print(a.json);
    if a.notify_stdout {
        println!("{READY}");
    }
    std::io::stdout().flush().ok();
    if a.notify_stdout {
        // Detach: the parent has read our report; drop the terminal and wait for the kexec.
        rustix::process::setsid().ok();
        if let Ok(null) = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")
        {
            rustix::stdio::dup2_stdin(&null).ok();
            rustix::stdio::dup2_stdout(&null).ok();
            rustix::stdio::dup2_stderr(&null).ok();
        }
    }
    let _keep = session;
    loop {
        std::thread::park();
    }
}

/// Re-run ourselves as the holder; print its report once it is ready.
fn spawn_daemon() -> CmdResult {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find myself: {e}"))?;
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--daemon")
        .collect();
    let mut child = Command::new(exe)
        .args(&args)
        .arg("--notify-stdout")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start the holder: {e}"))?;
    // Read until the holder detaches (success, its last line is READY) or exits (failure).
    let mut out = String::new();
    if let Some(mut so) = child.stdout.take() {
        so.read_to_string(&mut out).ok();
    }
    match out.strip_suffix(&format!("{READY}\n")) {
        Some(report) => {
            print!("{report}");
            println!("holder pid {}", child.id());
            std::process::exit(0);
        }
        None => {
            // The holder reported its error itself (stderr, or stdout with --json).
            print!("{out}");
            let status = child.wait().map_err(|e| format!("holder: {e}"))?;
            std::process::exit(status.code().filter(|&c| c != 0).unwrap_or(1));
        }
    }
}

fn retrieve(a: &Args) -> Result<(Device, IncomingSession), String> {
    let dev = Device::open_path(&a.device).map_err(|e| hint(&e))?;
    let s = dev
        .retrieve_session(a.session.as_deref().unwrap_or_default())
        .map_err(|e| hint(&e))?;
    Ok((dev, s))
}

fn cmd_verify(a: &Args) -> CmdResult {
    let t0 = Instant::now();
    let (_dev, session) = retrieve(a)?;
    let m = Manifest::read(&session).map_err(|e| hint(&e))?;
    let mut items = Vec::new();
    let mut bad = 0u64;
    for e in &m.entries {
        let t1 = Instant::now();
        let fd = session.retrieve(Token(e.token)).map_err(|x| hint(&x))?;
        let retrieve_s = t1.elapsed().as_secs_f64();
        let t2 = Instant::now();
        let v = memfd::verify(&fd, a.seed).map_err(|x| format!("verify {}: {x}", e.name))?;
        bad += v.bad_words;
        items.push(json!({"name": e.name, "token": e.token, "bytes": v.bytes,
                          "bad_words": v.bad_words, "first_bad": v.first_bad,
                          "retrieve_s": retrieve_s, "verify_s": t2.elapsed().as_secs_f64()}));
    }
    let mut r = Report::new("verify");
    r.set("session", json!(session.name().as_str()));
    r.set("memfds", Value::Array(items));
    if a.finish {
        let t3 = Instant::now();
        session.finish().map_err(|e| hint(&e))?;
        r.set("finish_s", json!(t3.elapsed().as_secs_f64()));
    }
    r.set("total_s", json!(t0.elapsed().as_secs_f64()));
    r.set("result", json!(if bad == 0 { "OK" } else { "MISMATCH" }));
    if bad != 0 {
        let e = format!("{bad} words differ from the pattern of seed {}", a.seed);
        r.set("error", json!(e));
    }
    Ok(r)
}

fn cmd_finish(a: &Args) -> CmdResult {
    let (_dev, session) = retrieve(a)?;
    session.finish().map_err(|e| hint(&e))?;
    let mut r = Report::new("finish");
    r.set("session", json!(session.name().as_str()));
    r.set("result", json!("finished"));
    Ok(r)
}

fn cmd_manifest(a: &Args) -> CmdResult {
    let (_dev, session) = retrieve(a)?;
    let (m, bytes) = Manifest::read_with_bytes(&session).map_err(|e| hint(&e))?;
    let mut r = Report::new("manifest");
    r.set("session", json!(session.name().as_str()));
    r.set("format", json!(format!("{:?}", m.flavor)));
    r.set(
        "entries",
        json!(m
            .entries
            .iter()
            .map(|e| json!({"name": e.name, "token": e.token}))
            .collect::<Vec<_>>()),
    );
    // The manifest as written (it parsed as JSON, so it is UTF-8).
    r.set("text", json!(String::from_utf8_lossy(&bytes)));
    Ok(r)
}

fn cmd_kho(_a: &Args) -> CmdResult {
    let mut r = Report::new("kho");
    let base = ["/sys/kernel/debug/kho", "/debugfs/kho"]
        .into_iter()
        .find(|p| std::path::Path::new(p).is_dir())
        .ok_or(
            "no kho directory in debugfs: mount debugfs and enable CONFIG_KEXEC_HANDOVER_DEBUGFS",
        )?;
    r.set("debugfs", json!(base));
    for dir in ["out", "in"] {
        let d = format!("{base}/{dir}");
        let mut v = serde_json::Map::new();
        if let Ok(fdt) = std::fs::read(format!("{d}/fdt")) {
            v.insert("fdt_bytes".into(), json!(fdt.len()));
        }
        let mut subs = Vec::new();
        if let Ok(rd) = std::fs::read_dir(format!("{d}/sub_fdts")) {
            for e in rd.flatten() {
                let len = std::fs::read(e.path()).map(|b| b.len()).unwrap_or(0);
                subs.push(json!({"name": e.file_name().to_string_lossy(), "bytes": len}));
            }
        }
        subs.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
        v.insert("subtrees".into(), Value::Array(subs));
        let read_list = |f: &str| -> Vec<u64> {
            std::fs::read_to_string(format!("{d}/{f}"))
                .unwrap_or_default()
                .lines()
                .filter_map(|l| parse_num(l.trim()))
                .collect()
        };
        let (phys, len) = (read_list("scratch_phys"), read_list("scratch_len"));
        let scratch: Vec<Value> = phys
            .iter()
            .zip(len.iter())
            .map(|(p, l)| json!({"phys": format!("{p:#x}"), "bytes": l}))
            .collect();
        if !scratch.is_empty() {
            v.insert("scratch_total_bytes".into(), json!(len.iter().sum::<u64>()));
            v.insert("scratch".into(), Value::Array(scratch));
        }
        r.set(dir, Value::Object(v));
    }
    Ok(r)
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let a = match parse_args(&argv) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("luoctl: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let res = match a.cmd.as_str() {
        "help" => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        "hold" => cmd_hold(&a),
        "verify" => cmd_verify(&a),
        "finish" => cmd_finish(&a),
        "manifest" => cmd_manifest(&a),
        "kho" => cmd_kho(&a),
        other => {
            eprintln!("luoctl: unknown command {other:?}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match res {
        Ok(r) => {
            r.print(a.json);
            // A report can describe a failure (verify: bytes that differ).
            if r.0.contains_key("error") {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            if a.json {
                println!("{}", json!({"command": a.cmd, "error": e}));
            } else {
                eprintln!("luoctl {}: {e}", a.cmd);
            }
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Result<Args, String> {
        parse_args(&s.split_whitespace().map(String::from).collect::<Vec<_>>())
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("2M"), Some(2 << 20));
        assert_eq!(parse_size("1G"), Some(1 << 30));
        assert_eq!(parse_size("x"), None);
    }

    #[test]
    fn parsing() {
        let a = args("hold vm1 --memfd ram:1G --memfd st:4K --seed 0x10 --daemon --json").unwrap();
        assert_eq!(a.cmd, "hold");
        assert_eq!(a.session.as_deref(), Some("vm1"));
        assert_eq!(a.memfds, vec![("ram".into(), 1 << 30), ("st".into(), 4096)]);
        assert_eq!((a.seed, a.daemon, a.json), (16, true, true));
        assert!(args("hold").is_err());
        assert!(args("hold s --memfd ram").is_err());
        assert!(args("hold s --memfd ram:7").is_err());
        assert!(args("hold s --bogus").is_err());
        let a = args("hold s --memfd a:4K --memfd b:8K --unpreserve a").unwrap();
        assert_eq!(a.unpreserve, vec!["a".to_string()]);
        assert!(args("hold s --unpreserve a --memfd a:4K").is_err());
        assert!(args("hold s --memfd a:4K --unpreserve").is_err());
        assert!(args("kho").is_ok());
    }
}
