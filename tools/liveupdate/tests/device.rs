// SPDX-License-Identifier: GPL-2.0
//! The crate against a real `/dev/liveupdate`.
//!
//! These need a kernel with LUO enabled and are ignored by a plain `cargo test`; `lu test` runs
//! them in its VMs, on both kernel flavors, with `--include-ignored --test-threads=1` (the
//! device admits one opener at a time).

use liveupdate::named::NamedSession;
use liveupdate::{memfd, sys, Device, ErrorKind, Token};

const NEEDS: &str = "needs /dev/liveupdate: run by `lu test` in a VM";

fn kind<T: std::fmt::Debug>(r: liveupdate::Result<T>) -> ErrorKind {
    r.unwrap_err().kind()
}

#[test]
#[ignore = "needs /dev/liveupdate: run by `lu test` in a VM"]
fn open_is_exclusive() {
    let _ = NEEDS;
    let dev = Device::open().unwrap();
    assert_eq!(kind(Device::open()), ErrorKind::Busy);
    drop(dev);
    Device::open().unwrap();
}

#[test]
#[ignore = "needs /dev/liveupdate: run by `lu test` in a VM"]
fn sessions_and_names() {
    let dev = Device::open().unwrap();
    let s = dev.create_session("crate-a").unwrap();
    assert_eq!(s.kernel_name().unwrap(), "crate-a");
    assert_eq!(
        kind(dev.create_session("crate-a")),
        ErrorKind::SessionExists
    );
    let long = "n".repeat(63);
    let s2 = dev.create_session(&long).unwrap();
    assert_eq!(s2.kernel_name().unwrap(), long);
    assert_eq!(kind(dev.create_session("")), ErrorKind::InvalidName);
    assert_eq!(
        kind(dev.create_session(&"n".repeat(64))),
        ErrorKind::InvalidName
    );
    // Closing a session frees its name.
    drop(s);
    drop(dev.create_session("crate-a").unwrap());
    // Nothing was preserved by the previous kernel under this name.
    assert_eq!(
        kind(dev.retrieve_session("crate-none")),
        ErrorKind::SessionNotFound
    );
}

/// Whether the running kernel is this project's Rust one (`LOCALVERSION` `-lu-rust`, or
/// `-lu-rust-debug` for its debug build): only it has `LIVEUPDATE_SESSION_UNPRESERVE_FD`;
/// upstream's C (`-lu-c`, `-lu-c-debug`) fails it with `EINVAL`.
fn kernel_is_rust() -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let release = release.trim_end();
    release.ends_with("-lu-rust") || release.ends_with("-lu-rust-debug")
}

#[test]
#[ignore = "needs /dev/liveupdate: run by `lu test` in a VM"]
fn unpreserve() {
    let dev = Device::open().unwrap();
    let a = dev.create_session("crate-u1").unwrap();
    let b = dev.create_session("crate-u2").unwrap();
    let m = memfd::create("m", 8192).unwrap();
    a.preserve(&m, Token(1)).unwrap();
    let r = a.unpreserve(Token(1));
    if !kernel_is_rust() {
        let e = r.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotSupportedByKernel);
        assert_eq!(e.raw_os_error(), Some(22));
        return;
    }
    r.unwrap();
    // Unpreserved: the size is no longer frozen, the token and the memfd are free again.
    rustix::fs::ftruncate(&m, 4096).unwrap();
    let e = a.unpreserve(Token(1)).unwrap_err();
    assert_eq!(
        (e.kind(), e.raw_os_error()),
        (ErrorKind::TokenNotFound, Some(2))
    );
    b.preserve(&m, Token(1)).unwrap();
    assert_eq!(kind(a.preserve(&m, Token(1))), ErrorKind::AlreadyPreserved);
    b.unpreserve(Token(1)).unwrap();
    a.preserve(&m, Token(1)).unwrap();
    // Named: the fd leaves the session and the manifest.
    let mut named = NamedSession::new(b);
    let m2 = memfd::create("m2", 4096).unwrap();
    let t = named.preserve("keep", &m2).unwrap();
    let t2 = named
        .preserve("drop", memfd::create("m3", 4096).unwrap())
        .unwrap();
    assert_eq!((t, t2), (Token(1), Token(2)));
    assert_eq!(named.unpreserve("drop").unwrap(), Token(2));
    assert_eq!(kind(named.unpreserve("drop")), ErrorKind::TokenNotFound);
    named.commit().unwrap();
}

#[test]
#[ignore = "needs /dev/liveupdate: run by `lu test` in a VM"]
fn preserve_errors() {
    let dev = Device::open().unwrap();
    let a = dev.create_session("crate-p1").unwrap();
    let b = dev.create_session("crate-p2").unwrap();
    let m = memfd::create("m", 8192).unwrap();
    let m2 = memfd::create("m2", 4096).unwrap();
    a.preserve(&m, Token(1)).unwrap();
    assert_eq!(kind(a.preserve(&m2, Token(1))), ErrorKind::TokenInUse);
    assert_eq!(kind(a.preserve(&m, Token(2))), ErrorKind::AlreadyPreserved);
    assert_eq!(kind(b.preserve(&m, Token(1))), ErrorKind::AlreadyPreserved);
    // Tokens are per session.
    b.preserve(&m2, Token(1)).unwrap();
    let null = std::fs::File::open("/dev/null").unwrap();
    let e = a.preserve(&null, Token(3)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported);
    assert_eq!(e.raw_os_error(), Some(2));
    // A preserved memfd's size is frozen; its contents stay writable.
    assert!(rustix::fs::ftruncate(&m, 4096).is_err());
    memfd::fill(&m, 3).unwrap();
    assert_eq!(memfd::verify(&m, 3).unwrap().bad_words, 0);
    // Closing the session unpreserves: the memfd can go into another session.
    drop(a);
    b.preserve(&m, Token(2)).unwrap();
}

#[test]
#[ignore = "needs /dev/liveupdate: run by `lu test` in a VM"]
fn size_versioned_structs() {
    let dev = Device::open().unwrap();
    let mut arg = vec![0u8; 72];
    arg[..4].copy_from_slice(&72u32.to_ne_bytes());
    arg[8..13].copy_from_slice(b"crate");
    // Exactly the known size.
    let reply = sys::call_raw(&dev, sys::CREATE_SESSION, &arg).unwrap();
    let fd = i32::from_ne_bytes(reply[4..8].try_into().unwrap());
    assert!(fd >= 0);
    // A larger struct from newer userspace with a zero tail is accepted...
    let mut big = vec![0u8; 80];
    big[..4].copy_from_slice(&80u32.to_ne_bytes());
    big[8..14].copy_from_slice(b"crate2");
    sys::call_raw(&dev, sys::CREATE_SESSION, &big).unwrap();
    // ...but not with a non-zero tail, and never shorter than the first version.
    big[8..14].copy_from_slice(b"crate3");
    big[79] = 1;
    assert_eq!(
        sys::call_raw(&dev, sys::CREATE_SESSION, &big).unwrap_err(),
        rustix::io::Errno::TOOBIG
    );
    let mut small = arg.clone();
    small[..4].copy_from_slice(&71u32.to_ne_bytes());
    assert_eq!(
        sys::call_raw(&dev, sys::CREATE_SESSION, &small).unwrap_err(),
        rustix::io::Errno::INVAL
    );
    // A name without a NUL in its 64 bytes.
    let mut unterminated = arg.clone();
    unterminated[8..72].fill(b'x');
    assert_eq!(
        sys::call_raw(&dev, sys::CREATE_SESSION, &unterminated).unwrap_err(),
        rustix::io::Errno::INVAL
    );
}

#[test]
#[ignore = "needs /dev/liveupdate: run by `lu test` in a VM"]
fn named_session_commit() {
    let dev = Device::open().unwrap();
    let s = dev.create_session("crate-named").unwrap();
    let mut n = NamedSession::new(s);
    let m1 = memfd::create("a", 4096).unwrap();
    let m2 = memfd::create("b", 4096).unwrap();
    assert_eq!(n.preserve("ram", &m1).unwrap(), Token(1));
    assert_eq!(n.preserve("state", &m2).unwrap(), Token(2));
    assert_eq!(kind(n.preserve("ram", &m2)), ErrorKind::BadManifest);
    let s = n.commit().unwrap();
    // The manifest took token 0.
    let m3 = memfd::create("c", 4096).unwrap();
    assert_eq!(kind(s.preserve(&m3, Token(0))), ErrorKind::TokenInUse);
}
