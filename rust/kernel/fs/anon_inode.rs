// SPDX-License-Identifier: GPL-2.0

//! Files on the anonymous inode, with file operations implemented in Rust.
//!
//! C header: [`include/linux/anon_inodes.h`](srctree/include/linux/anon_inodes.h)
//!
//! An anonymous-inode file is a `struct file` without a filesystem behind it, as handed out by
//! `epoll_create()`, `eventfd()` or a driver ioctl that returns a new file descriptor. Its
//! private data is set when it is created and handed back to [`AnonInodeFile::release`] when the
//! last reference to the file goes away.

use crate::{
    bindings,
    error::{
        from_err_ptr,
        VTABLE_DEFAULT_ERROR, //
    },
    fs::File,
    prelude::*,
    sync::aref::ARef,
    types::ForeignOwnable, //
};
use core::{
    marker::PhantomData,
    ptr::NonNull, //
};

/// The file operations of an anonymous-inode file.
///
/// # Examples
///
/// ```
/// use kernel::fs::{anon_inode::{self, AnonInodeFile}, file::flags::O_RDWR, File};
/// use kernel::prelude::*;
/// use kernel::sync::{Arc, ArcBorrow};
/// # struct LocalModule;
/// # impl kernel::ModuleMetadata for LocalModule {
/// #     const NAME: &'static kernel::str::CStr = c"anon_inode_doctest";
/// #     // SAFETY: `try_module_get`/`module_put` handle null module pointers gracefully.
/// #     const THIS_MODULE: kernel::ThisModule = unsafe {
/// #         kernel::ThisModule::from_ptr(core::ptr::null_mut())
/// #     };
/// # }
///
/// struct Counter(u32);
///
/// #[vtable]
/// impl AnonInodeFile for Counter {
///     type Ptr = Arc<Counter>;
///
///     fn ioctl(this: ArcBorrow<'_, Self>, _: &File, cmd: u32, _arg: usize) -> Result<isize> {
///         match cmd {
///             1 => Ok(this.0 as isize),
///             _ => Err(ENOTTY),
///         }
///     }
/// }
///
/// let file = anon_inode::new_file::<Counter>(c"[counter]", Arc::new(Counter(7), GFP_KERNEL)?,
///                                            O_RDWR)?;
/// assert_eq!(file.flags() & O_RDWR, O_RDWR);
/// # Ok::<(), Error>(())
/// ```
#[vtable]
pub trait AnonInodeFile: Sized {
    /// The pointer type that owns the file's private data.
    type Ptr: ForeignOwnable + Send + Sync;

    /// Handles an ioctl on the file.
    fn ioctl(
        _this: <Self::Ptr as ForeignOwnable>::Borrowed<'_>,
        _file: &File,
        _cmd: u32,
        _arg: usize,
    ) -> Result<isize> {
        build_error!(VTABLE_DEFAULT_ERROR)
    }

    /// Called when the last reference to the file is dropped; takes back the private data.
    fn release(this: Self::Ptr, _file: &File) {
        drop(this);
    }
}

/// Creates an anonymous-inode file named `name` whose private data is `data`.
///
/// `flags` are the file's open flags (`O_RDWR`, `O_NONBLOCK`, ...). The returned reference is the
/// only one: installing it in a file descriptor table (for example with
/// [`FileDescriptorReservation::fd_install`]) hands it to userspace; dropping it releases the
/// file, which passes `data` back to [`AnonInodeFile::release`].
///
/// [`FileDescriptorReservation::fd_install`]:
///     crate::fs::file::FileDescriptorReservation::fd_install
pub fn new_file<T: AnonInodeFile>(name: &CStr, data: T::Ptr, flags: u32) -> Result<ARef<File>> {
    let flags = c_int::try_from(flags).map_err(|_| EINVAL)?;
    let private = data.into_foreign();
    // SAFETY: `name` is a NUL-terminated string, the file operations are a static table, and the
    // private data is the foreign form of a `T::Ptr`, which the file operations of `AnonVTable<T>`
    // expect.
    let raw = unsafe {
        bindings::anon_inode_getfile(name.as_char_ptr(), AnonVTable::<T>::build(), private, flags)
    };
    match from_err_ptr(raw).map(NonNull::new) {
        Ok(Some(raw)) => {
            // SAFETY: `anon_inode_getfile()` returned a new file holding one reference, which we
            // now own. `File` is a transparent wrapper of `struct file`.
            Ok(unsafe { ARef::from_raw(raw.cast::<File>()) })
        }
        failed => {
            // SAFETY: No file was created, so `private` is still owned by us; it came from
            // `into_foreign()` above and is converted back exactly once.
            drop(unsafe { T::Ptr::from_foreign(private) });
            Err(failed.err().unwrap_or(ENOMEM))
        }
    }
}

/// The `struct file_operations` of the files of [`AnonInodeFile`] `T`.
struct AnonVTable<T: AnonInodeFile>(PhantomData<T>);

impl<T: AnonInodeFile> AnonVTable<T> {
    /// # Safety
    ///
    /// `file` must be a file created by [`new_file::<T>`] that is being released.
    unsafe extern "C" fn release(_inode: *mut bindings::inode, file: *mut bindings::file) -> c_int {
        // SAFETY: The release call of a file owns the private data.
        let private = unsafe { (*file).private_data };
        // SAFETY: `new_file::<T>` set the private data to the foreign form of a `T::Ptr`, and it
        // is converted back only here, once, when the file goes away.
        let this = unsafe { T::Ptr::from_foreign(private) };
        // SAFETY:
        // * The file is valid for the duration of this call.
        // * Nobody can hold an fdget_pos region on a file that is being released.
        T::release(this, unsafe { File::from_raw_file(file) });
        0
    }

    /// # Safety
    ///
    /// `file` must be a valid file created by [`new_file::<T>`].
    unsafe extern "C" fn ioctl(file: *mut bindings::file, cmd: c_uint, arg: c_ulong) -> c_long {
        // SAFETY: The ioctl call of a file can access the private data.
        let private = unsafe { (*file).private_data };
        // SAFETY: The private data is the foreign form of a `T::Ptr` (see `new_file`), and it is
        // not released while an ioctl holds a reference to the file.
        let this = unsafe { T::Ptr::borrow(private) };
        // SAFETY:
        // * The file is valid for the duration of this call.
        // * There is no active fdget_pos region on the file on this thread.
        let file = unsafe { File::from_raw_file(file) };
        match T::ioctl(this, file, cmd, arg) {
            Ok(ret) => ret as c_long,
            Err(err) => err.to_errno() as c_long,
        }
    }

    const VTABLE: bindings::file_operations = bindings::file_operations {
        owner: crate::module::this_module::<T::OwnerModule>().as_ptr(),
        release: Some(Self::release),
        unlocked_ioctl: if T::HAS_IOCTL {
            Some(Self::ioctl)
        } else {
            None
        },
        #[cfg(CONFIG_COMPAT)]
        compat_ioctl: if T::HAS_IOCTL {
            bindings::compat_ptr_ioctl
        } else {
            None
        },
        ..pin_init::zeroed()
    };

    const fn build() -> &'static bindings::file_operations {
        &Self::VTABLE
    }
}
