//! `mistralrs-server`: the demo's server binary before `mistralrs` replaced
//! it. Its command line has no `serve` subcommand: options, then the model
//! kind and the model, as upstream's old server took them.

use mistralrs_core::{BuildInfo, COMPUTE_CAP};
use std::process::ExitCode;

const NAME: &str = "mistralrs-server";
const VERSION: &str = env!("CARGO_PKG_VERSION");
const FEATURES: &str = env!("MISTRALRS_FEATURES");

const USAGE: &str = "\
usage: mistralrs-server --version
       mistralrs-server info
       mistralrs-server selftest
       mistralrs-server [--serve-ip HOST] [--port PORT] plain -m MODEL
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = match args.first().map(String::as_str) {
        Some("--version" | "-V") if args.len() == 1 => {
            println!("{}", mistralrs_core::banner(NAME, VERSION));
            0
        }
        Some("info") if args.len() == 1 => {
            let info = BuildInfo {
                name: NAME,
                version: VERSION,
                compute_cap: COMPUTE_CAP,
                features: FEATURES.split(',').filter(|f| !f.is_empty()).collect(),
            };
            println!("{}", info.to_json());
            0
        }
        Some("selftest") if args.len() == 1 => match mistralrs_core::selftest() {
            Ok(msg) => {
                println!("{msg}");
                0
            }
            Err((code, msg)) => {
                eprintln!("error: {msg}");
                code
            }
        },
        _ => serve(&args),
    };
    ExitCode::from(code)
}

fn usage_error(msg: &str) -> u8 {
    eprintln!("error: {msg}\n\n{USAGE}");
    2
}

/// `[--serve-ip HOST] [--port PORT] plain -m MODEL`; defaults 0.0.0.0:1234.
fn serve(args: &[String]) -> u8 {
    let (mut host, mut port, mut model) = ("0.0.0.0".to_string(), 1234u16, None);
    let mut kind_seen = false;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "plain" if !kind_seen => kind_seen = true,
            "--serve-ip" | "--port" | "-m" | "--model-id" => {
                let Some(value) = it.next() else {
                    return usage_error(&format!("{arg} needs a value"));
                };
                match arg.as_str() {
                    "--serve-ip" => host = value.clone(),
                    "--port" => match value.parse() {
                        Ok(p) => port = p,
                        Err(_) => return usage_error(&format!("invalid port '{value}'")),
                    },
                    _ if kind_seen => model = Some(value.clone()),
                    _ => {
                        return usage_error(&format!("{arg} belongs after the model kind (plain)"))
                    }
                }
            }
            other => return usage_error(&format!("unrecognized argument '{other}'")),
        }
    }
    match (kind_seen, model) {
        (true, Some(model)) => mistralrs_core::server::listen(&host, port, &model),
        _ => usage_error("missing model: plain -m MODEL"),
    }
}
