//! Running an example's binary as an operator does, and talking HTTP/1.1
//! to it over a plain socket.

use std::{
    io::{Read, Write},
    path::PathBuf,
    process::Command,
    time::Duration,
};

/// The binary of example `name`: built by `cargo test --all-targets`, else
/// built here with `features`.
pub fn binary(name: &str, features: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let binary = dir.join("examples").join(name);
    if !binary.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let ok = Command::new(cargo)
            .args(["build", "--example", name, "--features", features])
            .status()
            .unwrap()
            .success();
        assert!(ok, "cargo build --example {name} failed");
    }
    binary
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET path` on `port`: the status line, headers and body, once it
/// answers.
pub fn get(port: u16, path: &str) -> Option<String> {
    request(port, "GET", path, None)
}

/// `method path` on `port` with a JSON `body`: the whole response, or
/// `None` when nothing answers.
pub fn request(port: u16, method: &str, path: &str, body: Option<&str>) -> Option<String> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let body = body.unwrap_or("");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    Some(response)
}
