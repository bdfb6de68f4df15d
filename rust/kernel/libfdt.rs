// SPDX-License-Identifier: GPL-2.0

//! Flattened device tree (FDT) blobs, through libfdt.
//!
//! C header: [`include/linux/libfdt.h`](srctree/include/linux/libfdt.h)
//!
//! Three views of a blob, each tied to the lifetime of the memory it lives in:
//!
//! - [`Fdt`]: a read-only view of a blob whose header was checked and whose total size fits in
//!   the memory it borrows, so that no libfdt read can leave that memory;
//! - [`FdtWriter`]: the sequential writer (`fdt_create()` ... `fdt_finish()`);
//! - [`FdtMut`]: a blob opened for editing in place (`fdt_open_into()`), packed again when the
//!   value is dropped.
//!
//! libfdt reports errors as negative `FDT_ERR_*` codes, which are not errnos: [`FdtError`] names
//! each of them, and [`FdtError::to_errno`] is the one place where they become errnos.

use crate::{
    bindings,
    error::{code::*, Error},
    ffi::{c_int, c_void},
    str::{CStr, CStrExt},
};
use core::{fmt, marker::PhantomData, ptr::NonNull};

/// A libfdt error, one variant per `FDT_ERR_*` code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FdtError {
    /// `FDT_ERR_NOTFOUND`: the node or property does not exist.
    NotFound,
    /// `FDT_ERR_EXISTS`: a node of that name already exists.
    Exists,
    /// `FDT_ERR_NOSPACE`: the buffer is too small.
    NoSpace,
    /// `FDT_ERR_BADOFFSET`: an offset that is not the start of a node or property.
    BadOffset,
    /// `FDT_ERR_BADPATH`: a malformed path.
    BadPath,
    /// `FDT_ERR_BADPHANDLE`: an invalid phandle.
    BadPhandle,
    /// `FDT_ERR_BADSTATE`: the sequential writer was used out of order.
    BadState,
    /// `FDT_ERR_TRUNCATED`: the structure block ends early.
    Truncated,
    /// `FDT_ERR_BADMAGIC`: not an FDT.
    BadMagic,
    /// `FDT_ERR_BADVERSION`: an unsupported version.
    BadVersion,
    /// `FDT_ERR_BADSTRUCTURE`: a corrupt structure block.
    BadStructure,
    /// `FDT_ERR_BADLAYOUT`: the blocks are not in the order an edit needs.
    BadLayout,
    /// `FDT_ERR_INTERNAL`: a libfdt bug.
    Internal,
    /// `FDT_ERR_BADNCELLS`: a bad `#address-cells`/`#size-cells`.
    BadNCells,
    /// `FDT_ERR_BADVALUE`: a property with an unexpected value.
    BadValue,
    /// `FDT_ERR_BADOVERLAY`: a malformed overlay.
    BadOverlay,
    /// `FDT_ERR_NOPHANDLES`: no phandle left.
    NoPhandles,
    /// `FDT_ERR_BADFLAGS`: bad flags to a libfdt function.
    BadFlags,
    /// `FDT_ERR_ALIGNMENT`: a blob that is not 8-byte aligned.
    Alignment,
    /// A code libfdt did not define when this was written.
    Unknown(c_int),
}

impl FdtError {
    /// Converts a negative libfdt return value.
    fn from_ret(ret: c_int) -> Self {
        // The codes are defined as plain integers in `libfdt.h`; bindgen turns them into `u32`.
        match ret.unsigned_abs() {
            bindings::FDT_ERR_NOTFOUND => Self::NotFound,
            bindings::FDT_ERR_EXISTS => Self::Exists,
            bindings::FDT_ERR_NOSPACE => Self::NoSpace,
            bindings::FDT_ERR_BADOFFSET => Self::BadOffset,
            bindings::FDT_ERR_BADPATH => Self::BadPath,
            bindings::FDT_ERR_BADPHANDLE => Self::BadPhandle,
            bindings::FDT_ERR_BADSTATE => Self::BadState,
            bindings::FDT_ERR_TRUNCATED => Self::Truncated,
            bindings::FDT_ERR_BADMAGIC => Self::BadMagic,
            bindings::FDT_ERR_BADVERSION => Self::BadVersion,
            bindings::FDT_ERR_BADSTRUCTURE => Self::BadStructure,
            bindings::FDT_ERR_BADLAYOUT => Self::BadLayout,
            bindings::FDT_ERR_INTERNAL => Self::Internal,
            bindings::FDT_ERR_BADNCELLS => Self::BadNCells,
            bindings::FDT_ERR_BADVALUE => Self::BadValue,
            bindings::FDT_ERR_BADOVERLAY => Self::BadOverlay,
            bindings::FDT_ERR_NOPHANDLES => Self::NoPhandles,
            bindings::FDT_ERR_BADFLAGS => Self::BadFlags,
            bindings::FDT_ERR_ALIGNMENT => Self::Alignment,
            _ => Self::Unknown(ret),
        }
    }

    /// The errno a caller of a kernel API gets for this error.
    ///
    /// [`ENOENT`] for a missing node or property, [`EEXIST`] for a duplicate node, [`ENOSPC`]
    /// for a full buffer and [`EINVAL`] for everything that means a malformed blob or a misuse.
    pub fn to_errno(self) -> Error {
        match self {
            Self::NotFound => ENOENT,
            Self::Exists => EEXIST,
            Self::NoSpace => ENOSPC,
            _ => EINVAL,
        }
    }
}

impl From<FdtError> for Error {
    fn from(e: FdtError) -> Self {
        e.to_errno()
    }
}

impl fmt::Display for FdtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unknown(code) => write!(f, "libfdt error {code}"),
            e => {
                let code = e.code();
                // SAFETY: `fdt_strerror()` accepts any value and returns a pointer to a static,
                // NUL-terminated string.
                let s = unsafe { CStr::from_char_ptr(bindings::fdt_strerror(code)) };
                write!(f, "{}", s.to_str().unwrap_or("libfdt error"))
            }
        }
    }
}

impl FdtError {
    /// The negative libfdt code of this error.
    fn code(self) -> c_int {
        let code = match self {
            Self::NotFound => bindings::FDT_ERR_NOTFOUND,
            Self::Exists => bindings::FDT_ERR_EXISTS,
            Self::NoSpace => bindings::FDT_ERR_NOSPACE,
            Self::BadOffset => bindings::FDT_ERR_BADOFFSET,
            Self::BadPath => bindings::FDT_ERR_BADPATH,
            Self::BadPhandle => bindings::FDT_ERR_BADPHANDLE,
            Self::BadState => bindings::FDT_ERR_BADSTATE,
            Self::Truncated => bindings::FDT_ERR_TRUNCATED,
            Self::BadMagic => bindings::FDT_ERR_BADMAGIC,
            Self::BadVersion => bindings::FDT_ERR_BADVERSION,
            Self::BadStructure => bindings::FDT_ERR_BADSTRUCTURE,
            Self::BadLayout => bindings::FDT_ERR_BADLAYOUT,
            Self::Internal => bindings::FDT_ERR_INTERNAL,
            Self::BadNCells => bindings::FDT_ERR_BADNCELLS,
            Self::BadValue => bindings::FDT_ERR_BADVALUE,
            Self::BadOverlay => bindings::FDT_ERR_BADOVERLAY,
            Self::NoPhandles => bindings::FDT_ERR_NOPHANDLES,
            Self::BadFlags => bindings::FDT_ERR_BADFLAGS,
            Self::Alignment => bindings::FDT_ERR_ALIGNMENT,
            Self::Unknown(ret) => return ret,
        };
        // The codes are small positive numbers (at most `FDT_ERR_MAX`).
        -(code as c_int)
    }
}

/// Turns a libfdt return value into a non-negative value or an error.
fn check(ret: c_int) -> Result<c_int, FdtError> {
    if ret < 0 {
        Err(FdtError::from_ret(ret))
    } else {
        Ok(ret)
    }
}

/// Size of the FDT header (`struct fdt_header`).
pub const HEADER_SIZE: usize = size_of::<bindings::fdt_header>();

/// A node of a blob: its offset in the structure block.
///
/// Offsets are only meaningful for the blob they came from; libfdt checks any offset it is given
/// and fails with [`FdtError::BadOffset`] for one that does not start a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Node(c_int);

impl Node {
    /// The root node.
    pub const ROOT: Node = Node(0);
}

/// A read-only view of an FDT blob.
///
/// # Invariants
///
/// `fdt_check_header()` accepted the header at `blob`, and the blob's total size is at most
/// `blob.len()`: libfdt's checked read functions do not read beyond it.
#[derive(Clone, Copy)]
pub struct Fdt<'a> {
    blob: &'a [u8],
}

impl<'a> Fdt<'a> {
    /// Checks the header of the blob at the start of `mem` and returns a view of it.
    ///
    /// Fails with [`FdtError::Truncated`] if `mem` cannot hold the header or the total size the
    /// header claims, and with libfdt's error for a bad header.
    ///
    /// # Examples
    ///
    /// ```
    /// use kernel::libfdt::{Fdt, FdtError, FdtWriter, Node};
    ///
    /// let mut buf = [0u64; 64];
    /// let bytes = kernel::transmute::AsBytes::as_bytes_mut(&mut buf[..]);
    /// let mut w = FdtWriter::new(bytes)?;
    /// w.finish_reservemap()?;
    /// w.begin_node(c"")?;
    /// w.property_string(c"compatible", c"kho-v4")?;
    /// w.property(c"answer", &42u64.to_ne_bytes())?;
    /// w.end_node()?;
    /// w.finish()?;
    ///
    /// let fdt = Fdt::new(bytes)?;
    /// assert!(fdt.check_compatible(Node::ROOT, c"kho-v4")?);
    /// assert!(!fdt.check_compatible(Node::ROOT, c"kho-v3")?);
    /// assert_eq!(fdt.getprop(Node::ROOT, c"answer")?, &42u64.to_ne_bytes());
    /// assert_eq!(fdt.getprop(Node::ROOT, c"question"), Err(FdtError::NotFound));
    ///
    /// bytes[0] ^= 1;
    /// assert!(matches!(Fdt::new(bytes), Err(FdtError::BadMagic)));
    /// assert!(matches!(Fdt::new(&bytes[..8]), Err(FdtError::Truncated)));
    /// # Ok::<(), Error>(())
    /// ```
    pub fn new(mem: &'a [u8]) -> Result<Self, FdtError> {
        if mem.len() < HEADER_SIZE {
            return Err(FdtError::Truncated);
        }
        // SAFETY: `mem` holds at least a header, the only part `fdt_check_header()` reads.
        check(unsafe { bindings::fdt_check_header(mem.as_ptr().cast()) })?;
        // The header starts with big-endian 32-bit words: magic, then totalsize.
        let total = mem
            .get(4..8)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_be_bytes)
            .ok_or(FdtError::Truncated)?;
        let total = usize::try_from(total).map_err(|_| FdtError::Truncated)?;
        let blob = mem.get(..total).ok_or(FdtError::Truncated)?;
        // INVARIANT: the header was checked and the total size fits in `blob`.
        Ok(Self { blob })
    }

    /// The blob, `totalsize` bytes.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.blob
    }

    /// The blob's total size in bytes.
    pub fn totalsize(&self) -> usize {
        self.blob.len()
    }

    fn ptr(&self) -> *const c_void {
        self.blob.as_ptr().cast()
    }

    /// Turns a pointer and length that libfdt returned into a slice of the blob.
    fn slice(&self, ptr: *const c_void, len: c_int) -> Result<&'a [u8], FdtError> {
        let len = usize::try_from(len).map_err(|_| FdtError::BadStructure)?;
        let start = (ptr as usize)
            .checked_sub(self.blob.as_ptr() as usize)
            .ok_or(FdtError::Internal)?;
        // libfdt checked the bounds; check them again so that a libfdt bug cannot make a slice
        // outside the blob.
        self.blob
            .get(start..start.checked_add(len).ok_or(FdtError::Internal)?)
            .ok_or(FdtError::Internal)
    }

    /// Returns the value of property `name` of `node`.
    pub fn getprop(&self, node: Node, name: &CStr) -> Result<&'a [u8], FdtError> {
        let mut len: c_int = 0;
        // SAFETY: By the type invariant libfdt only reads inside the blob; `name` is a valid
        // NUL-terminated string and `len` a valid place for the length.
        let p = unsafe { bindings::fdt_getprop(self.ptr(), node.0, name.as_char_ptr(), &mut len) };
        if p.is_null() {
            return Err(FdtError::from_ret(len));
        }
        self.slice(p, len)
    }

    /// Returns the value of property `name` of `node` as a native-endian `u64`, which must be
    /// exactly 8 bytes long.
    pub fn getprop_u64(&self, node: Node, name: &CStr) -> Result<u64, FdtError> {
        let v = self.getprop(node, name)?;
        let bytes: [u8; 8] = v.try_into().map_err(|_| FdtError::BadValue)?;
        Ok(u64::from_ne_bytes(bytes))
    }

    /// Returns the subnode `name` of `parent`.
    pub fn subnode(&self, parent: Node, name: &CStr) -> Result<Node, FdtError> {
        // SAFETY: By the type invariant libfdt only reads inside the blob; `name` is valid.
        let off = check(unsafe {
            bindings::fdt_subnode_offset(self.ptr(), parent.0, name.as_char_ptr())
        })?;
        Ok(Node(off))
    }

    /// Returns the name of `node`, without NUL.
    pub fn name(&self, node: Node) -> Result<&'a [u8], FdtError> {
        let mut len: c_int = 0;
        // SAFETY: By the type invariant libfdt only reads inside the blob.
        let p = unsafe { bindings::fdt_get_name(self.ptr(), node.0, &mut len) };
        if p.is_null() {
            return Err(FdtError::from_ret(len));
        }
        self.slice(p.cast(), len)
    }

    /// Returns whether the `compatible` property of `node` lists `compat`.
    ///
    /// A node without `compatible` is an error ([`FdtError::NotFound`] or another).
    pub fn check_compatible(&self, node: Node, compat: &CStr) -> Result<bool, FdtError> {
        // SAFETY: By the type invariant libfdt only reads inside the blob; `compat` is valid.
        let ret = unsafe {
            bindings::fdt_node_check_compatible(self.ptr(), node.0, compat.as_char_ptr())
        };
        Ok(check(ret)? == 0)
    }

    /// Iterates over the direct subnodes of `parent`.
    ///
    /// The iteration ends at the last subnode or at the first error, which is then returned.
    pub fn subnodes(&self, parent: Node) -> Subnodes<'a> {
        Subnodes {
            fdt: *self,
            next: Some((parent, true)),
        }
    }
}

/// Iterator over the direct subnodes of a node, from [`Fdt::subnodes`].
pub struct Subnodes<'a> {
    fdt: Fdt<'a>,
    /// The node to continue from, and whether it is the parent (no subnode visited yet).
    next: Option<(Node, bool)>,
}

impl Iterator for Subnodes<'_> {
    type Item = Result<Node, FdtError>;

    fn next(&mut self) -> Option<Self::Item> {
        let (node, first) = self.next.take()?;
        let ret = if first {
            // SAFETY: By the invariant of `Fdt`, libfdt only reads inside the blob.
            unsafe { bindings::fdt_first_subnode(self.fdt.ptr(), node.0) }
        } else {
            // SAFETY: As above.
            unsafe { bindings::fdt_next_subnode(self.fdt.ptr(), node.0) }
        };
        match check(ret) {
            Ok(off) => {
                self.next = Some((Node(off), false));
                Some(Ok(Node(off)))
            }
            Err(FdtError::NotFound) => None,
            Err(e) => Some(Err(e)),
        }
    }
}

/// The sequential writer of a new blob in a buffer.
///
/// # Invariants
///
/// `buf` was initialized by `fdt_create()` with its whole length; it is exclusively borrowed for
/// `'a`.
pub struct FdtWriter<'a> {
    buf: NonNull<u8>,
    len: usize,
    _p: PhantomData<&'a mut [u8]>,
}

impl<'a> FdtWriter<'a> {
    /// Starts a blob in `buf`, which must be 8-byte aligned.
    pub fn new(buf: &'a mut [u8]) -> Result<Self, FdtError> {
        let len = c_int::try_from(buf.len()).map_err(|_| FdtError::NoSpace)?;
        // SAFETY: `buf` is valid for writes of `len` bytes for the duration of the call.
        check(unsafe { bindings::fdt_create(buf.as_mut_ptr().cast(), len) })?;
        // INVARIANT: `fdt_create()` initialized the whole buffer, borrowed for 'a.
        Ok(Self {
            buf: NonNull::from(buf).cast(),
            len: buf_len(len),
            _p: PhantomData,
        })
    }

    fn ptr(&mut self) -> *mut c_void {
        self.buf.as_ptr().cast()
    }

    /// Ends the (empty) memory reservation map.
    pub fn finish_reservemap(&mut self) -> Result<(), FdtError> {
        // SAFETY: By the type invariant the buffer is a blob in sequential-write state.
        check(unsafe { bindings::fdt_finish_reservemap(self.ptr()) }).map(drop)
    }

    /// Opens node `name`; the root node is `c""`.
    pub fn begin_node(&mut self, name: &CStr) -> Result<(), FdtError> {
        // SAFETY: As above; `name` is a valid NUL-terminated string.
        check(unsafe { bindings::fdt_begin_node(self.ptr(), name.as_char_ptr()) }).map(drop)
    }

    /// Adds a property with raw value `val` to the open node.
    pub fn property(&mut self, name: &CStr, val: &[u8]) -> Result<(), FdtError> {
        let len = c_int::try_from(val.len()).map_err(|_| FdtError::NoSpace)?;
        // SAFETY: As above; `val` is valid for reads of `len` bytes and does not overlap the
        // buffer, which is exclusively borrowed.
        check(unsafe {
            bindings::fdt_property(self.ptr(), name.as_char_ptr(), val.as_ptr().cast(), len)
        })
        .map(drop)
    }

    /// Adds a string property, NUL included, to the open node.
    pub fn property_string(&mut self, name: &CStr, val: &CStr) -> Result<(), FdtError> {
        self.property(name, val.to_bytes_with_nul())
    }

    /// Closes the open node.
    pub fn end_node(&mut self) -> Result<(), FdtError> {
        // SAFETY: By the type invariant the buffer is a blob in sequential-write state.
        check(unsafe { bindings::fdt_end_node(self.ptr()) }).map(drop)
    }

    /// Completes the blob.
    pub fn finish(mut self) -> Result<(), FdtError> {
        // SAFETY: As above.
        check(unsafe { bindings::fdt_finish(self.ptr()) }).map(drop)
    }

    /// The size of the buffer.
    pub fn capacity(&self) -> usize {
        self.len
    }
}

fn buf_len(len: c_int) -> usize {
    // `len` was converted from a `usize` and is not negative.
    len.unsigned_abs() as usize
}

/// A blob opened for editing in place; it is packed (`fdt_pack()`) again when dropped.
///
/// # Invariants
///
/// `fdt_open_into()` accepted `buf` (a valid blob, now with all of `buf` as its total size);
/// `buf` is exclusively borrowed for `'a`.
pub struct FdtMut<'a> {
    buf: &'a mut [u8],
}

impl<'a> FdtMut<'a> {
    /// Opens the blob at the start of `buf` for editing, letting it grow to `buf.len()` bytes.
    ///
    /// # Examples
    ///
    /// ```
    /// use kernel::libfdt::{Fdt, FdtError, FdtMut, FdtWriter, Node};
    ///
    /// let mut buf = [0u64; 128];
    /// let bytes = kernel::transmute::AsBytes::as_bytes_mut(&mut buf[..]);
    /// let mut w = FdtWriter::new(bytes)?;
    /// w.finish_reservemap()?;
    /// w.begin_node(c"")?;
    /// w.end_node()?;
    /// w.finish()?;
    /// let empty = Fdt::new(bytes)?.totalsize();
    ///
    /// {
    ///     let mut f = FdtMut::open(bytes)?;
    ///     let n = f.add_subnode(Node::ROOT, c"blob")?;
    ///     f.setprop(n, c"size", &7u64.to_ne_bytes())?;
    ///     assert_eq!(f.add_subnode(Node::ROOT, c"blob"), Err(FdtError::Exists));
    /// }
    /// // Packed again on drop: the blob grew by the node, not to the buffer.
    /// let fdt = Fdt::new(bytes)?;
    /// assert!(fdt.totalsize() > empty && fdt.totalsize() < bytes.len());
    /// let n = fdt.subnode(Node::ROOT, c"blob")?;
    /// assert_eq!(fdt.getprop_u64(n, c"size"), Ok(7));
    /// assert_eq!(fdt.name(n)?, b"blob");
    /// assert_eq!(fdt.subnodes(Node::ROOT).count(), 1);
    /// let with_node = fdt.totalsize();
    ///
    /// {
    ///     let mut f = FdtMut::open(bytes)?;
    ///     let n = f.as_fdt().subnode(Node::ROOT, c"blob")?;
    ///     f.del_node(n)?;
    /// }
    /// // The property name stays in the strings block.
    /// assert!(Fdt::new(bytes)?.totalsize() < with_node);
    /// assert_eq!(Fdt::new(bytes)?.subnode(Node::ROOT, c"blob"), Err(FdtError::NotFound));
    /// # Ok::<(), Error>(())
    /// ```
    pub fn open(buf: &'a mut [u8]) -> Result<Self, FdtError> {
        Fdt::new(buf)?;
        let len = c_int::try_from(buf.len()).map_err(|_| FdtError::NoSpace)?;
        let p = buf.as_mut_ptr().cast::<c_void>();
        // SAFETY: The header was checked and the blob fits in `buf`; libfdt supports moving a
        // blob onto itself (`fdt_open_into()` with the same buffer).
        check(unsafe { bindings::fdt_open_into(p, p, len) })?;
        // INVARIANT: `fdt_open_into()` accepted the blob.
        Ok(Self { buf })
    }

    fn ptr(&mut self) -> *mut c_void {
        self.buf.as_mut_ptr().cast()
    }

    /// A read-only view of the blob being edited.
    pub fn as_fdt(&self) -> Fdt<'_> {
        // INVARIANT: `fdt_open_into()` (and every edit since) keeps a valid blob whose total size
        // is the buffer's length.
        Fdt { blob: self.buf }
    }

    /// Adds subnode `name` to `parent` and returns it.
    pub fn add_subnode(&mut self, parent: Node, name: &CStr) -> Result<Node, FdtError> {
        let fdt = self.ptr();
        // SAFETY: By the type invariant the buffer holds an open blob; `name` is valid.
        let off = check(unsafe { bindings::fdt_add_subnode(fdt, parent.0, name.as_char_ptr()) })?;
        Ok(Node(off))
    }

    /// Sets property `name` of `node` to `val`.
    pub fn setprop(&mut self, node: Node, name: &CStr, val: &[u8]) -> Result<(), FdtError> {
        let len = c_int::try_from(val.len()).map_err(|_| FdtError::NoSpace)?;
        let name_len = c_int::try_from(name.to_bytes().len()).map_err(|_| FdtError::BadValue)?;
        // SAFETY: By the type invariant the buffer holds an open blob; `name` is valid for
        // `name_len` bytes, `val` for reads of `len` bytes, and neither overlaps the exclusively
        // borrowed buffer. (`fdt_setprop()` is an inline wrapper of this function.)
        check(unsafe {
            bindings::fdt_setprop_namelen(
                self.ptr(),
                node.0,
                name.as_char_ptr(),
                name_len,
                val.as_ptr().cast(),
                len,
            )
        })
        .map(drop)
    }

    /// Deletes `node` and its subnodes. Offsets of later nodes change.
    pub fn del_node(&mut self, node: Node) -> Result<(), FdtError> {
        // SAFETY: By the type invariant the buffer holds an open blob.
        check(unsafe { bindings::fdt_del_node(self.ptr(), node.0) }).map(drop)
    }
}

impl Drop for FdtMut<'_> {
    fn drop(&mut self) {
        // SAFETY: By the type invariant the buffer holds an open blob. `fdt_pack()` only fails
        // for a bad header, which an open blob does not have.
        unsafe { bindings::fdt_pack(self.ptr()) };
    }
}

/// Returns whether a NUL-separated string list (a `compatible` value) contains `s`.
pub fn stringlist_contains(list: &[u8], s: &CStr) -> bool {
    list.split(|&b| b == 0).any(|item| item == s.to_bytes())
}
