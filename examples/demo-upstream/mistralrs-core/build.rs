//! Build script of `mistralrs-core`: the GPU code, when `cuda` is on.
//!
//! Like upstream, CUDA builds compile device code for ONE compute capability,
//! taken from `CUDA_COMPUTE_CAP` or, failing that, from the GPU of the build
//! machine via `nvidia-smi`. A packager building on a machine without a GPU
//! must therefore set `CUDA_COMPUTE_CAP`. Two kinds of GPU code come out, as
//! in the real binary:
//! * `kernels/add_one.cu` -> PTX text (`nvcc --ptx`), embedded as a string and
//!   JIT-compiled by the driver at run time (candle's kernels);
//! * `kernels/quant.cu` -> an object (`nvcc -c -arch=sm_<cc>`) archived into
//!   a static library and linked with the static CUDA runtime, so its fatbin
//!   lands in the binary's `.nv_fatbin` section (flash-attn, mistralrs-quant).
//!
//! Environment read here:
//! * `CUDA_COMPUTE_CAP`: e.g. `86`, `89`, `90`, `100`, `120`.
//! * `NVCC`: the nvcc to run (default: `nvcc` on PATH).
//! * `NVCC_CCBIN`: host compiler for nvcc (`-ccbin`), as candle honours it.
//! * `NVCC_APPEND_FLAGS` / `NVCC_PREPEND_FLAGS`: read by nvcc itself.
//! * `CUDA_HOME` / `CUDA_PATH`: the toolkit, for libcudart_static (default:
//!   the directory above nvcc's `bin/`).
//! * `AR`: the archiver (default: `ar`).

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const PTX_KERNEL: &str = "kernels/add_one.cu";
const LIB_KERNEL: &str = "kernels/quant.cu";
/// The static library's name: lib<LIB_NAME>.a in OUT_DIR.
const LIB_NAME: &str = "mistralrs_quant_kernels";

fn main() {
    // Once any rerun-if line is printed, cargo reruns only for those, so list
    // everything the output depends on.
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed={PTX_KERNEL}");
    println!("cargo:rerun-if-changed={LIB_KERNEL}");
    for var in [
        "CUDA_COMPUTE_CAP",
        "NVCC",
        "NVCC_CCBIN",
        "NVCC_APPEND_FLAGS",
        "NVCC_PREPEND_FLAGS",
        "CUDA_HOME",
        "CUDA_PATH",
        "AR",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }

    if env::var_os("CARGO_FEATURE_CUDA").is_none() {
        // CPU build: no nvcc, no GPU. Still set the variable (empty), so a
        // stray MISTRALRS_COMPUTE_CAP in the caller's environment can't leak
        // into the binary through env!().
        println!("cargo:rustc-env=MISTRALRS_COMPUTE_CAP=");
        return;
    }

    let cc = compute_cap();
    println!("cargo:rustc-env=MISTRALRS_COMPUTE_CAP={cc}");

    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    // Plain PTX text, the way candle-kernels embeds its kernels.
    nvcc(&[
        "--ptx".to_string(),
        format!("-arch=compute_{cc}"),
        "-o".to_string(),
        path_arg(&out_dir.join("add_one.ptx")),
        PTX_KERNEL.to_string(),
    ]);
    // The object's fatbin holds SASS for sm_<cc> plus PTX for compute_<cc>
    // (that is what -arch=sm_<cc> means); nvcc's default compression applies.
    // -fPIC: it goes into a position-independent executable.
    let object = out_dir.join("quant.o");
    nvcc(&[
        "-c".to_string(),
        format!("-arch=sm_{cc}"),
        "-Xcompiler".to_string(),
        "-fPIC".to_string(),
        "-o".to_string(),
        path_arg(&object),
        LIB_KERNEL.to_string(),
    ]);
    let lib = out_dir.join(format!("lib{LIB_NAME}.a"));
    let _ = std::fs::remove_file(&lib); // ar adds to an existing archive
    let ar = env::var("AR").unwrap_or_else(|_| "ar".to_string());
    tool(&ar, &["crs".to_string(), path_arg(&lib), path_arg(&object)]);
    println!("cargo:rustc-link-search=native={}", path_arg(&out_dir));
    println!("cargo:rustc-link-lib=static={LIB_NAME}");
    // The kernel's host side calls the CUDA runtime. Static, so the binary
    // needs no libcudart.so to start; it opens the driver's libcuda.so.1
    // itself on first use, like the rest of the binary.
    for dir in cuda_lib_dirs() {
        println!("cargo:rustc-link-search=native={}", path_arg(&dir));
    }
    println!("cargo:rustc-link-lib=static=cudart_static");
    println!("cargo:rustc-link-lib=dylib=stdc++");
}

/// Where libcudart_static.a may be: lib64/ and lib/ of CUDA_HOME or
/// CUDA_PATH, then the library directories nvcc itself links with (its
/// `--dryrun` shows them; nvcc on PATH may be a wrapper script, so its own
/// location says nothing).
fn cuda_lib_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = ["CUDA_HOME", "CUDA_PATH"]
        .iter()
        .filter_map(|v| env::var_os(v).map(PathBuf::from))
        .flat_map(|r| [r.join("lib64"), r.join("lib")])
        .collect();
    let nvcc = env::var("NVCC").unwrap_or_else(|_| "nvcc".to_string());
    if let Ok(out) = Command::new(&nvcc)
        .args(["--dryrun", "-x", "cu", "-c", "-o", "/dev/null", "/dev/null"])
        .output()
    {
        let said = String::from_utf8_lossy(&out.stderr).into_owned()
            + &String::from_utf8_lossy(&out.stdout);
        for line in said.lines().filter(|l| l.starts_with("#$ LIBRARIES=")) {
            for word in line.split_whitespace() {
                if let Some(dir) = word.trim_matches('"').strip_prefix("-L") {
                    dirs.push(PathBuf::from(dir));
                }
            }
        }
    }
    let found: Vec<PathBuf> = dirs
        .into_iter()
        .filter(|d| d.join("libcudart_static.a").is_file())
        .collect();
    if found.is_empty() {
        panic!(
            "\n\nlibcudart_static.a (the CUDA runtime the kernels' static library needs) was not found \
             in CUDA_HOME, CUDA_PATH or the library directories `{nvcc} --dryrun` names.\n\
             Set CUDA_HOME to the CUDA toolkit's directory.\n\n"
        );
    }
    found
}

/// The compute capability to build for, as digits only ("86", "90", "120").
fn compute_cap() -> String {
    if let Ok(value) = env::var("CUDA_COMPUTE_CAP") {
        return validate(value.trim(), "CUDA_COMPUTE_CAP");
    }
    // Same fallback as upstream: ask the build machine's GPU.
    let unknown = |why: String| -> ! {
        panic!(
            "\n\nCUDA_COMPUTE_CAP is not set and nvidia-smi {why}, so the GPU architecture \
             to build for is unknown (building on a machine without an NVIDIA GPU?).\n\
             Set CUDA_COMPUTE_CAP to the target's compute capability without the dot, \
             e.g. CUDA_COMPUTE_CAP=86 (Ampere), 89 (Ada), 90 (Hopper), 100 or 120 (Blackwell).\n\n"
        )
    };
    let out = Command::new("nvidia-smi")
        .args(["--query-gpu=compute_cap", "--format=csv,noheader"])
        .output()
        .unwrap_or_else(|err| unknown(format!("could not be run ({err})")));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let first = stdout.lines().next().unwrap_or("").trim().to_string();
    if !out.status.success() || first.is_empty() {
        // nvidia-smi reports "couldn't communicate with the driver" on stdout.
        let said = format!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
        unknown(format!("failed ({}: {})", out.status, said.trim()));
    }
    // nvidia-smi says "8.6"; with several GPUs, like upstream, take GPU 0.
    validate(&first.replace('.', ""), "nvidia-smi")
}

/// Accept a plain integer compute capability, reject anything else loudly.
/// Whether nvcc supports it is nvcc's call (CUDA 13 starts at 75).
fn validate(value: &str, source: &str) -> String {
    // Major and minor digits without the dot: 75 ... 121.
    let ok = (2..=3).contains(&value.len())
        && value.bytes().all(|b| b.is_ascii_digit())
        && !value.starts_with('0');
    if !ok {
        panic!(
            "\n\ninvalid compute capability {value:?} (from {source}): expected an integer \
             such as 86, 89, 90, 100 or 120 (major and minor digits without a dot, no \
             sm_ prefix, no a/f suffix)\n\n"
        );
    }
    value.to_string()
}

/// Run nvcc with `args`, failing the build with its output if it fails.
fn nvcc(args: &[String]) {
    let nvcc = env::var("NVCC").unwrap_or_else(|_| "nvcc".to_string());
    let mut cmd = Command::new(&nvcc);
    if let Ok(ccbin) = env::var("NVCC_CCBIN") {
        cmd.arg("-ccbin").arg(ccbin);
    }
    cmd.args(args);
    finish(
        cmd,
        &nvcc,
        args,
        "the `cuda` feature needs the CUDA compiler",
        "Put nvcc on PATH or set NVCC to its path.",
    );
}

/// Run another build tool (the archiver).
fn tool(program: &str, args: &[String]) {
    let mut cmd = Command::new(program);
    cmd.args(args);
    finish(
        cmd,
        program,
        args,
        "building the kernels' static library needs an archiver",
        "Install binutils or set AR.",
    );
}

/// Run cmd; on failure, stop the build with its output.
fn finish(mut cmd: Command, program: &str, args: &[String], need: &str, hint: &str) {
    // Capture stdout: a build script's stdout is read by cargo as directives.
    let out = match cmd.output() {
        Ok(out) => out,
        Err(err) => panic!("\n\n{need}, but running {program:?} failed: {err}\n{hint}\n\n"),
    };
    // Shown by cargo on failure or with -vv.
    eprint!("{}", String::from_utf8_lossy(&out.stdout));
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        panic!(
            "\n\n{program} {} failed ({}):\n{}\n",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
}

fn path_arg(path: &Path) -> String {
    path.to_str()
        .expect("OUT_DIR is not valid UTF-8")
        .to_string()
}
