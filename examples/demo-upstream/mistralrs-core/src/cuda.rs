//! The CUDA half of the demo: its two kinds of device code and `selftest`.
//!
//! * `add_one`: PTX text built by build.rs, embedded as a string (as candle
//!   embeds its kernels) and JIT-compiled by the driver (cuModuleLoadData).
//! * `add_two`: compiled by nvcc into a static library linked into the
//!   binary (as flash-attn and mistralrs-quant are), its fatbin in the ELF's
//!   `.nv_fatbin` section, launched through the static CUDA runtime.
//!
//! The driver library is opened at run time with dlopen, never linked (and
//! the static runtime does the same), so the binary starts (and
//! `--version`, `info`, `serve` work) on machines without the NVIDIA driver,
//! such as build hosts and CI.

use demo_tensor::Tensor;
use std::ffi::{c_char, c_int, c_uint, c_void, CStr, CString};

/// The PTX text built by build.rs (`.target sm_<cc>`), as candle embeds it.
pub static PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/add_one.ptx"));

extern "C" {
    /// kernels/quant.cu, from the static library build.rs links.
    fn mistralrs_quant_add_two(
        host: *mut c_int,
        n: c_int,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
}

type CuResult = c_int;
type CuDevice = c_int;
type CuDevicePtr = u64;
type Handle = *mut c_void;

const CUDA_SUCCESS: CuResult = 0;
const CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR: c_int = 75;
const CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR: c_int = 76;
const RTLD_NOW: c_int = 2;

// In glibc itself since 2.34; Rust's std links libdl for older ones anyway.
extern "C" {
    fn dlopen(filename: *const c_char, flags: c_int) -> Handle;
    fn dlsym(handle: Handle, symbol: *const c_char) -> Handle;
    fn dlerror() -> *mut c_char;
}

/// The driver API entry points selftest uses. Where the API has `_v2`
/// symbols those are the real ones (the unsuffixed names are legacy ABI).
#[allow(non_snake_case)]
struct Driver {
    cuGetErrorName: unsafe extern "C" fn(CuResult, *mut *const c_char) -> CuResult,
    cuInit: unsafe extern "C" fn(c_uint) -> CuResult,
    cuDriverGetVersion: unsafe extern "C" fn(*mut c_int) -> CuResult,
    cuDeviceGetCount: unsafe extern "C" fn(*mut c_int) -> CuResult,
    cuDeviceGet: unsafe extern "C" fn(*mut CuDevice, c_int) -> CuResult,
    cuDeviceGetName: unsafe extern "C" fn(*mut c_char, c_int, CuDevice) -> CuResult,
    cuDeviceGetAttribute: unsafe extern "C" fn(*mut c_int, c_int, CuDevice) -> CuResult,
    cuDevicePrimaryCtxRetain: unsafe extern "C" fn(*mut Handle, CuDevice) -> CuResult,
    cuDevicePrimaryCtxRelease_v2: unsafe extern "C" fn(CuDevice) -> CuResult,
    cuCtxSetCurrent: unsafe extern "C" fn(Handle) -> CuResult,
    cuCtxSynchronize: unsafe extern "C" fn() -> CuResult,
    cuModuleLoadData: unsafe extern "C" fn(*mut Handle, *const c_void) -> CuResult,
    cuModuleUnload: unsafe extern "C" fn(Handle) -> CuResult,
    cuModuleGetFunction: unsafe extern "C" fn(*mut Handle, Handle, *const c_char) -> CuResult,
    cuMemAlloc_v2: unsafe extern "C" fn(*mut CuDevicePtr, usize) -> CuResult,
    cuMemFree_v2: unsafe extern "C" fn(CuDevicePtr) -> CuResult,
    cuMemcpyHtoD_v2: unsafe extern "C" fn(CuDevicePtr, *const c_void, usize) -> CuResult,
    cuMemcpyDtoH_v2: unsafe extern "C" fn(*mut c_void, CuDevicePtr, usize) -> CuResult,
    #[allow(clippy::type_complexity)]
    cuLaunchKernel: unsafe extern "C" fn(
        Handle,
        c_uint,
        c_uint,
        c_uint,
        c_uint,
        c_uint,
        c_uint,
        c_uint,
        Handle,
        *mut *mut c_void,
        *mut *mut c_void,
    ) -> CuResult,
}

/// (exit status, message) of a failed selftest.
pub type Failure = (u8, String);

fn last_dl_error() -> String {
    // SAFETY: dlerror returns NULL or a NUL-terminated thread-local string.
    unsafe {
        let err = dlerror();
        if err.is_null() {
            "unknown error".to_string()
        } else {
            CStr::from_ptr(err).to_string_lossy().into_owned()
        }
    }
}

/// Look `name` up in `lib` as a function pointer of type `F`.
unsafe fn sym<F: Copy>(lib: Handle, name: &str) -> Result<F, Failure> {
    assert_eq!(std::mem::size_of::<F>(), std::mem::size_of::<Handle>());
    let cname = CString::new(name).expect("symbol names have no NUL");
    let ptr = dlsym(lib, cname.as_ptr());
    if ptr.is_null() {
        return Err((2, format!("libcuda.so.1 lacks {name}: {}", last_dl_error())));
    }
    Ok(std::mem::transmute_copy::<Handle, F>(&ptr))
}

impl Driver {
    fn load() -> Result<Driver, Failure> {
        // SAFETY: plain C calls with NUL-terminated strings.
        let lib = unsafe { dlopen(c"libcuda.so.1".as_ptr(), RTLD_NOW) };
        if lib.is_null() {
            return Err((
                2,
                format!(
                    "NVIDIA driver library libcuda.so.1 not found: {}",
                    last_dl_error()
                ),
            ));
        }
        // One line per symbol below, each field's type picked by inference.
        macro_rules! load {
            ($($name:ident),* $(,)?) => {
                // SAFETY: lib is a live handle; each symbol has the C
                // signature its Driver field declares.
                Driver { $($name: unsafe { sym(lib, stringify!($name))? }),* }
            };
        }
        Ok(load!(
            cuGetErrorName,
            cuInit,
            cuDriverGetVersion,
            cuDeviceGetCount,
            cuDeviceGet,
            cuDeviceGetName,
            cuDeviceGetAttribute,
            cuDevicePrimaryCtxRetain,
            cuDevicePrimaryCtxRelease_v2,
            cuCtxSetCurrent,
            cuCtxSynchronize,
            cuModuleLoadData,
            cuModuleUnload,
            cuModuleGetFunction,
            cuMemAlloc_v2,
            cuMemFree_v2,
            cuMemcpyHtoD_v2,
            cuMemcpyDtoH_v2,
            cuLaunchKernel,
        ))
    }

    /// Turn a CUresult into Ok or an exit-1 failure naming the call.
    fn check(&self, what: &str, res: CuResult) -> Result<(), Failure> {
        if res == CUDA_SUCCESS {
            return Ok(());
        }
        let mut name: *const c_char = std::ptr::null();
        // SAFETY: cuGetErrorName stores a pointer to a static string.
        let name = unsafe {
            if (self.cuGetErrorName)(res, &mut name) == CUDA_SUCCESS && !name.is_null() {
                CStr::from_ptr(name).to_string_lossy().into_owned()
            } else {
                format!("CUresult {res}")
            }
        };
        Err((1, format!("{what} failed: {name}")))
    }
}

/// Run `add_one` from the embedded PTX (driver JIT) and `add_two` from the
/// static library (CUDA runtime)
/// (JIT-compiled by the driver) on GPU 0. `built_cc` is e.g. "90".
pub fn selftest(built_cc: &str) -> Result<String, Failure> {
    let cu = Driver::load()?;
    // SAFETY: every call below follows the driver API's documented contract;
    // pointers passed point to live locals or buffers of the stated size.
    unsafe {
        cu.check("cuInit", (cu.cuInit)(0))?;
        let mut count = 0;
        cu.check("cuDeviceGetCount", (cu.cuDeviceGetCount)(&mut count))?;
        if count == 0 {
            return Err((1, "no CUDA device found".to_string()));
        }
        let mut dev: CuDevice = 0;
        cu.check("cuDeviceGet", (cu.cuDeviceGet)(&mut dev, 0))?;
        let mut name = [0 as c_char; 256];
        cu.check(
            "cuDeviceGetName",
            (cu.cuDeviceGetName)(name.as_mut_ptr(), 256, dev),
        )?;
        let name = CStr::from_ptr(name.as_ptr()).to_string_lossy().into_owned();
        let (mut major, mut minor) = (0, 0);
        let attr = cu.cuDeviceGetAttribute;
        cu.check(
            "cuDeviceGetAttribute",
            attr(
                &mut major,
                CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR,
                dev,
            ),
        )?;
        cu.check(
            "cuDeviceGetAttribute",
            attr(
                &mut minor,
                CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR,
                dev,
            ),
        )?;
        let gpu_cc = format!("{major}{minor}");
        // The SASS is for exactly one architecture: refuse any other GPU
        // rather than silently falling back to JIT (or failing later).
        if gpu_cc != built_cc {
            return Err((
                3,
                format!(
                    "this binary was built for sm_{built_cc} but GPU 0 is sm_{gpu_cc} ({name})"
                ),
            ));
        }

        let mut ctx: Handle = std::ptr::null_mut();
        cu.check(
            "cuDevicePrimaryCtxRetain",
            (cu.cuDevicePrimaryCtxRetain)(&mut ctx, dev),
        )?;
        cu.check("cuCtxSetCurrent", (cu.cuCtxSetCurrent)(ctx))?;
        // NUL-terminated copy: the driver reads PTX as a C string.
        let ptx = CString::new(PTX).expect("PTX text has no NUL byte");
        let result = run_add_one(&cu, ptx.as_ptr().cast(), "the embedded PTX");
        (cu.cuDevicePrimaryCtxRelease_v2)(dev);
        let result = result.and_then(|_| run_add_two());
        if let Err((code, msg)) = result {
            let mut version = 0;
            (cu.cuDriverGetVersion)(&mut version);
            // The usual cause of a load failure is a driver older than the
            // CUDA toolkit that built the binary; say what the driver has.
            let hint = format!(
                " (driver supports CUDA {}.{})",
                version / 1000,
                version % 1000 / 10
            );
            return Err((code, msg + &hint));
        }
        Ok(format!(
            "selftest ok: sm_{gpu_cc} on {name}: add_one (embedded PTX, driver JIT) \
             and add_two (static library, .nv_fatbin) ran"
        ))
    }
}

/// Load `image`, run add_one over 1000 ints and check every result.
unsafe fn run_add_one(cu: &Driver, image: *const c_void, what: &str) -> Result<(), Failure> {
    let fail = |msg: &str| format!("{msg} ({what})");
    let mut module: Handle = std::ptr::null_mut();
    cu.check(
        &fail("cuModuleLoadData"),
        (cu.cuModuleLoadData)(&mut module, image),
    )?;
    let mut func: Handle = std::ptr::null_mut();
    let res = (cu.cuModuleGetFunction)(&mut func, module, c"add_one".as_ptr());
    cu.check(&fail("cuModuleGetFunction(add_one)"), res)?;

    let host: Vec<c_int> = (0..1000).collect();
    let bytes = std::mem::size_of_val(host.as_slice());
    let mut dptr: CuDevicePtr = 0;
    cu.check("cuMemAlloc_v2", (cu.cuMemAlloc_v2)(&mut dptr, bytes))?;
    let result = (|| {
        cu.check(
            "cuMemcpyHtoD_v2",
            (cu.cuMemcpyHtoD_v2)(dptr, host.as_ptr().cast(), bytes),
        )?;
        let mut n = host.len() as c_int;
        let mut params = [
            (&mut dptr as *mut CuDevicePtr).cast::<c_void>(),
            (&mut n as *mut c_int).cast::<c_void>(),
        ];
        let blocks = (host.len() as c_uint).div_ceil(256);
        let launch = (cu.cuLaunchKernel)(
            func,
            blocks,
            1,
            1,
            256,
            1,
            1,
            0,
            std::ptr::null_mut(),
            params.as_mut_ptr(),
            std::ptr::null_mut(),
        );
        cu.check(&fail("cuLaunchKernel(add_one)"), launch)?;
        cu.check(&fail("cuCtxSynchronize"), (cu.cuCtxSynchronize)())?;
        let mut back = vec![0 as c_int; host.len()];
        cu.check(
            "cuMemcpyDtoH_v2",
            (cu.cuMemcpyDtoH_v2)(back.as_mut_ptr().cast(), dptr, bytes),
        )?;
        match back.iter().zip(&host).position(|(b, h)| *b != h + 1) {
            None => Ok(()),
            Some(i) => Err((
                1,
                fail(&format!(
                    "add_one gave {} at {i}, expected {}",
                    back[i],
                    i + 1
                )),
            )),
        }
    })();
    (cu.cuMemFree_v2)(dptr);
    (cu.cuModuleUnload)(module);
    result
}

/// Run add_two from the static library over 1000 ints and check every result.
fn run_add_two() -> Result<(), Failure> {
    let host = Tensor::arange(1000);
    let mut data = Tensor(host.0.clone());
    let mut err = [0 as c_char; 512];
    // SAFETY: data holds data.len() ints; err is writable and its length given.
    let code = unsafe {
        mistralrs_quant_add_two(
            data.0.as_mut_ptr(),
            data.0.len() as c_int,
            err.as_mut_ptr(),
            err.len(),
        )
    };
    if code != 0 {
        // SAFETY: the launcher wrote a NUL-terminated message (snprintf).
        let msg = unsafe { CStr::from_ptr(err.as_ptr()) }
            .to_string_lossy()
            .into_owned();
        return Err((1, format!("{msg} (the static library)")));
    }
    match data.first_mismatch(&host, 2) {
        None => Ok(()),
        Some(i) => Err((
            1,
            format!(
                "add_two gave {} at {i}, expected {} (the static library)",
                data.0[i],
                i + 2
            ),
        )),
    }
}
