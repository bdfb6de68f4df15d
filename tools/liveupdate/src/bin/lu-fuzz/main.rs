// SPDX-License-Identifier: GPL-2.0
//! lu-fuzz: a seeded, reproducible, syzkaller-style fuzzer of the LUO ioctls, run in the
//! test VMs.
//!
//! ```text
//! lu-fuzz stage1 --seed S --calls N [--threads T] [--upstream]
//! lu-fuzz stage2 --seed S --calls N [--threads T] [--upstream]
//! ```
//!
//! Stage 1 creates the kept sessions (memfds with a known pattern), fuzzes every ioctl from
//! several threads sharing one fd table and one pool of sessions, then hands the kept sessions
//! and the fuzzed ones still open to a holder process, which keeps issuing ioctls while init
//! kexecs (the ioctls must block, not break the handover). Stage 2, in the next kernel, checks
//! one kept session deterministically and fuzzes the retrieve side, checking the pattern of
//! every kept file it retrieves.
//!
//! Every result is checked against the header's documented set for the ioctl, the file and
//! the argument (`spec.rs`); anything else is printed as `LU-FUZZ unexpected ...` with the
//! seed, thread and call index. The run ends with `LU-FUZZ calls=N errors=E seed=S ...`.
//! With `--threads 1` a seed replays the same sequence of calls.

mod arena;
mod rng;
mod spec;
mod zoo;

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustix::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use rustix::fs::{open, Mode, OFlags};
use rustix::io::{Errno, FdFlags};

use arena::{Arena, Place, PAGE};
use rng::Rng;
use spec::{ArgInfo, Cmd, Target};
use zoo::{Kind, Zoo};

/// Kept sessions: session k holds files 0..=k (tokens KEPT_TOKEN + j) with a known pattern.
const KEPT_SESSIONS: u64 = 3;
const KEPT_TOKEN: u64 = 0x1000;
/// Session fds the pool holds at most (each thread's sessions pile up otherwise).
const POOL_MAX: usize = 24;
const RETRIEVED_MAX: usize = 8;
const RACY_SLOTS: usize = 4;
/// Unexpected results printed in full (all are counted).
const PRINT_MAX: u64 = 40;

fn kept_name(k: u64) -> String {
    format!("lu-fuzz-keep-{k}")
}

fn kept_seed(seed: u64, k: u64, j: u64) -> u64 {
    seed.wrapping_mul(31).wrapping_add(k * 7 + j)
}

fn kept_size(k: u64, j: u64) -> u64 {
    4096 * (1 + 3 * j + k)
}

/// The kept file behind (session name, token), if any: (pattern seed, size).
fn kept_file(seed: u64, name: &[u8], token: u64) -> Option<(u64, u64)> {
    let k = (0..KEPT_SESSIONS).find(|&k| kept_name(k).as_bytes() == name)?;
    let j = token.checked_sub(KEPT_TOKEN).filter(|&j| j <= k)?;
    Some((kept_seed(seed, k, j), kept_size(k, j)))
}

struct Entry {
    fd: Arc<OwnedFd>,
    target: Target,
    name: Vec<u8>,
}

#[derive(Default)]
struct Pool {
    entries: Vec<Entry>,
    retrieved: Vec<Arc<OwnedFd>>,
}

struct Shared {
    seed: u64,
    stage: u32,
    upstream: bool,
    calls: u64,
    next: AtomicU64,
    pool: Mutex<Pool>,
    racy: [AtomicI32; RACY_SLOTS],
    zoo: Zoo,
    /// [calls, successes] per ioctl (spec::NAMES), then opens and closes.
    counts: [[AtomicU64; 2]; 10],
    errors: AtomicU64,
    verified: AtomicU64,
    /// Where reports go: stdout, or /dev/kmsg in the holder.
    kmsg: Option<OwnedFd>,
    names: Vec<Vec<u8>>,
}

impl Shared {
    fn report(&self, what: std::fmt::Arguments<'_>) {
        let n = self.errors.fetch_add(1, Relaxed);
        if n >= PRINT_MAX {
            return;
        }
        let line = format!(
            "LU-FUZZ unexpected stage={} seed={} {what}\n",
            self.stage, self.seed
        );
        match &self.kmsg {
            Some(fd) => {
                let _ = rustix::io::write(fd, line.as_bytes());
            }
            None => print!("{line}"),
        }
    }

    fn count(&self, slot: usize, ok: bool) {
        self.counts[slot][0].fetch_add(1, Relaxed);
        if ok {
            self.counts[slot][1].fetch_add(1, Relaxed);
        }
    }
}

/// One thread's state.
struct Ctx {
    rng: Rng,
    arena: Arena,
    thread: usize,
    call: u64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Ioctl,
    OpenDevice,
    Close,
    Dup,
    RacyInstall,
    RacyClose,
}

fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, Pool> {
    shared.pool.lock().unwrap_or_else(|e| e.into_inner())
}

fn open_device() -> rustix::io::Result<OwnedFd> {
    open(
        liveupdate::DEVICE_PATH,
        OFlags::RDWR | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// An fd the kernel installed for us (the `fd` field of a successful reply).
fn adopt(fd: i32) -> Option<OwnedFd> {
    // SAFETY: called only with the fd field of a successful CREATE_SESSION,
    // RETRIEVE_SESSION or RETRIEVE_FD reply read back from our own memory: the kernel
    // installed that fd for us and nothing else owns it.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The session name bytes up to the NUL (the whole field if there is none).
fn c_name(field: &[u8]) -> &[u8] {
    &field[..field.iter().position(|&b| b == 0).unwrap_or(field.len())]
}

/// A 64-byte name field.
fn gen_name(rng: &mut Rng, names: &[Vec<u8>]) -> [u8; 64] {
    let mut f = [0u8; 64];
    match rng.below(10) {
        0 => {} // empty
        1 => f[..63].fill(b'L'),
        2 => f.fill(b'N'), // no NUL
        3 => f[..5].copy_from_slice(&[0xff, 0xfe, 0x80, b'x', 0xc3]),
        4 => {
            f[..3].copy_from_slice(b"fz-");
            f[4..10].copy_from_slice(b"after!");
        }
        5 => rng.fill(&mut f),
        _ => {
            let n = rng.pick(names);
            f[..n.len()].copy_from_slice(n);
        }
    }
    f
}

fn gen_token(rng: &mut Rng) -> u64 {
    match rng.below(8) {
        0 => 0,
        1 => u64::MAX,
        2 => rng.next_u64(),
        3 => KEPT_TOKEN + rng.below(KEPT_SESSIONS),
        _ => 1 + rng.below(8),
    }
}

/// The `size` field and the length of the bytes written for a struct of `s` bytes.
fn gen_size(rng: &mut Rng, s: usize) -> (u32, bool) {
    let s32 = s as u32;
    match rng.below(40) {
        0 => (0, false),
        1 => (1, false),
        2 => (4, false),
        3 => (s32 - 1, false),
        4 => (s32.saturating_sub(8).max(4), false),
        5..=8 => (s32 + 8 * (1 + rng.below(8) as u32), false),
        9..=11 => (s32 + 1 + rng.below(64) as u32, true),
        12 => (rng.next_u64() as u32, rng.chance(1, 2)),
        13 => (u32::MAX, false),
        14 => (PAGE as u32, false),
        15 => (PAGE as u32 * 2, false),
        _ => (s32, false),
    }
}

fn gen_place(rng: &mut Rng, arena: &Arena, len: usize, s: usize) -> Place {
    match rng.below(40) {
        0..=1 => Place::ReadOnly(0),
        2..=3 => Place::Straddle(rng.index(s)),
        4 => Place::Bad(arena.guard()),
        5..=6 => Place::Bad(*rng.pick(&arena::BAD_ADDRESSES)),
        7..=9 => {
            // Misaligned, still inside the page when the bytes fit.
            let room = PAGE.saturating_sub(len).max(1);
            Place::Rw(rng.index(room.min(64)))
        }
        _ => Place::Rw(0),
    }
}

/// A pool entry of one of `targets`, with its fd kept alive for the call.
fn pick_entry(
    shared: &Shared,
    rng: &mut Rng,
    targets: &[Target],
) -> Option<(Arc<OwnedFd>, Target, Vec<u8>)> {
    let pool = lock(shared);
    let c: Vec<&Entry> = pool
        .entries
        .iter()
        .filter(|e| targets.contains(&e.target))
        .collect();
    if c.is_empty() {
        return None;
    }
    let e = c[rng.index(c.len())];
    Some((e.fd.clone(), e.target, e.name.clone()))
}

fn add_entry(shared: &Shared, fd: OwnedFd, target: Target, name: Vec<u8>) {
    let mut pool = lock(shared);
    let sessions = pool.entries.len();
    if sessions < POOL_MAX {
        pool.entries.push(Entry {
            fd: Arc::new(fd),
            target,
            name,
        });
    }
    // Otherwise dropped here (closed) after the lock: one more close at a random point.
}

/// The fd field of PRESERVE_FD: (number, kind, what keeps it open during the call).
fn gen_fd(shared: &Shared, rng: &mut Rng) -> (i32, Kind, Option<OwnedFd>, Option<Arc<OwnedFd>>) {
    let kind = *rng.pick(&zoo::KINDS);
    if kind.may_preserve() && kind != Kind::Retrieved && rng.chance(1, 2) {
        if let Ok(fd) = zoo::fresh_memfd(kind, rng) {
            return (fd.as_raw_fd(), kind, Some(fd), None);
        }
    }
    match kind {
        Kind::Device | Kind::Session | Kind::Retrieved => {
            let held = if kind == Kind::Retrieved {
                let pool = lock(shared);
                (!pool.retrieved.is_empty())
                    .then(|| pool.retrieved[rng.index(pool.retrieved.len())].clone())
            } else {
                let t: &[Target] = if kind == Kind::Device {
                    &[Target::Device]
                } else {
                    &[Target::Outgoing, Target::Incoming]
                };
                pick_entry(shared, rng, t).map(|e| e.0)
            };
            match held {
                Some(fd) => (fd.as_raw_fd(), kind, None, Some(fd)),
                None => (-1, Kind::MinusOne, None, None),
            }
        }
        k => match shared.zoo.raw(k).or_else(|| shared.zoo.number(k)) {
            Some(n) => (n, k, None, None),
            None => (-1, Kind::MinusOne, None, None),
        },
    }
}

fn racy_number(shared: &Shared, rng: &mut Rng) -> i32 {
    let fd = shared.racy[rng.index(RACY_SLOTS)].load(Relaxed);
    if fd < 0 {
        shared.zoo.closed
    } else {
        fd
    }
}

fn errno_name(r: Result<(), Errno>) -> String {
    match r {
        Ok(()) => "ok".into(),
        Err(e) => format!("errno {} ({e})", e.raw_os_error()),
    }
}

/// One fuzzed ioctl.
fn do_ioctl(shared: &Shared, ctx: &mut Ctx) {
    let rng = &mut ctx.rng;
    // The file.
    let want = match rng.below(20) {
        0..=5 => Target::Device,
        6..=16 => Target::Outgoing,
        17 => Target::Foreign,
        _ => Target::Racy,
    };
    let (target, held, name, raw) = match want {
        Target::Foreign => {
            let (_, fd) = shared.zoo.foreign(rng);
            (Target::Foreign, None, Vec::new(), fd)
        }
        Target::Racy => (Target::Racy, None, Vec::new(), racy_number(shared, rng)),
        t => {
            let choices: &[Target] = if t == Target::Device {
                &[Target::Device]
            } else {
                &[Target::Outgoing, Target::Incoming]
            };
            match pick_entry(shared, rng, choices) {
                Some((fd, t, n)) => {
                    let raw = fd.as_raw_fd();
                    (t, Some(fd), n, raw)
                }
                None => {
                    if let Ok(fd) = open_device() {
                        add_entry(shared, fd, Target::Device, Vec::new());
                    }
                    return;
                }
            }
        }
    };
    // The command: mostly one that applies to the file.
    let cmd = match rng.below(20) {
        0 => Cmd::UnknownNr(*rng.pick(&[0x02, 0x03, 0x3f, 0x45, 0x46, 0x80, 0xff])),
        1 => Cmd::BadBits(
            *rng.pick(&[0x00, 0x01, 0x40, 0x41, 0x42, 0x43, 0x44]),
            1 + rng.below(0xffff) as u32,
        ),
        // Not type 0x00: FIBMAP and FIGETBSZ are _IO(0x00, 1) and _IO(0x00, 2), generic
        // ioctls of every file that succeed.
        2 => Cmd::WrongType(*rng.pick(&[0xbb, 0xb9, 0x3a, 0x7f]), rng.below(0x45) as u8),
        3..=5 => *rng.pick(&spec::KNOWN),
        _ => match target {
            Target::Device => *rng.pick(&[Cmd::Create, Cmd::Create, Cmd::RetrieveSession]),
            Target::Incoming => *rng.pick(&[
                Cmd::RetrieveFd,
                Cmd::RetrieveFd,
                Cmd::RetrieveFd,
                Cmd::Finish,
                Cmd::GetName,
            ]),
            _ => *rng.pick(&[
                Cmd::Preserve,
                Cmd::Preserve,
                Cmd::Preserve,
                Cmd::Unpreserve,
                Cmd::GetName,
            ]),
        },
    };
    // The argument.
    let s = cmd.struct_size();
    let (size, tail_nonzero) = gen_size(rng, s);
    let len = (size as usize).max(s).min(PAGE);
    let mut bytes = vec![0u8; len];
    bytes[..4].copy_from_slice(&size.to_ne_bytes());
    let mut info = ArgInfo {
        size,
        tail_nonzero: false,
        reserved_nonzero: false,
        name_valid: true,
        fd_may_preserve: true,
    };
    let mut fresh = None;
    let mut held_fd = None;
    let mut token = 0;
    let mut fd_kind = Kind::MinusOne;
    match cmd {
        Cmd::Create | Cmd::RetrieveSession | Cmd::WrongType(..) | Cmd::UnknownNr(_) => {
            bytes[4..8].copy_from_slice(&(rng.next_u64() as i32).to_ne_bytes());
            let n = gen_name(rng, &shared.names);
            info.name_valid = n[0] != 0 && n.contains(&0);
            bytes[8..72].copy_from_slice(&n);
        }
        Cmd::Preserve | Cmd::RetrieveFd | Cmd::BadBits(..) => {
            let (fd, kind, f, h) = gen_fd(shared, rng);
            fd_kind = kind;
            fresh = f;
            held_fd = h;
            info.fd_may_preserve = kind.may_preserve() || !kind.stable();
            token = gen_token(rng);
            bytes[4..8].copy_from_slice(&fd.to_ne_bytes());
            bytes[8..16].copy_from_slice(&token.to_ne_bytes());
        }
        Cmd::Finish | Cmd::GetName | Cmd::Unpreserve => {
            if rng.chance(1, 10) {
                let r = 1 + rng.below(u64::from(u32::MAX)) as u32;
                bytes[4..8].copy_from_slice(&r.to_ne_bytes());
                info.reserved_nonzero = true;
            }
            if cmd == Cmd::Unpreserve {
                token = gen_token(rng);
                bytes[8..16].copy_from_slice(&token.to_ne_bytes());
            } else if cmd == Cmd::GetName && rng.chance(1, 4) {
                rng.fill(&mut bytes[8..72]);
            }
        }
    }
    if tail_nonzero && len > s {
        let i = s + rng.index(len - s);
        bytes[i] = 1 + rng.below(255) as u8;
        info.tail_nonzero = true;
    }
    let place = gen_place(rng, &ctx.arena, len, s);
    let addr = ctx.arena.place(place, &bytes);
    let r = if target == Target::Racy {
        arena::ioctl_raw_number(raw, cmd.opcode(), addr)
    } else {
        let fd = held.as_ref().map(|f| f.as_fd());
        match fd {
            Some(fd) => arena::ioctl_raw(fd, cmd.opcode(), addr),
            None => arena::ioctl_raw_number(raw, cmd.opcode(), addr),
        }
    };
    drop(fresh);
    drop(held_fd);
    shared.count(cmd.slot(), r.is_ok());
    let exp = spec::expect(cmd, target, &info, place, shared.upstream);
    let mut problem = String::new();
    if !exp.allows(r) {
        let _ = write!(problem, "result {} not in {:?}", errno_name(r), exp);
    }
    if let (Ok(()), Place::Rw(off)) = (r, place) {
        problem += &after_success(
            shared,
            cmd,
            target,
            &name,
            token,
            ctx.arena.read_rw(off, 72),
        );
    }
    if !problem.is_empty() {
        shared.report(format_args!(
            "thread={} call={} cmd={cmd:?} target={target:?} name={:?} place={} size={size} \
             tail_nonzero={} fd_kind={fd_kind:?} token={token:#x}: {problem}",
            ctx.thread,
            ctx.call,
            String::from_utf8_lossy(&name),
            place.label(),
            info.tail_nonzero,
        ));
    }
}

/// Bookkeeping and checks of a successful call whose reply is in `reply`.
fn after_success(
    shared: &Shared,
    cmd: Cmd,
    target: Target,
    name: &[u8],
    token: u64,
    reply: Vec<u8>,
) -> String {
    let mut problem = String::new();
    if cmd.returns_fd() {
        let raw = i32::from_ne_bytes(reply[4..8].try_into().unwrap());
        let Some(fd) = adopt(raw) else {
            return format!("success with fd {raw}");
        };
        match rustix::io::fcntl_getfd(&fd) {
            Ok(f) if f.contains(FdFlags::CLOEXEC) => {}
            other => problem += &format!("returned fd {raw} not O_CLOEXEC ({other:?}); "),
        }
        match cmd {
            Cmd::Create | Cmd::RetrieveSession => {
                let t = if cmd == Cmd::Create {
                    Target::Outgoing
                } else {
                    Target::Incoming
                };
                add_entry(shared, fd, t, c_name(&reply[8..72]).to_vec());
            }
            _ => {
                if let Some((seed, size)) = kept_file(shared.seed, name, token) {
                    problem += &verify(shared, &fd, seed, size);
                }
                let mut pool = lock(shared);
                if pool.retrieved.len() >= RETRIEVED_MAX {
                    pool.retrieved.remove(0);
                }
                pool.retrieved.push(Arc::new(fd));
            }
        }
    } else if cmd == Cmd::GetName && target != Target::Racy && !name.is_empty() {
        // (The holder's carried sessions come without their names.)
        let got = c_name(&reply[8..72]);
        if got != name {
            problem += &format!("GET_NAME returned {:?}", String::from_utf8_lossy(got));
        }
    }
    problem
}

/// Check a retrieved kept file; "" if it is right.
fn verify(shared: &Shared, fd: &OwnedFd, seed: u64, size: u64) -> String {
    match liveupdate::memfd::verify(fd, seed) {
        Ok(v) if v.bytes == size && v.bad_words == 0 => {
            shared.verified.fetch_add(1, Relaxed);
            String::new()
        }
        Ok(v) => format!(
            "kept file: {} bytes (want {size}), {} bad words from {:?}; ",
            v.bytes, v.bad_words, v.first_bad
        ),
        Err(e) => format!("kept file: verify failed: {e}; "),
    }
}

fn step(shared: &Shared, ctx: &mut Ctx) {
    let op = ctx.rng.weighted(&[
        (Op::Ioctl, 90),
        (Op::OpenDevice, 2),
        (Op::Close, 4),
        (Op::Dup, 2),
        (Op::RacyInstall, 1),
        (Op::RacyClose, 1),
    ]);
    match op {
        Op::Ioctl => do_ioctl(shared, ctx),
        Op::OpenDevice => {
            // Exclusive: EBUSY while any fd of ours (or of a racing close) has it open.
            let r = open_device();
            shared.count(8, r.is_ok());
            match r {
                Ok(fd) => add_entry(shared, fd, Target::Device, Vec::new()),
                Err(Errno::BUSY) => {}
                Err(e) => shared.report(format_args!(
                    "thread={} call={} open /dev/liveupdate: {e}",
                    ctx.thread, ctx.call
                )),
            }
        }
        Op::Close => {
            let victim = {
                let mut pool = lock(shared);
                if pool.entries.is_empty() {
                    None
                } else {
                    let i = ctx.rng.index(pool.entries.len());
                    Some(pool.entries.swap_remove(i))
                }
            };
            // The last reference closes the file: an outgoing session is unpreserved, an
            // incoming one finished, while other threads keep going.
            shared.count(9, victim.is_some());
            drop(victim);
        }
        Op::Dup => {
            if let Some((fd, t, n)) = pick_entry(
                shared,
                &mut ctx.rng,
                &[Target::Device, Target::Outgoing, Target::Incoming],
            ) {
                if let Ok(d) = rustix::io::fcntl_dupfd_cloexec(&*fd, 0) {
                    add_entry(shared, d, t, n);
                }
            }
        }
        Op::RacyInstall => {
            let slot = &shared.racy[ctx.rng.index(RACY_SLOTS)];
            if let Some((fd, ..)) = pick_entry(
                shared,
                &mut ctx.rng,
                &[Target::Device, Target::Outgoing, Target::Incoming],
            ) {
                if let Ok(d) = rustix::io::fcntl_dupfd_cloexec(&*fd, 0) {
                    let old = slot.swap(d.as_raw_fd(), Relaxed);
                    std::mem::forget(d);
                    if old >= 0 {
                        arena::close_raw(old);
                    }
                }
            }
        }
        Op::RacyClose => {
            let old = shared.racy[ctx.rng.index(RACY_SLOTS)].swap(-1, Relaxed);
            if old >= 0 {
                arena::close_raw(old);
            }
        }
    }
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

struct Opts {
    stage: String,
    seed: u64,
    calls: u64,
    threads: usize,
    upstream: bool,
    dir: String,
}

fn parse_args() -> Result<Opts, String> {
    let mut args = std::env::args().skip(1);
    let stage = args
        .next()
        .ok_or("usage: lu-fuzz stage1|stage2 --seed S --calls N")?;
    let mut o = Opts {
        stage,
        seed: 1,
        calls: 10000,
        threads: 4,
        upstream: false,
        dir: "/tmp".into(),
    };
    while let Some(a) = args.next() {
        let mut val = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--seed" => o.seed = parse_u64(&val()?)?,
            "--calls" => o.calls = parse_u64(&val()?)?,
            "--threads" => o.threads = parse_u64(&val()?)?.clamp(1, 64) as usize,
            "--dir" => o.dir = val()?,
            "--upstream" => o.upstream = true,
            _ => return Err(format!("unknown argument {a}")),
        }
    }
    Ok(o)
}

fn parse_u64(s: &str) -> Result<u64, String> {
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16),
        None => s.parse(),
    }
    .map_err(|e| format!("{s}: {e}"))
}

fn new_shared(o: &Opts, stage: u32, kmsg: Option<OwnedFd>) -> std::io::Result<Shared> {
    // Names the fuzz uses: a few shared ones (so they collide), and the kept ones (EEXIST in
    // stage 1; in stage 2 all but session 0, which is checked deterministically).
    let mut names: Vec<Vec<u8>> = (0..12).map(|i| format!("fz-{i}").into_bytes()).collect();
    let first = u64::from(stage == 2);
    names.extend((first..KEPT_SESSIONS).map(|k| kept_name(k).into_bytes()));
    let zoo = Zoo::new(&o.dir)?;
    if kmsg.is_none() {
        // 7 more kinds come from the pool or are numbers of no fd.
        println!(
            "LU-FUZZ fd kinds: {} opened + 7, missing {:?}",
            zoo.kinds(),
            zoo.missing
        );
    }
    Ok(Shared {
        seed: o.seed,
        stage,
        upstream: o.upstream,
        calls: o.calls,
        next: AtomicU64::new(0),
        pool: Mutex::new(Pool::default()),
        racy: std::array::from_fn(|_| AtomicI32::new(-1)),
        zoo,
        counts: Default::default(),
        errors: AtomicU64::new(0),
        verified: AtomicU64::new(0),
        kmsg,
        names,
    })
}

/// Run the fuzzing threads until `shared.calls` steps are done.
fn fuzz(shared: &Arc<Shared>, threads: usize) {
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let shared = shared.clone();
            std::thread::spawn(move || {
                let mut ctx = Ctx {
                    rng: Rng::new(shared.seed ^ (t as u64 + 1).wrapping_mul(0xA24B_AED4_963E_E407)),
                    arena: Arena::new().expect("mmap of the argument arena"),
                    thread: t,
                    call: 0,
                };
                loop {
                    let i = shared.next.fetch_add(1, Relaxed);
                    if i >= shared.calls {
                        break;
                    }
                    ctx.call = i;
                    step(&shared, &mut ctx);
                }
            })
        })
        .collect();
    for h in handles {
        if h.join().is_err() {
            shared.report(format_args!("a fuzzing thread panicked"));
        }
    }
}

/// Close what the fuzz left except the outgoing sessions (returned).
fn drain(shared: &Shared) -> Vec<OwnedFd> {
    for slot in &shared.racy {
        let old = slot.swap(-1, Relaxed);
        if old >= 0 {
            arena::close_raw(old);
        }
    }
    let mut pool = lock(shared);
    pool.retrieved.clear();
    std::mem::take(&mut pool.entries)
        .into_iter()
        .filter(|e| e.target == Target::Outgoing)
        .filter_map(|e| Arc::try_unwrap(e.fd).ok())
        .collect()
}

fn summary(shared: &Shared, threads: usize, t0: Instant) {
    let mut line = format!(
        "LU-FUZZ calls={} errors={} seed={} stage={} threads={threads} ms={}",
        shared.calls,
        shared.errors.load(Relaxed),
        shared.seed,
        shared.stage,
        t0.elapsed().as_millis()
    );
    let names = spec::NAMES.iter().copied().chain(["open", "close"]);
    for (name, c) in names.zip(&shared.counts) {
        let _ = write!(
            line,
            " {name}={}/{}",
            c[0].load(Relaxed),
            c[1].load(Relaxed)
        );
    }
    let _ = write!(line, " verified={}", shared.verified.load(Relaxed));
    println!("{line}");
}

/// Stage 1: kept sessions, fuzz, hand over to the holder.
fn stage1(o: &Opts) -> std::io::Result<bool> {
    let t0 = Instant::now();
    let dev = liveupdate::Device::open()?;
    let mut kept = Vec::new();
    for k in 0..KEPT_SESSIONS {
        let s = dev.create_session(&kept_name(k))?;
        for j in 0..=k {
            let m = liveupdate::memfd::create("lu-fuzz-kept", kept_size(k, j))?;
            liveupdate::memfd::fill(&m, kept_seed(o.seed, k, j))?;
            s.preserve(&m, liveupdate::Token(KEPT_TOKEN + j))?;
        }
        kept.push(s.into_fd());
    }
    drop(dev);
    let shared = Arc::new(new_shared(o, 1, None)?);
    let base = open_fds();
    fuzz(&shared, o.threads);
    let carried = drain(&shared);
    let after = open_fds();
    if after != base + carried.len() {
        shared.report(format_args!(
            "fd leak: {base} fds before, {after} after with {} sessions kept",
            carried.len()
        ));
    }
    summary(&shared, o.threads, t0);
    let n = carried.len();
    let pid = spawn_holder(o, kept, carried)?;
    println!("LU-FUZZ holder pid={pid} kept={KEPT_SESSIONS} carried={n}");
    Ok(shared.errors.load(Relaxed) == 0)
}

fn spawn_holder(o: &Opts, kept: Vec<OwnedFd>, carried: Vec<OwnedFd>) -> std::io::Result<u32> {
    let list = |v: &[OwnedFd]| -> std::io::Result<String> {
        let mut s = Vec::new();
        for fd in v {
            rustix::io::fcntl_setfd(fd, FdFlags::empty())?;
            s.push(fd.as_raw_fd().to_string());
        }
        Ok(s.join(","))
    };
    let mut args = vec![
        "hold".to_string(),
        "--seed".into(),
        o.seed.to_string(),
        "--dir".into(),
        o.dir.clone(),
    ];
    if o.upstream {
        args.push("--upstream".into());
    }
    let child = std::process::Command::new(std::env::current_exe()?)
        .args(args)
        .env("LU_FUZZ_KEPT", list(&kept)?)
        .env("LU_FUZZ_CARRIED", list(&carried)?)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    Ok(child.id())
}

fn env_fds(var: &str) -> Vec<OwnedFd> {
    std::env::var(var)
        .unwrap_or_default()
        .split(',')
        .filter_map(|s| s.parse::<i32>().ok())
        // SAFETY: the parent cleared close-on-exec on exactly these fds for us and closed
        // its copies; nothing else in this process owns them.
        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
        .collect()
}

/// The holder: keep the kept sessions (checking their names) and go on fuzzing the carried
/// ones, slowly, until init's reboot(KEXEC) freezes every ioctl and the kexec ends us.
fn hold(o: &Opts) -> std::io::Result<()> {
    rustix::process::setsid().ok();
    let kept = env_fds("LU_FUZZ_KEPT");
    let kmsg = open("/dev/kmsg", OFlags::WRONLY | OFlags::CLOEXEC, Mode::empty()).ok();
    let shared = Arc::new(new_shared(
        &Opts {
            calls: u64::MAX,
            ..Opts {
                stage: String::new(),
                dir: o.dir.clone(),
                ..*o
            }
        },
        1,
        kmsg,
    )?);
    {
        let mut pool = lock(&shared);
        for fd in env_fds("LU_FUZZ_CARRIED") {
            pool.entries.push(Entry {
                fd: Arc::new(fd),
                target: Target::Outgoing,
                name: Vec::new(),
            });
        }
    }
    let stop = AtomicBool::new(false);
    let mut ctx = Ctx {
        rng: Rng::new(o.seed ^ 0x401d),
        arena: Arena::new()?,
        thread: 99,
        call: 0,
    };
    while !stop.load(Relaxed) {
        ctx.call += 1;
        if ctx.call % 8 == 0 {
            // The kept sessions: GET_NAME never blocks, even during the reboot.
            let k = ctx.rng.index(kept.len());
            match liveupdate_name(&kept[k]) {
                Ok(n) if n == kept_name(k as u64).as_bytes() => {}
                other => shared.report(format_args!(
                    "holder: GET_NAME of kept session {k}: {other:?}"
                )),
            }
        } else {
            step(&shared, &mut ctx);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(())
}

fn liveupdate_name(fd: &OwnedFd) -> Result<Vec<u8>, Errno> {
    let mut a = Arena::new().map_err(|_| Errno::NOMEM)?;
    let mut bytes = [0u8; 72];
    bytes[..4].copy_from_slice(&72u32.to_ne_bytes());
    let addr = a.place(Place::Rw(0), &bytes);
    arena::ioctl_raw(fd.as_fd(), Cmd::GetName.opcode(), addr)?;
    Ok(c_name(&a.read_rw(8, 64)).to_vec())
}

/// Stage 2: check kept session 0, then fuzz the retrieve side.
fn stage2(o: &Opts) -> std::io::Result<bool> {
    let t0 = Instant::now();
    let shared = Arc::new(new_shared(o, 2, None)?);
    {
        let dev = liveupdate::Device::open()?;
        let s = dev.retrieve_session(&kept_name(0))?;
        let fd = s.retrieve(liveupdate::Token(KEPT_TOKEN))?;
        let p = verify(&shared, &fd, kept_seed(o.seed, 0, 0), kept_size(0, 0));
        if !p.is_empty() {
            shared.report(format_args!("session {}: {p}", kept_name(0)));
        }
        s.finish()?;
        println!("LU-FUZZ kept {} verified={}", kept_name(0), p.is_empty());
    }
    let base = open_fds();
    fuzz(&shared, o.threads);
    drop(drain(&shared));
    let after = open_fds();
    if after != base {
        shared.report(format_args!("fd leak: {base} fds before, {after} after"));
    }
    summary(&shared, o.threads, t0);
    Ok(shared.errors.load(Relaxed) == 0)
}

fn main() -> std::process::ExitCode {
    let o = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("lu-fuzz: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let r = match o.stage.as_str() {
        "stage1" => stage1(&o),
        "stage2" => stage2(&o),
        "hold" => hold(&o).map(|()| true),
        s => {
            eprintln!("lu-fuzz: unknown stage {s}");
            return std::process::ExitCode::from(2);
        }
    };
    match r {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(e) => {
            println!("LU-FUZZ error stage={} seed={}: {e}", o.stage, o.seed);
            std::process::ExitCode::FAILURE
        }
    }
}
