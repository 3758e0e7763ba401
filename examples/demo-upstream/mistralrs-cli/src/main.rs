//! `mistralrs`: the demo binary. It has the command-line surface a package
//! of mistral.rs needs to be checked against (`--version`, `serve`), plus
//! `info` and `selftest` so a build's CUDA target can be verified.

mod serve;

use mistralrs_core::{BuildInfo, COMPUTE_CAP};
use std::process::ExitCode;

const NAME: &str = "mistralrs";
const VERSION: &str = env!("CARGO_PKG_VERSION");
/// Set by build.rs: the enabled features, comma-separated.
const FEATURES: &str = env!("MISTRALRS_FEATURES");

const USAGE: &str = "\
usage: mistralrs --version
       mistralrs info
       mistralrs selftest
       mistralrs serve -m MODEL [--host HOST] [--port PORT]

commands:
  info      print this build's name, version, compute capability and features as JSON
  selftest  run both embedded CUDA kernels on GPU 0 (exit 2: no CUDA/driver, 3: wrong GPU arch)
  serve     answer GET /health and GET /v1/models over HTTP (default 0.0.0.0:1234)
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = match args.first().map(String::as_str) {
        Some("--version" | "-V") if args.len() == 1 => {
            println!("{}", mistralrs_core::banner(NAME, VERSION));
            0
        }
        Some("--help" | "-h" | "help") if args.len() == 1 => {
            print!("{USAGE}");
            0
        }
        Some("info") if args.len() == 1 => {
            println!("{}", info().to_json());
            0
        }
        Some("selftest") if args.len() == 1 => selftest(),
        Some("serve") => serve::main(&args[1..]),
        Some(other) => usage_error(&format!("unrecognized arguments starting at '{other}'")),
        None => usage_error("missing command"),
    };
    ExitCode::from(code)
}

/// Print `msg` and the usage on stderr; exit status 2, like most CLIs.
pub fn usage_error(msg: &str) -> u8 {
    eprintln!("error: {msg}\n\n{USAGE}");
    2
}

fn info() -> BuildInfo<'static> {
    BuildInfo {
        name: NAME,
        version: VERSION,
        compute_cap: COMPUTE_CAP,
        features: FEATURES.split(',').filter(|f| !f.is_empty()).collect(),
    }
}

fn selftest() -> u8 {
    match mistralrs_core::selftest() {
        Ok(msg) => {
            println!("{msg}");
            0
        }
        Err((code, msg)) => {
            eprintln!("error: {msg}");
            code
        }
    }
}
