//! `mistralrs serve`: a tiny blocking HTTP/1.1 server on std::net, enough
//! for a service unit's health check and an OpenAI-style model listing.

use mistralrs_core::{reason, route, Response};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

/// Upstream's defaults.
const DEFAULT_HOST: &str = "0.0.0.0";
const DEFAULT_PORT: u16 = 1234;
/// Requests are a line and a few headers; anything bigger is not for us.
const MAX_HEAD: usize = 16 * 1024;

pub fn main(args: &[String]) -> u8 {
    let mut model = None;
    let mut host = DEFAULT_HOST.to_string();
    let mut port = DEFAULT_PORT;
    let mut i = 0;
    while i < args.len() {
        // Accept both `--port 8080` and `--port=8080`.
        let (flag, inline) = match args[i].split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (args[i].as_str(), None),
        };
        let known = matches!(
            flag,
            "-m" | "--model" | "--model-id" | "--host" | "--port" | "-p"
        );
        if !known {
            // Upstream has many more options; they mean nothing here, but a
            // unit file may pass them, so go on. A following word that is not
            // an option is taken as this option's value.
            let mut ignored = args[i].clone();
            if flag.starts_with('-') && inline.is_none() {
                if let Some(next) = args.get(i + 1).filter(|n| !n.starts_with('-')) {
                    ignored = format!("{ignored} {next}");
                    i += 1;
                }
            }
            eprintln!("note: ignoring unsupported argument '{ignored}'");
            i += 1;
            continue;
        }
        let value = match (inline, args.get(i + 1)) {
            (Some(v), _) => v,
            (None, Some(v)) => {
                i += 1;
                v.clone()
            }
            (None, None) => return crate::usage_error(&format!("{flag} needs a value")),
        };
        match flag {
            "--host" => host = value,
            "--port" | "-p" => match value.parse() {
                Ok(p) => port = p,
                Err(_) => return crate::usage_error(&format!("invalid port '{value}'")),
            },
            _ => model = Some(value),
        }
        i += 1;
    }
    let Some(model) = model else {
        return crate::usage_error("serve needs a model: -m MODEL");
    };

    let listener = match TcpListener::bind((host.as_str(), port)) {
        Ok(l) => l,
        Err(err) => {
            eprintln!("error: cannot listen on {host}:{port}: {err}");
            return 1;
        }
    };
    // Print the bound address: with --port 0 the kernel picks the port.
    let port = listener.local_addr().map_or(port, |a| a.port());
    println!("listening on {host}:{port}");
    for stream in listener.incoming() {
        match stream {
            Ok(stream) => {
                let model = model.clone();
                // A thread per connection: a stalled client can't block others.
                std::thread::spawn(move || handle(stream, &model));
            }
            Err(err) => eprintln!("warning: accept failed: {err}"),
        }
    }
    0
}

fn handle(mut stream: TcpStream, model: &str) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let response = match read_head(&mut stream) {
        Some(head) => {
            let mut parts = head.lines().next().unwrap_or("").split_whitespace();
            match (parts.next(), parts.next()) {
                (Some(method), Some(path)) => {
                    let r = route(method, path, model);
                    eprintln!("{method} {path} {}", r.status);
                    r
                }
                _ => bad_request(),
            }
        }
        None => bad_request(),
    };
    let head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        response.status,
        reason(response.status),
        response.content_type,
        response.body.len()
    );
    // The client may already be gone; nothing useful to do about it.
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(response.body.as_bytes());
}

/// Read up to the blank line ending the request head. The body, if any, is
/// ignored: no route takes one.
fn read_head(stream: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    // Be lenient with clients that end lines with a bare LF.
    while !(buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.windows(2).any(|w| w == b"\n\n")) {
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 || buf.len() > MAX_HEAD {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8(buf).ok()
}

fn bad_request() -> Response {
    Response {
        status: 400,
        content_type: "text/plain",
        body: "bad request".to_string(),
    }
}
