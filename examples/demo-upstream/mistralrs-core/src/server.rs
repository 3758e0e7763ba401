//! The tiny blocking HTTP/1.1 server on std::net behind `serve`: enough for
//! a service unit's health check and an OpenAI-style model listing.

use crate::{reason, route, Response};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

/// Requests are a line and a few headers; anything bigger is not for us.
const MAX_HEAD: usize = 16 * 1024;

/// Listen on host:port and answer until killed; 1 if it cannot listen.
pub fn listen(host: &str, port: u16, model: &str) -> u8 {
    let listener = match TcpListener::bind((host, port)) {
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
                let model = model.to_string();
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
