/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */

/*
 * Userspace interface for /dev/liveupdate
 * Live Update Orchestrator
 *
 * Copyright (c) 2025, Google LLC.
 * Pasha Tatashin <pasha.tatashin@soleen.com>
 */

#ifndef _UAPI_LIVEUPDATE_H
#define _UAPI_LIVEUPDATE_H

#include <linux/ioctl.h>
#include <linux/types.h>

/**
 * DOC: General ioctl format
 *
 * The ioctl interface follows a general format to allow for extensibility. Each
 * ioctl is passed in a structure pointer as the argument providing the size of
 * the structure in the first u32. The kernel checks that any structure space
 * beyond what it understands is 0. This allows userspace to use the backward
 * compatible portion while consistently using the newer, larger, structures.
 *
 * ioctls use a standard meaning for common errnos:
 *
 *  - ENOTTY: The IOCTL number itself is not supported at all: a command
 *    number that the file (/dev/liveupdate or a session file descriptor)
 *    does not know, or a known number with another type byte or with
 *    size or direction bits set (every command is _IO()).
 *  - EFAULT: The structure, or the reply written back into it, is not
 *    accessible.
 *  - E2BIG: The IOCTL number is supported, but the provided structure has
 *    non-zero in a part the kernel does not understand.
 *  - EOPNOTSUPP: The IOCTL number is supported, and the structure is
 *    understood, however a known field has a value the kernel does not
 *    understand or support.
 *  - EINVAL: Everything about the IOCTL was understood, but a field is not
 *    correct, the size field is smaller than the structure the kernel
 *    knows, or the command does not apply to this kind of session
 *    (outgoing or incoming).
 *  - ENOENT: A provided name or token does not exist.
 *  - ENOMEM: Out of memory.
 *  - EOVERFLOW: Mathematics overflowed.
 *
 * As well as additional errnos, within specific ioctls.
 *
 * The checks are made in this order: command number (ENOTTY), reading of
 * the size field (EFAULT), full command (ENOTTY), kind of session (EINVAL),
 * the size field and the structure (EINVAL, E2BIG, EFAULT), then the
 * checks of the ioctl.
 *
 * A failed ioctl changes nothing: the reply is written to userspace before
 * the kernel commits any change, so a reply that cannot be written fails
 * the call with EFAULT and leaves every session and file as it was. Output
 * fields of a failed call may have been written and must be ignored. File
 * descriptors returned in an fd field are always O_CLOEXEC.
 *
 * Once reboot(LINUX_REBOOT_CMD_KEXEC) has serialized the sessions for the
 * next kernel, every ioctl except %LIVEUPDATE_SESSION_GET_NAME blocks until
 * the kexec, and so do opening /dev/liveupdate and closing a session.
 */

/* The ioctl type, documented in ioctl-number.rst */
#define LIVEUPDATE_IOCTL_TYPE		0xBA

/* The maximum length of session name including null termination */
#define LIVEUPDATE_SESSION_NAME_LENGTH 64

/* The /dev/liveupdate ioctl commands */
enum {
	LIVEUPDATE_CMD_BASE = 0x00,
	LIVEUPDATE_CMD_CREATE_SESSION = LIVEUPDATE_CMD_BASE,
	LIVEUPDATE_CMD_RETRIEVE_SESSION = 0x01,
};

/* ioctl commands for session file descriptors */
enum {
	LIVEUPDATE_CMD_SESSION_BASE = 0x40,
	LIVEUPDATE_CMD_SESSION_PRESERVE_FD = LIVEUPDATE_CMD_SESSION_BASE,
	LIVEUPDATE_CMD_SESSION_RETRIEVE_FD = 0x41,
	LIVEUPDATE_CMD_SESSION_FINISH = 0x42,
	LIVEUPDATE_CMD_SESSION_GET_NAME = 0x43,
	LIVEUPDATE_CMD_SESSION_UNPRESERVE_FD = 0x44,
};

/**
 * struct liveupdate_ioctl_create_session - ioctl(LIVEUPDATE_IOCTL_CREATE_SESSION)
 * @size:	Input; sizeof(struct liveupdate_ioctl_create_session)
 * @fd:		Output; The new file descriptor for the created session.
 * @name:	Input; A null-terminated string for the session name, max
 *		length %LIVEUPDATE_SESSION_NAME_LENGTH including termination
 *		character.
 *
 * Creates a new, empty outgoing live update session for managing preserved
 * resources, and returns its file descriptor in @fd. This ioctl can only be
 * called on the main /dev/liveupdate device.
 *
 * Files are preserved in the session with %LIVEUPDATE_SESSION_PRESERVE_FD.
 * The session lives as long as its file descriptor: closing the last
 * reference to it unpreserves all its files. Sessions whose file descriptor
 * is still open at reboot(LINUX_REBOOT_CMD_KEXEC) are handed over to the
 * next kernel.
 *
 * Errors, besides the common ones:
 *
 *  - EINVAL: @name is empty or has no NUL within
 *    %LIVEUPDATE_SESSION_NAME_LENGTH bytes.
 *  - EEXIST: an outgoing session with this name exists.
 *  - EMFILE: no file descriptor is available.
 *  - ENOSPC: too many sessions for the handover data.
 *  - ENOMEM: out of memory.
 *
 * Return: 0 on success, negative error code on failure.
 */
struct liveupdate_ioctl_create_session {
	__u32		size;
	__s32		fd;
	__u8		name[LIVEUPDATE_SESSION_NAME_LENGTH];
};

#define LIVEUPDATE_IOCTL_CREATE_SESSION					\
	_IO(LIVEUPDATE_IOCTL_TYPE, LIVEUPDATE_CMD_CREATE_SESSION)

/**
 * struct liveupdate_ioctl_retrieve_session - ioctl(LIVEUPDATE_IOCTL_RETRIEVE_SESSION)
 * @size:    Input; sizeof(struct liveupdate_ioctl_retrieve_session)
 * @fd:      Output; The new file descriptor for the retrieved session.
 * @name:    Input; A null-terminated string identifying the session to retrieve.
 *           The name must exactly match the name used when the session was
 *           created in the previous kernel.
 *
 * Retrieves a handle (a new file descriptor) for a preserved session by its
 * name. This is the primary mechanism for a userspace agent to regain control
 * of its preserved resources after a live update.
 *
 * The userspace application provides the null-terminated `name` of a session
 * it created before the live update. If a preserved session with a matching
 * name is found, the kernel instantiates it and returns a new file descriptor
 * in the `fd` field. This new session FD can then be used for all file-specific
 * operations, such as restoring individual file descriptors with
 * LIVEUPDATE_SESSION_RETRIEVE_FD.
 *
 * It is the responsibility of the userspace application to know the names of
 * the sessions it needs to retrieve. If no session with the given name is
 * found, the ioctl will fail with -ENOENT.
 *
 * This ioctl can only be called on the main /dev/liveupdate device, at any
 * time. Only sessions handed over by the previous kernel can be retrieved
 * (never the sessions created in this kernel), each one once. The incoming
 * sessions are rebuilt when /dev/liveupdate is first opened. If the previous
 * kernel's handover data was corrupt or incompatible, it is refused with a
 * kernel warning and there are no incoming sessions.
 *
 * Errors, besides the common ones:
 *
 *  - ENOENT: no incoming session has this name (none was handed over, the
 *    handover data was refused, or the session was finished and its file
 *    descriptor closed).
 *  - EINVAL: the session was already retrieved.
 *  - EMFILE: no file descriptor is available.
 *  - ENOMEM: out of memory.
 *
 * Return: 0 on success, negative error code on failure.
 */
struct liveupdate_ioctl_retrieve_session {
	__u32		size;
	__s32		fd;
	__u8		name[LIVEUPDATE_SESSION_NAME_LENGTH];
};

#define LIVEUPDATE_IOCTL_RETRIEVE_SESSION \
	_IO(LIVEUPDATE_IOCTL_TYPE, LIVEUPDATE_CMD_RETRIEVE_SESSION)

/* Session specific IOCTLs */

/**
 * struct liveupdate_session_preserve_fd - ioctl(LIVEUPDATE_SESSION_PRESERVE_FD)
 * @size:  Input; sizeof(struct liveupdate_session_preserve_fd)
 * @fd:    Input; The user-space file descriptor to be preserved.
 * @token: Input; An opaque, unique token for preserved resource.
 *
 * Holds parameters for preserving a file descriptor.
 *
 * User sets the @fd field identifying the file descriptor to preserve
 * (e.g., memfd) and the @token under which the next kernel will find it.
 * The kernel looks for a file handler that supports this file, and the
 * handler preserves the file's state now; the kernel keeps a reference to
 * the file. Just before the kexec, during reboot(LINUX_REBOOT_CMD_KEXEC),
 * every preserved file is frozen, which lets its handler make the saved
 * state final. The @token is required for the subsequent
 * %LIVEUPDATE_SESSION_RETRIEVE_FD call after the live update.
 *
 * The file stays preserved until the session's file descriptor is closed,
 * which unpreserves every file of the session. This ioctl can only be
 * called on an outgoing session (one created with
 * %LIVEUPDATE_IOCTL_CREATE_SESSION).
 *
 * Errors, besides the common ones:
 *
 *  - EINVAL: the session is an incoming one.
 *  - EEXIST: @token is already used in this session.
 *  - EBADF: @fd is not an open file descriptor.
 *  - ENOENT: no file handler supports this file.
 *  - EBUSY: the object behind @fd is already preserved, in this or
 *    another session, or was retrieved and is not finished yet.
 *  - ENODEV: a module the preservation depends on is going away.
 *  - ENOSPC: too many files in the session for the handover data.
 *  - ENOMEM: out of memory.
 *
 * The file handler may fail with errors of its own (e.g. EOPNOTSUPP for a
 * memfd with seals it cannot preserve).
 *
 * Return: 0 on success, negative error code on failure.
 */
struct liveupdate_session_preserve_fd {
	__u32		size;
	__s32		fd;
	__aligned_u64	token;
};

#define LIVEUPDATE_SESSION_PRESERVE_FD					\
	_IO(LIVEUPDATE_IOCTL_TYPE, LIVEUPDATE_CMD_SESSION_PRESERVE_FD)

/**
 * struct liveupdate_session_retrieve_fd - ioctl(LIVEUPDATE_SESSION_RETRIEVE_FD)
 * @size:  Input; sizeof(struct liveupdate_session_retrieve_fd)
 * @fd:    Output; The new file descriptor representing the fully restored
 *         kernel resource.
 * @token: Input; An opaque, token that was used to preserve the resource.
 *
 * Retrieve a previously preserved file descriptor.
 *
 * User sets the @token field to the value given to a successful
 * %LIVEUPDATE_SESSION_PRESERVE_FD call before the live update. On success,
 * the kernel restores the state (saved when the file was preserved and
 * frozen) associated with the token and populates the @fd field with a new
 * file descriptor referencing the restored resource in the current (new)
 * kernel. Files can be retrieved in any order. Retrieving a token again
 * returns a new file descriptor for the same file. This operation must be
 * performed *before* signaling completion via %LIVEUPDATE_SESSION_FINISH.
 * If a retrieve of a token fails, subsequent attempts to retrieve the token
 * fail with the same error code. Failed retrieves are not retried.
 *
 * This ioctl can only be called on an incoming session (one obtained with
 * %LIVEUPDATE_IOCTL_RETRIEVE_SESSION).
 *
 * Errors, besides the common ones:
 *
 *  - EINVAL: the session is an outgoing one.
 *  - ENOENT: no file was preserved under @token, or the session was
 *    finished.
 *  - EMFILE: no file descriptor is available.
 *  - ENOMEM: out of memory.
 *
 * A failing file handler returns errors of its own, and keeps returning
 * the same one for this token.
 *
 * Return: 0 on success, negative error code on failure.
 */
struct liveupdate_session_retrieve_fd {
	__u32		size;
	__s32		fd;
	__aligned_u64	token;
};

#define LIVEUPDATE_SESSION_RETRIEVE_FD					\
	_IO(LIVEUPDATE_IOCTL_TYPE, LIVEUPDATE_CMD_SESSION_RETRIEVE_FD)

/**
 * struct liveupdate_session_finish - ioctl(LIVEUPDATE_SESSION_FINISH)
 * @size:     Input; sizeof(struct liveupdate_session_finish)
 * @reserved: Input; Must be zero. Reserved for future use.
 *
 * Signals the completion of the restoration process for a retrieved session.
 * This is the final operation that should be performed on a session file
 * descriptor after a live update.
 *
 * This ioctl must be called once all required file descriptors for the session
 * have been successfully retrieved (using %LIVEUPDATE_SESSION_RETRIEVE_FD) and
 * are fully restored from the userspace and kernel perspective.
 *
 * Upon success, the kernel releases its ownership of the preserved resources
 * associated with this session. This allows internal resources to be freed,
 * typically by decrementing reference counts on the underlying preserved
 * objects.
 *
 * Files that were never retrieved are finished too, which releases their
 * preserved state. Closing the session's file descriptor finishes it as
 * well. Finishing a finished session succeeds and does nothing; after it,
 * %LIVEUPDATE_SESSION_RETRIEVE_FD fails with ENOENT.
 *
 * If this operation fails, nothing is finished and the resources remain
 * preserved in memory. Userspace may attempt to call finish again. The
 * resources will otherwise be reset during the next live update cycle.
 *
 * This ioctl can only be called on an incoming session.
 *
 * Errors, besides the common ones:
 *
 *  - EINVAL: @reserved is not zero, or the session is an outgoing one.
 *  - EBUSY: a file handler cannot finish one of the files yet.
 *
 * Return: 0 on success, negative error code on failure.
 */
struct liveupdate_session_finish {
	__u32		size;
	__u32		reserved;
};

#define LIVEUPDATE_SESSION_FINISH					\
	_IO(LIVEUPDATE_IOCTL_TYPE, LIVEUPDATE_CMD_SESSION_FINISH)

/**
 * struct liveupdate_session_get_name - ioctl(LIVEUPDATE_SESSION_GET_NAME)
 * @size:  Input; sizeof(struct liveupdate_session_get_name)
 * @reserved: Input; Must be zero. Reserved for future use.
 * @name:  Output; A null-terminated string with the full session name.
 *
 * Retrieves the full name of the session associated with this file descriptor.
 * This is useful because the kernel may truncate the name shown in /proc.
 * It works on outgoing and incoming sessions.
 *
 * Errors, besides the common ones:
 *
 *  - EINVAL: @reserved is not zero.
 *
 * Return: 0 on success, negative error code on failure.
 */
struct liveupdate_session_get_name {
	__u32		size;
	__u32		reserved;
	__u8		name[LIVEUPDATE_SESSION_NAME_LENGTH];
};

#define LIVEUPDATE_SESSION_GET_NAME					\
	_IO(LIVEUPDATE_IOCTL_TYPE, LIVEUPDATE_CMD_SESSION_GET_NAME)

/**
 * struct liveupdate_session_unpreserve_fd - ioctl(LIVEUPDATE_SESSION_UNPRESERVE_FD)
 * @size:     Input; sizeof(struct liveupdate_session_unpreserve_fd)
 * @reserved: Input; Must be zero. Reserved for future use.
 * @token:    Input; The token of the file to unpreserve.
 *
 * Unpreserves the file preserved under @token in this outgoing session, before
 * the live update: the counterpart of %LIVEUPDATE_SESSION_PRESERVE_FD for an
 * agent that decides not to carry one file across. The file handler releases
 * what it kept for the file, as when the session is closed; @token is free
 * again, and the file can be preserved again.
 *
 * A file that another preserved file of the session depends on (its handler
 * looked it up while preserving that file, as an iommufd does for the memfds it
 * maps) cannot be unpreserved before it: unpreserve the dependent file first.
 * Closing the session unpreserves every file, last preserved first, so that
 * dependent files always go before what they depend on.
 *
 * Once the kernel has started the reboot into the next kernel, this ioctl
 * blocks like every other one.
 *
 * Errors, besides the common ones:
 *
 *  - EINVAL: @reserved is not zero, or the session is an incoming one.
 *  - ENOENT: no file is preserved under @token in this session.
 *  - EBUSY: another preserved file of the session depends on this one.
 *
 * Return: 0 on success, negative error code on failure.
 */
struct liveupdate_session_unpreserve_fd {
	__u32		size;
	__u32		reserved;
	__aligned_u64	token;
};

#define LIVEUPDATE_SESSION_UNPRESERVE_FD				\
	_IO(LIVEUPDATE_IOCTL_TYPE, LIVEUPDATE_CMD_SESSION_UNPRESERVE_FD)

#endif /* _UAPI_LIVEUPDATE_H */
