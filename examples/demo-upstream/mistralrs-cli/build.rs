//! Build script of the `mistralrs` binary.
//!
//! Like upstream (candle's kernels, flash-attn), CUDA builds compile device
//! code for ONE compute capability, taken from `CUDA_COMPUTE_CAP` or, failing
//! that, from the GPU of the build machine via `nvidia-smi`. A packager
//! building on a machine without a GPU must therefore set `CUDA_COMPUTE_CAP`.
//!
//! Environment read here:
//! * `CUDA_COMPUTE_CAP`: e.g. `86`, `89`, `90`, `100`, `120`.
//! * `NVCC`: the nvcc to run (default: `nvcc` on PATH).
//! * `NVCC_CCBIN`: host compiler for nvcc (`-ccbin`), as candle honours it.
//! * `NVCC_APPEND_FLAGS` / `NVCC_PREPEND_FLAGS`: read by nvcc itself.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const KERNEL: &str = "kernels/demo.cu";

fn main() {
    // Once any rerun-if line is printed, cargo reruns only for those, so list
    // everything the output depends on.
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed={KERNEL}");
    for var in [
        "CUDA_COMPUTE_CAP",
        "NVCC",
        "NVCC_CCBIN",
        "NVCC_APPEND_FLAGS",
        "NVCC_PREPEND_FLAGS",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }

    // Cargo sets CARGO_FEATURE_<NAME> for every enabled feature, implied
    // ones included (`flash-attn` turns on `cuda`).
    let mut features: Vec<String> = env::vars()
        .filter_map(|(k, _)| {
            k.strip_prefix("CARGO_FEATURE_")
                .map(|f| f.to_lowercase().replace('_', "-"))
        })
        .filter(|f| f != "default")
        .collect();
    features.sort();
    println!("cargo:rustc-env=MISTRALRS_FEATURES={}", features.join(","));

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
    // The fatbin holds SASS for sm_<cc> (what the driver loads directly on a
    // matching GPU) plus PTX for compute_<cc> (what it could JIT). nvcc's
    // default compression applies (CUDA 13 zstd-compresses the PTX entry);
    // the entry headers, which name kind and arch, stay plain either way.
    nvcc(&[
        "--fatbin".to_string(),
        "-gencode".to_string(),
        format!("arch=compute_{cc},code=[sm_{cc},compute_{cc}]"),
        "-o".to_string(),
        path_arg(&out_dir.join("demo.fatbin")),
        KERNEL.to_string(),
    ]);
    // Plain PTX text, the way candle-kernels embeds its kernels.
    nvcc(&[
        "--ptx".to_string(),
        format!("-arch=compute_{cc}"),
        "-o".to_string(),
        path_arg(&out_dir.join("demo.ptx")),
        KERNEL.to_string(),
    ]);
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
    // Capture stdout: a build script's stdout is read by cargo as directives.
    let out = match cmd.output() {
        Ok(out) => out,
        Err(err) => panic!(
            "\n\nthe `cuda` feature needs the CUDA compiler, but running {nvcc:?} failed: {err}\n\
             Put nvcc on PATH or set NVCC to its path.\n\n"
        ),
    };
    // Shown by cargo on failure or with -vv.
    eprint!("{}", String::from_utf8_lossy(&out.stdout));
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        panic!(
            "\n\n{nvcc} {} failed ({}):\n{}\n",
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
