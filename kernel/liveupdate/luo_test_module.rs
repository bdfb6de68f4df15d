// SPDX-License-Identifier: GPL-2.0

//! A live update file handler and FLB in a loadable module, to test their lifetimes.
//!
//! The files opened on `/dev/luo_test_module` are the handler's ("luo-test-module-v1"), and the
//! FLB ("luo-test-module-flb-v1") is registered with it. Preserving such a file pins the module
//! through the core's references to the handler and the FLB: `rmmod` fails while it is preserved
//! and succeeds once it is unpreserved or, after a kexec, finished. Its retrieve makes an
//! anonymous file, "[luo_test_module]". Each callback prints a line, which the harness reads.

use kernel::{
    fs::{
        anon_inode::{
            self,
            AnonInodeFile, //
        },
        file::flags::O_RDWR,
        File,
    },
    liveupdate::handler::{
        FileHandler,
        FileHandlerRegistration,
        FlbOps,
        FlbRegistration,
        IncomingSession,
        OutgoingSession,
        RetrieveStatus, //
    },
    miscdevice::{
        MiscDevice,
        MiscDeviceOptions,
        MiscDeviceRegistration, //
    },
    prelude::*,
    sync::{
        aref::ARef,
        atomic::{
            Atomic,
            Relaxed, //
        },
        Arc,
    },
};

module! {
    type: LuoTestModule,
    name: "luo_test_module",
    authors: ["Live Update harness"],
    description: "A live update file handler and FLB in a module (test only)",
    license: "GPL",
}

/// The data handle of every preserved file.
const FILE_DATA: u64 = 0x7e57;
/// The data handle of the FLB.
const FLB_DATA: u64 = 0xf1b;

/// The addresses of the `struct file`s open on the device: the handler's files.
static OPEN: [Atomic<usize>; 8] = [const { Atomic::new(0) }; 8];

fn address(file: &File) -> usize {
    // CAST: Only compared with the addresses recorded in `OPEN`.
    file.as_ptr() as usize
}

struct TestDevice;

#[vtable]
impl MiscDevice for TestDevice {
    type Ptr = ();

    fn open(file: &File, _misc: &MiscDeviceRegistration<Self>) -> Result {
        let addr = address(file);
        OPEN.iter()
            .find(|slot| slot.cmpxchg(0, addr, Relaxed).is_ok())
            .map(|_| ())
            .ok_or(EMFILE)
    }

    fn release(_device: (), file: &File) {
        let addr = address(file);
        if let Some(slot) = OPEN.iter().find(|slot| slot.load(Relaxed) == addr) {
            slot.store(0, Relaxed);
        }
    }
}

/// The file a retrieve makes.
struct Retrieved;

#[vtable]
impl AnonInodeFile for Retrieved {
    type Ptr = ();
}

struct TestHandler;

#[vtable]
impl FileHandler for TestHandler {
    const COMPATIBLE: &'static CStr = c"luo-test-module-v1";
    type Private = ();

    fn can_preserve(file: &File) -> bool {
        let addr = address(file);
        OPEN.iter().any(|slot| slot.load(Relaxed) == addr)
    }

    fn preserve(_session: &OutgoingSession<'_>, _file: &File) -> Result<(u64, ())> {
        pr_info!("preserve {:#x}\n", FILE_DATA);
        Ok((FILE_DATA, ()))
    }

    fn unpreserve(_session: &OutgoingSession<'_>, _file: &File, data: u64, _private: ()) {
        pr_info!("unpreserve {:#x}\n", data);
    }

    fn retrieve(_session: &IncomingSession<'_>, data: u64) -> Result<ARef<File>> {
        pr_info!("retrieve {:#x}\n", data);
        anon_inode::new_file::<Retrieved>(c"[luo_test_module]", (), O_RDWR)
    }

    fn finish(
        _session: &IncomingSession<'_>,
        _file: Option<&File>,
        data: u64,
        status: RetrieveStatus,
    ) {
        pr_info!("finish {:#x} {:?}\n", data, status);
    }
}

struct TestFlb;

#[vtable]
impl FlbOps for TestFlb {
    const COMPATIBLE: &'static CStr = c"luo-test-module-flb-v1";
    type Object = KBox<u64>;

    fn preserve() -> Result<(u64, KBox<u64>)> {
        pr_info!("flb preserve {:#x}\n", FLB_DATA);
        Ok((FLB_DATA, KBox::new(FLB_DATA, GFP_KERNEL)?))
    }

    fn unpreserve(_data: u64, obj: KBox<u64>) {
        pr_info!("flb unpreserve {:#x}\n", *obj);
    }

    fn retrieve(data: u64) -> Result<KBox<u64>> {
        pr_info!("flb retrieve {:#x}\n", data);
        Ok(KBox::new(data, GFP_KERNEL)?)
    }

    fn finish(obj: KBox<u64>) {
        pr_info!("flb finish {:#x}\n", *obj);
    }
}

struct LuoTestModule {
    // Dropped in this order: the FLB, the handler (once the FLB's reference to it is gone), the
    // device.
    _flb: Pin<KBox<FlbRegistration<TestFlb, TestHandler>>>,
    _handler: Arc<FileHandlerRegistration<TestHandler>>,
    _device: Pin<KBox<MiscDeviceRegistration<TestDevice>>>,
}

impl kernel::Module for LuoTestModule {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        let handler = Arc::pin_init(FileHandlerRegistration::register(), GFP_KERNEL)?;
        let flb = KBox::pin_init(FlbRegistration::register(handler.clone()), GFP_KERNEL)?;
        let device = KBox::pin_init(
            MiscDeviceRegistration::register(MiscDeviceOptions {
                name: c"luo_test_module",
            }),
            GFP_KERNEL,
        )?;
        pr_info!("loaded\n");
        Ok(Self {
            _flb: flb,
            _handler: handler,
            _device: device,
        })
    }
}

impl Drop for LuoTestModule {
    fn drop(&mut self) {
        pr_info!("unloading\n");
    }
}
