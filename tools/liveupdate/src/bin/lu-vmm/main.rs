// SPDX-License-Identifier: GPL-2.0
//! lu-vmm: a minimal VMM whose running guest survives a live update.
//!
//! Built on the rust-vmm crates: `kvm-ioctls`/`kvm-bindings` for KVM (the VM, the vCPU, the
//! interrupt controller, the state ioctls), `vm-memory` for guest RAM (a bounds-checked mapping
//! of the RAM memfd, with atomic loads of the status block while the guest runs) and
//! `vmm-sys-util` for the signal that kicks the vCPU out of KVM_RUN.
//!
//! ```text
//! lu-vmm start   [--socket P] [--mem-mib N] [--region-kib N] [--seed S] [--run-ms N]
//! lu-vmm status  [--socket P]
//! lu-vmm update  [--socket P] [--session S]
//! lu-vmm restore [--session S] [--run-ms N]    (or lu-vmm --restore ...)
//! lu-vmm serve   [the options of start]      (the VMM itself; `start` runs it)
//! ```
//!
//! `start` starts the VMM in the background (`lu-vmm serve`, with a control socket) and
//! returns once its guest has run for `--run-ms`. Guest RAM is a memfd; the guest
//! (guest-arm64.s, guest-x86_64.s) counts, checksums a region of its RAM and takes timer
//! interrupts. `update` asks the VMM to pause the vCPU, save its registers and the interrupt
//! controller's state (arm64: the vGICv3; x86_64: local APIC, PICs, IOAPIC) into a second
//! memfd, and preserve both by name (`ram`, `state`) in LUO session `--session`; the VMM then
//! holds the session until the kexec. In the next kernel, `restore` retrieves both, rebuilds
//! the VM, checks guest RAM, resumes the guest for `--run-ms` and checks that it went on where
//! it stopped.
//!
//! Every result is also a `LU-VMM key=value ...` line, for the harness (`vm:survives`).

#[cfg(not(any(target_arch = "aarch64", target_arch = "x86_64")))]
compile_error!("lu-vmm has guests for arm64 and x86_64 only");

#[cfg(target_arch = "aarch64")]
#[path = "arm64.rs"]
mod arch;
#[cfg(target_arch = "x86_64")]
#[path = "x86_64.rs"]
mod arch;
mod guest;
mod snapshot;
mod vcpu;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use guest::Status;

const SOCKET: &str = "/tmp/lu-vmm.sock";
const SESSION: &str = "lu-vmm";

struct Opts {
    socket: String,
    session: String,
    mem_mib: u64,
    region_kib: u64,
    seed: u64,
    run_ms: u64,
}

fn parse_opts(args: &[String]) -> Result<Opts, String> {
    let mut o = Opts {
        socket: SOCKET.into(),
        session: SESSION.into(),
        mem_mib: 64,
        region_kib: 1024,
        seed: 0x4c55_564d_4d5f_3031,
        run_ms: 1000,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{a} needs a value"))
        };
        let num = |v: String| -> Result<u64, String> {
            let r = match v.strip_prefix("0x") {
                Some(h) => u64::from_str_radix(h, 16),
                None => v.parse(),
            };
            r.map_err(|_| format!("{a}: not a number: {v}"))
        };
        match a.as_str() {
            "--socket" => o.socket = val()?,
            "--session" => o.session = val()?,
            "--mem-mib" => o.mem_mib = num(val()?)?,
            "--region-kib" => o.region_kib = num(val()?)?,
            "--seed" => o.seed = num(val()?)?,
            "--run-ms" => o.run_ms = num(val()?)?,
            _ => return Err(format!("unknown argument {a}")),
        }
    }
    Ok(o)
}

/// The VMM's answer to `status`.
#[derive(Debug, Serialize, Deserialize)]
struct StatusReply {
    /// "running"; "saved" once the state is preserved (the guest stays paused); "stopped" if
    /// the vCPU left KVM_RUN by itself (then `error` says so).
    state: String,
    guest: Status,
    error: Option<String>,
}

/// The VMM's answer to `update`: the guest at the pause and the host's clock (counter ticks).
#[derive(Debug, Default, Serialize, Deserialize)]
struct UpdateReply {
    error: Option<String>,
    counter: u64,
    ticks: u64,
    passes: u64,
    /// The guest's last read of its counter before the pause, and guest count - host count.
    guest_last_cnt: u64,
    host_minus_guest: u64,
    host_freq: u64,
    host_request: u64,
    host_paused: u64,
    host_saved: u64,
    host_preserved: u64,
    /// What the state holds, in words (from `arch::State::describe`).
    saved: String,
    state_bytes: usize,
}

fn ms(ticks: u64, freq: u64) -> f64 {
    ticks as f64 * 1000.0 / freq.max(1) as f64
}

/// Send one command line to the VMM; returns its one-line JSON answer.
fn ask(socket: &str, cmd: &str) -> Result<String, String> {
    let mut s = UnixStream::connect(socket).map_err(|e| format!("connect {socket}: {e}"))?;
    s.write_all(format!("{cmd}\n").as_bytes())
        .map_err(|e| format!("send: {e}"))?;
    let mut line = String::new();
    BufReader::new(s)
        .read_line(&mut line)
        .map_err(|e| format!("receive: {e}"))?;
    if line.is_empty() {
        return Err("the VMM closed the connection".into());
    }
    Ok(line)
}

fn status(socket: &str) -> Result<StatusReply, String> {
    serde_json::from_str(&ask(socket, "status")?).map_err(|e| format!("status reply: {e}"))
}

fn print_status(what: &str, s: &Status) {
    println!(
        "LU-VMM event={what} counter={} ticks={} passes={} bad_passes={} other_irqs={} \
         cntfrq={} max_gap={} fault={}",
        s.counter, s.ticks, s.passes, s.bad_passes, s.other_irqs, s.cntfrq, s.max_gap, s.fault
    );
}

fn cmd_start(args: &[String]) -> Result<bool, String> {
    let o = parse_opts(args)?;
    let exe = std::env::current_exe().map_err(|e| format!("own path: {e}"))?;
    let mut child = std::process::Command::new(exe)
        .arg("serve")
        .args(args)
        .stdin(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("starting the VMM: {e}"))?;
    let t0 = Instant::now();
    loop {
        if let Some(st) = child.try_wait().map_err(|e| format!("VMM: {e}"))? {
            return Err(format!("the VMM exited: {st}"));
        }
        if let Ok(r) = status(&o.socket) {
            if let Some(e) = r.error {
                return Err(e);
            }
            if r.guest.running() && r.guest.counter > 0 {
                break;
            }
        }
        if t0.elapsed() > Duration::from_secs(60) {
            return Err("the guest did not start counting within 60 s".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(o.run_ms));
    let r = status(&o.socket)?;
    println!(
        "lu-vmm: VMM pid {} runs the guest: counter {}, {} timer ticks, {} region checks",
        child.id(),
        r.guest.counter,
        r.guest.ticks,
        r.guest.passes
    );
    print_status("started", &r.guest);
    Ok(r.error.is_none() && r.guest.fault == 0)
}

fn cmd_status(args: &[String]) -> Result<bool, String> {
    let o = parse_opts(args)?;
    let r = status(&o.socket)?;
    println!("lu-vmm: {} {:?}", r.state, r.guest);
    print_status(&r.state, &r.guest);
    Ok(r.error.is_none())
}

fn cmd_update(args: &[String]) -> Result<bool, String> {
    let o = parse_opts(args)?;
    let r: UpdateReply = serde_json::from_str(&ask(&o.socket, &format!("update {}", o.session))?)
        .map_err(|e| format!("update reply: {e}"))?;
    if let Some(e) = r.error {
        return Err(e);
    }
    let f = r.host_freq;
    // The guest's last clock read, on the host's clock.
    let last = r.guest_last_cnt.wrapping_add(r.host_minus_guest);
    println!(
        "lu-vmm: paused at counter {} ({} ticks); {} ({} bytes) and guest RAM preserved \
         in session '{}' in {:.1} ms",
        r.counter,
        r.ticks,
        r.saved,
        r.state_bytes,
        o.session,
        ms(r.host_preserved.wrapping_sub(r.host_request), f)
    );
    println!(
        "LU-VMM event=saved counter={} ticks={} passes={} guest_last_cnt={} host_minus_guest={} \
         host_freq={f} host_request={} host_paused={} host_saved={} host_preserved={} \
         guest_last_host={last} state_bytes={} pause_save_ms={:.3}",
        r.counter,
        r.ticks,
        r.passes,
        r.guest_last_cnt,
        r.host_minus_guest,
        r.host_request,
        r.host_paused,
        r.host_saved,
        r.host_preserved,
        r.state_bytes,
        ms(r.host_preserved.wrapping_sub(last), f)
    );
    Ok(true)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rest = args.get(1..).unwrap_or_default();
    let res = match args.first().map(String::as_str) {
        Some("start") => cmd_start(rest),
        Some("status") => cmd_status(rest),
        Some("update") => cmd_update(rest),
        Some("serve") => vmm::serve(rest).map(|_| true),
        // `--restore`: the spelling of the issue that asked for it.
        Some("restore" | "--restore") => vmm::restore(rest),
        _ => {
            eprintln!("usage: lu-vmm start|status|update|restore|serve [options] (see the source)");
            return ExitCode::from(2);
        }
    };
    match res {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            println!("LU-VMM event=error error=\"{e}\"");
            eprintln!("lu-vmm: {e}");
            ExitCode::FAILURE
        }
    }
}

mod vmm {
    use super::*;
    use crate::arch::{host_ticks, Vm, CLOCK};
    use crate::guest::{checksum, REGION_OFF};
    use crate::snapshot::{Snapshot, MAX_RAM, MIN_RAM};
    use crate::vcpu::Machine;
    use liveupdate::named::{self, NamedSession};
    use liveupdate::{memfd, Device, OutgoingSession};
    use std::os::fd::OwnedFd;
    use std::os::unix::net::UnixListener;

    /// A failed update leaves the guest running, as if it had not been asked.
    fn update(
        vm: &mut Vm,
        ram: &OwnedFd,
        session: &str,
    ) -> Result<(UpdateReply, OutgoingSession), String> {
        let host_request = host_ticks();
        vm.pause()?;
        let host_paused = host_ticks();
        let saved = (|| {
            let snap = vm.save(host_paused)?;
            let bytes = snap.to_bytes();
            let state = memfd::create("lu-vmm-state", bytes.len() as u64)
                .map_err(|e| format!("state memfd: {e}"))?;
            let mut done = 0;
            while done < bytes.len() {
                done += rustix::io::pwrite(&state, &bytes[done..], done as u64)
                    .map_err(|e| format!("writing the state: {e}"))?;
            }
            let dev = Device::open().map_err(|e| e.to_string())?;
            let mut named =
                NamedSession::new(dev.create_session(session).map_err(|e| e.to_string())?);
            named.preserve("ram", ram).map_err(|e| e.to_string())?;
            named.preserve("state", &state).map_err(|e| e.to_string())?;
            let out = named.commit().map_err(|e| e.to_string())?;
            Ok::<_, String>((snap, bytes.len(), out))
        })();
        let (snap, state_bytes, out) = match saved {
            Ok(v) => v,
            Err(e) => {
                return Err(match vm.resume() {
                    Ok(()) => format!("{e} (the guest runs on)"),
                    Err(r) => format!("{e}; resuming the guest failed too: {r}"),
                });
            }
        };
        let reply = UpdateReply {
            error: None,
            counter: snap.guest.counter,
            ticks: snap.guest.ticks,
            passes: snap.guest.passes,
            guest_last_cnt: snap.guest.last_cnt,
            host_minus_guest: snap.host_cnt.wrapping_sub(snap.guest_cnt),
            host_freq: snap.host_freq,
            host_request,
            host_paused,
            host_saved: snap.host_saved,
            host_preserved: host_ticks(),
            saved: snap.arch.describe(),
            state_bytes,
        };
        Ok((reply, out))
    }

    pub fn serve(args: &[String]) -> Result<(), String> {
        let o = parse_opts(args)?;
        let ram_size = o
            .mem_mib
            .checked_mul(1 << 20)
            .filter(|s| (MIN_RAM..=MAX_RAM).contains(s))
            .ok_or_else(|| format!("--mem-mib {} is out of range", o.mem_mib))?;
        let region = o
            .region_kib
            .checked_mul(1 << 10)
            .ok_or_else(|| format!("--region-kib {} is out of range", o.region_kib))?;
        let ram = memfd::create("lu-vmm-ram", ram_size).map_err(|e| format!("RAM memfd: {e}"))?;
        let mut vm = Vm::boot(&ram, ram_size, o.seed, region)?;
        let _ = std::fs::remove_file(&o.socket);
        let listener = UnixListener::bind(&o.socket).map_err(|e| format!("{}: {e}", o.socket))?;
        vm.resume()?;
        println!(
            "lu-vmm: VMM {} runs a guest with {} MiB of RAM (a memfd), region {} KiB, seed {:#x}",
            std::process::id(),
            o.mem_mib,
            o.region_kib,
            o.seed
        );
        // Held from a successful update until the kexec.
        let mut held: Option<OutgoingSession> = None;
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            // A client that sends nothing must not hold up the VMM's control.
            if conn.set_read_timeout(Some(Duration::from_secs(5))).is_err() {
                continue;
            }
            let mut line = String::new();
            if BufReader::new(&conn).read_line(&mut line).is_err() {
                continue;
            }
            let mut words = line.split_whitespace();
            let reply = match (words.next(), words.next()) {
                (Some("status"), None) => {
                    let (state, mut error) = match (&held, vm.running()) {
                        (Some(_), _) => ("saved", None),
                        (None, true) => ("running", None),
                        (None, false) => ("stopped", Some("the vCPU stopped".to_string())),
                    };
                    let guest = vm.ram().status().unwrap_or_else(|e| {
                        error = Some(e);
                        Status::default()
                    });
                    serde_json::to_string(&StatusReply {
                        state: state.into(),
                        guest,
                        error,
                    })
                }
                (Some("update"), Some(name)) => {
                    let r = if held.is_some() {
                        Err("updated already: the session is held until the kexec".into())
                    } else {
                        update(&mut vm, &ram, name)
                    };
                    serde_json::to_string(&match r {
                        Ok((r, session)) => {
                            held = Some(session);
                            r
                        }
                        Err(e) => UpdateReply {
                            error: Some(e),
                            ..Default::default()
                        },
                    })
                }
                _ => serde_json::to_string(&UpdateReply {
                    error: Some(format!("bad command {:?}", line.trim())),
                    ..Default::default()
                }),
            };
            let _ = conn.write_all(reply.unwrap_or_default().as_bytes());
            let _ = conn.write_all(b"\n");
        }
        Ok(())
    }

    /// Why the restored guest is not the one that was saved (empty: it is).
    fn check(
        snap: &Snapshot,
        before: &Status,
        after: &Status,
        resumed_cnt: u64,
        bad_words: usize,
    ) -> Vec<String> {
        let g = &snap.guest;
        let mut bad = Vec::new();
        let mut want = |ok: bool, what: String| {
            if !ok {
                bad.push(what);
            }
        };
        want(
            before == g,
            format!("guest status after the kexec {before:?}, saved {g:?}"),
        );
        want(
            bad_words == 0,
            format!("{bad_words} words of the region differ from the pattern"),
        );
        want(
            after.fault == 0,
            format!(
                "the guest took exception {} (ESR {:#x} at {:#x})",
                after.fault, after.fault_esr, after.fault_elr
            ),
        );
        want(
            after.counter > g.counter,
            format!(
                "counter {} after, {} at the pause",
                after.counter, g.counter
            ),
        );
        // The guest's last clock read before the pause is the one in RAM or, when the vCPU
        // stopped between reading and storing it, a later one still in a register; either way
        // no later than the VMM's own read of the guest's counter after the pause. Its first
        // read after the resume is no earlier than the count the VMM set.
        want(
            (g.last_cnt..=snap.guest_cnt).contains(&after.gap_before),
            format!(
                "the guest's longest gap starts at {}, not between its last stored read \
                      before the pause ({}) and the count after it ({})",
                after.gap_before, g.last_cnt, snap.guest_cnt
            ),
        );
        want(
            after.gap_after >= resumed_cnt,
            format!(
                "the guest's longest gap ends at {}, before it resumed at {resumed_cnt}",
                after.gap_after
            ),
        );
        want(
            after.gap_counter == g.counter || Some(after.gap_counter) == g.counter.checked_add(1),
            format!(
                "the gap ended at counter {}, the pause was at {}",
                after.gap_counter, g.counter
            ),
        );
        want(
            after.ticks > g.ticks,
            format!(
                "timer ticks {} after, {} at the pause",
                after.ticks, g.ticks
            ),
        );
        want(
            after.passes > g.passes && after.bad_passes == 0,
            format!(
                "region checks {} ({} bad) after, {} at the pause",
                after.passes, after.bad_passes, g.passes
            ),
        );
        want(
            after.expected == g.expected && after.last_sum == g.expected,
            format!(
                "region checksum {:#x} (expected {:#x}), saved {:#x}",
                after.last_sum, after.expected, g.expected
            ),
        );
        bad
    }

    pub fn restore(args: &[String]) -> Result<bool, String> {
        let o = parse_opts(args)?;
        let host_start = host_ticks();
        let dev = Device::open().map_err(|e| e.to_string())?;
        let session = dev
            .retrieve_session(&o.session)
            .map_err(|e| e.to_string())?;
        let (_, mut fds) = named::retrieve_all(&session).map_err(|e| e.to_string())?;
        session.finish().map_err(|e| e.to_string())?;
        let mut take = |name: &str| -> Result<OwnedFd, String> {
            fds.iter()
                .position(|(n, _)| n == name)
                .map(|i| fds.swap_remove(i).1)
                .ok_or_else(|| format!("session '{}' has no '{name}'", o.session))
        };
        let ram = take("ram")?;
        let state = take("state")?;
        let bytes = memfd::read_all(&state).map_err(|e| format!("reading the state: {e}"))?;
        let ram_size = memfd::size(&ram).map_err(|e| format!("RAM memfd: {e}"))?;
        let snap = Snapshot::parse(&bytes, ram_size)?;
        let (mut vm, resumed_cnt) = Vm::restore(&ram, &snap)?;
        let before = vm.ram().status()?;
        let g = &snap.guest;
        let words = vm.ram().words(REGION_OFF, g.region_len)?;
        let bad_words = words
            .iter()
            .enumerate()
            .filter(|&(i, &w)| w != memfd::pattern(g.seed, i as u64 * 8))
            .count();
        let sum = checksum(words.iter().copied());
        let host_restored = host_ticks();
        vm.resume()?;
        std::thread::sleep(Duration::from_millis(o.run_ms));
        vm.pause()?;
        let host_end = host_ticks();
        let after = vm.ram().status()?;
        let f = snap.host_freq;
        let off = snap.host_cnt.wrapping_sub(snap.guest_cnt);
        let last_host = after.gap_before.wrapping_add(off);
        let first_host = after.gap_after.wrapping_add(off);
        let mut bad = check(&snap, &before, &after, resumed_cnt, bad_words);
        if sum != g.expected {
            bad.push(format!(
                "region checksum {sum:#x} in RAM, the guest's {:#x}",
                g.expected
            ));
        }
        // The guest's clock must show the pause: no shorter than the host was away from it,
        // no longer than the host's time from the pause to now.
        let guest_gap = after.gap_after.wrapping_sub(after.gap_before);
        let host_down = host_start.wrapping_sub(snap.host_paused);
        let host_since = host_end.wrapping_sub(snap.host_paused);
        if after.gap_after <= after.gap_before || !(host_down..=host_since).contains(&guest_gap) {
            bad.push(format!(
                "the guest's clock went from {} to {} over the pause; the host was away for \
                 {host_down} ticks, {host_since} have passed since the pause",
                after.gap_before, after.gap_after
            ));
        }
        println!(
            "lu-vmm: restored {}; guest RAM {} MiB with region \
             checksum {sum:#x} ({bad_words} bad words); resumed for {} ms",
            snap.arch.describe(),
            ram_size >> 20,
            o.run_ms
        );
        println!(
            "lu-vmm: guest counter {} at the pause, {} after; timer ticks {} -> {}; \
             the guest's clock ({CLOCK}) shows a pause of {:.1} ms",
            g.counter,
            after.counter,
            g.ticks,
            after.ticks,
            ms(guest_gap, after.cntfrq)
        );
        println!(
            "LU-VMM event=restored counter_saved={} counter_restored={} counter_after={} \
             gap_counter={} ticks_saved={} ticks_after={} passes_saved={} passes_after={} \
             bad_passes={} region_sum={sum:#x} bad_words={bad_words} guest_gap={guest_gap} \
             cntfrq={} host_freq={f} host_start={host_start} host_restored={host_restored} \
             guest_last_host={last_host} guest_first_host={first_host} host_saved={} \
             guest_pause_ms={:.3} restore_ms={:.3} restore_resume_ms={:.3} checks={}",
            g.counter,
            before.counter,
            after.counter,
            after.gap_counter,
            g.ticks,
            after.ticks,
            g.passes,
            after.passes,
            after.bad_passes,
            after.cntfrq,
            snap.host_saved,
            ms(guest_gap, after.cntfrq),
            ms(host_restored.wrapping_sub(host_start), f),
            ms(first_host.wrapping_sub(host_start), f),
            if bad.is_empty() { "ok" } else { "FAIL" }
        );
        for b in &bad {
            println!("LU-VMM check=FAIL what=\"{b}\"");
        }
        Ok(bad.is_empty())
    }
}
