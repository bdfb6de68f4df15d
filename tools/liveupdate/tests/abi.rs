// SPDX-License-Identifier: GPL-2.0
//! Check the crate's struct layouts and command numbers against the kernel's uapi header.
//!
//! A small C program, compiled here against `linux/liveupdate.h`, prints what the C compiler
//! makes of the header; the test compares it with `liveupdate::sys`. The header is taken from
//! `$LIVEUPDATE_UAPI_INCLUDE` (a directory with `linux/liveupdate.h`, e.g. the output of
//! `make headers_install`), else from the kernel tree this crate sits in
//! (`tools/liveupdate/../../include/uapi`). Without either the test fails: it never passes
//! without having compared.

use liveupdate::sys;
use std::mem::{align_of, offset_of, size_of};
use std::path::PathBuf;
use std::process::Command;

const PROBE: &str = r#"
#include <stdio.h>
#include <stddef.h>
#include <linux/liveupdate.h>
#define S(t) printf("size " #t " %zu\n", sizeof(struct t)); \
	printf("align " #t " %zu\n", _Alignof(struct t));
#define O(t, f) printf("offset " #t "." #f " %zu\n", offsetof(struct t, f));
#define C(c) printf("cmd " #c " %u\n", (unsigned)(c));
int main(void)
{
	S(liveupdate_ioctl_create_session)
	O(liveupdate_ioctl_create_session, fd)
	O(liveupdate_ioctl_create_session, name)
	S(liveupdate_ioctl_retrieve_session)
	O(liveupdate_ioctl_retrieve_session, fd)
	O(liveupdate_ioctl_retrieve_session, name)
	S(liveupdate_session_preserve_fd)
	O(liveupdate_session_preserve_fd, fd)
	O(liveupdate_session_preserve_fd, token)
	S(liveupdate_session_retrieve_fd)
	O(liveupdate_session_retrieve_fd, fd)
	O(liveupdate_session_retrieve_fd, token)
	S(liveupdate_session_finish)
	O(liveupdate_session_finish, reserved)
	S(liveupdate_session_get_name)
	O(liveupdate_session_get_name, reserved)
	O(liveupdate_session_get_name, name)
	C(LIVEUPDATE_IOCTL_CREATE_SESSION)
	C(LIVEUPDATE_IOCTL_RETRIEVE_SESSION)
	C(LIVEUPDATE_SESSION_PRESERVE_FD)
	C(LIVEUPDATE_SESSION_RETRIEVE_FD)
	C(LIVEUPDATE_SESSION_FINISH)
	C(LIVEUPDATE_SESSION_GET_NAME)
#ifdef LIVEUPDATE_SESSION_UNPRESERVE_FD
	S(liveupdate_session_unpreserve_fd)
	O(liveupdate_session_unpreserve_fd, reserved)
	O(liveupdate_session_unpreserve_fd, token)
	C(LIVEUPDATE_SESSION_UNPRESERVE_FD)
#endif
	printf("const NAME_LENGTH %u\n", (unsigned)LIVEUPDATE_SESSION_NAME_LENGTH);
	return 0;
}
"#;

fn include_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("LIVEUPDATE_UAPI_INCLUDE") {
        return PathBuf::from(d);
    }
    let tree = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../include/uapi");
    assert!(
        tree.join("linux/liveupdate.h").exists(),
        "no linux/liveupdate.h: set LIVEUPDATE_UAPI_INCLUDE to a headers_install include dir"
    );
    tree
}

fn probe() -> Vec<(String, String, u64)> {
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let src = out.join("abi_probe.c");
    let exe = out.join("abi_probe");
    std::fs::write(&src, PROBE).unwrap();
    let inc = include_dir();
    let cc = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
        .arg("-I")
        .arg(&inc)
        .arg("-o")
        .arg(&exe)
        .arg(&src)
        .status()
        .expect("run the C compiler");
    assert!(
        cc.success(),
        "compiling the probe against {} failed",
        inc.display()
    );
    let text = String::from_utf8(Command::new(&exe).output().unwrap().stdout).unwrap();
    text.lines()
        .map(|l| {
            let mut w = l.split_whitespace();
            let (a, b, c) = (w.next().unwrap(), w.next().unwrap(), w.next().unwrap());
            (a.to_owned(), b.to_owned(), c.parse().unwrap())
        })
        .collect()
}

#[test]
fn layouts_match_the_header() {
    let c = probe();
    let get = |kind: &str, name: &str| -> u64 {
        c.iter()
            .find(|(k, n, _)| k == kind && n == name)
            .unwrap_or_else(|| panic!("probe printed no {kind} {name}"))
            .2
    };
    let rust: &[(&str, &str, usize)] = &[
        (
            "size",
            "liveupdate_ioctl_create_session",
            size_of::<sys::SessionArg>(),
        ),
        (
            "size",
            "liveupdate_ioctl_retrieve_session",
            size_of::<sys::SessionArg>(),
        ),
        (
            "size",
            "liveupdate_session_preserve_fd",
            size_of::<sys::FdArg>(),
        ),
        (
            "size",
            "liveupdate_session_retrieve_fd",
            size_of::<sys::FdArg>(),
        ),
        (
            "size",
            "liveupdate_session_finish",
            size_of::<sys::FinishArg>(),
        ),
        (
            "size",
            "liveupdate_session_get_name",
            size_of::<sys::GetNameArg>(),
        ),
        (
            "align",
            "liveupdate_ioctl_create_session",
            align_of::<sys::SessionArg>(),
        ),
        (
            "align",
            "liveupdate_ioctl_retrieve_session",
            align_of::<sys::SessionArg>(),
        ),
        (
            "align",
            "liveupdate_session_preserve_fd",
            align_of::<sys::FdArg>(),
        ),
        (
            "align",
            "liveupdate_session_retrieve_fd",
            align_of::<sys::FdArg>(),
        ),
        (
            "align",
            "liveupdate_session_finish",
            align_of::<sys::FinishArg>(),
        ),
        (
            "align",
            "liveupdate_session_get_name",
            align_of::<sys::GetNameArg>(),
        ),
        (
            "offset",
            "liveupdate_ioctl_create_session.fd",
            offset_of!(sys::SessionArg, fd),
        ),
        (
            "offset",
            "liveupdate_ioctl_create_session.name",
            offset_of!(sys::SessionArg, name),
        ),
        (
            "offset",
            "liveupdate_ioctl_retrieve_session.fd",
            offset_of!(sys::SessionArg, fd),
        ),
        (
            "offset",
            "liveupdate_ioctl_retrieve_session.name",
            offset_of!(sys::SessionArg, name),
        ),
        (
            "offset",
            "liveupdate_session_preserve_fd.fd",
            offset_of!(sys::FdArg, fd),
        ),
        (
            "offset",
            "liveupdate_session_preserve_fd.token",
            offset_of!(sys::FdArg, token),
        ),
        (
            "offset",
            "liveupdate_session_retrieve_fd.fd",
            offset_of!(sys::FdArg, fd),
        ),
        (
            "offset",
            "liveupdate_session_retrieve_fd.token",
            offset_of!(sys::FdArg, token),
        ),
        (
            "offset",
            "liveupdate_session_finish.reserved",
            offset_of!(sys::FinishArg, reserved),
        ),
        (
            "offset",
            "liveupdate_session_get_name.reserved",
            offset_of!(sys::GetNameArg, reserved),
        ),
        (
            "offset",
            "liveupdate_session_get_name.name",
            offset_of!(sys::GetNameArg, name),
        ),
        ("const", "NAME_LENGTH", sys::SESSION_NAME_LENGTH),
    ];
    for (kind, name, value) in rust {
        assert_eq!(get(kind, name), *value as u64, "{kind} of {name}");
    }
    let cmds: &[(&str, u32)] = &[
        ("LIVEUPDATE_IOCTL_CREATE_SESSION", sys::CREATE_SESSION),
        ("LIVEUPDATE_IOCTL_RETRIEVE_SESSION", sys::RETRIEVE_SESSION),
        ("LIVEUPDATE_SESSION_PRESERVE_FD", sys::PRESERVE_FD),
        ("LIVEUPDATE_SESSION_RETRIEVE_FD", sys::RETRIEVE_FD),
        ("LIVEUPDATE_SESSION_FINISH", sys::FINISH),
        ("LIVEUPDATE_SESSION_GET_NAME", sys::GET_NAME),
    ];
    for (name, value) in cmds {
        assert_eq!(get("cmd", name), u64::from(*value), "{name}");
    }
    // LIVEUPDATE_SESSION_UNPRESERVE_FD is not in Linux 7.3's header; compared where it is.
    let unpreserve: &[(&str, &str, u64)] = &[
        (
            "size",
            "liveupdate_session_unpreserve_fd",
            size_of::<sys::UnpreserveArg>() as u64,
        ),
        (
            "align",
            "liveupdate_session_unpreserve_fd",
            align_of::<sys::UnpreserveArg>() as u64,
        ),
        (
            "offset",
            "liveupdate_session_unpreserve_fd.reserved",
            offset_of!(sys::UnpreserveArg, reserved) as u64,
        ),
        (
            "offset",
            "liveupdate_session_unpreserve_fd.token",
            offset_of!(sys::UnpreserveArg, token) as u64,
        ),
        (
            "cmd",
            "LIVEUPDATE_SESSION_UNPRESERVE_FD",
            u64::from(sys::UNPRESERVE_FD),
        ),
    ];
    let has_unpreserve = c.iter().any(|(_, n, _)| n.contains("unpreserve"));
    if has_unpreserve {
        for (kind, name, value) in unpreserve {
            assert_eq!(get(kind, name), *value, "{kind} of {name}");
        }
    } else {
        eprintln!("the header has no LIVEUPDATE_SESSION_UNPRESERVE_FD (Linux 7.3): not compared");
    }
    // Every line the probe printed was compared.
    let extra = if has_unpreserve { unpreserve.len() } else { 0 };
    assert_eq!(c.len(), rust.len() + cmds.len() + extra);
}

/// The header of this tree (not the pristine one `lu test` may point the test above at) has
/// `LIVEUPDATE_SESSION_UNPRESERVE_FD`, laid out as `sys::UnpreserveArg`.
#[test]
fn unpreserve_in_this_tree() {
    let tree =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../include/uapi/linux/liveupdate.h");
    let Ok(h) = std::fs::read_to_string(&tree) else {
        eprintln!(
            "{} not found: the crate is built outside the kernel tree",
            tree.display()
        );
        return;
    };
    assert!(h.contains("LIVEUPDATE_CMD_SESSION_UNPRESERVE_FD = 0x44,"));
    assert!(h.contains(
        "struct liveupdate_session_unpreserve_fd {\n\t__u32\t\tsize;\n\t__u32\t\treserved;\n\t__aligned_u64\ttoken;\n};"
    ));
    assert_eq!(sys::UNPRESERVE_FD, 0xba44);
}
