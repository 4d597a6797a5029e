//! A TCP proxy between strata and a real registry that breaks connections
//! on purpose: resets after N bytes, stalls, throttles, or answers 503.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

/// What happens to one proxied connection (chosen by its index, from 0).
#[derive(Clone, Copy, Debug)]
pub enum Fault {
    /// Pass everything through.
    None,
    /// Close both directions after this many bytes from the registry.
    ResetAfter(usize),
    /// After this many bytes from the registry, stop sending for this long.
    StallAfter(usize, Duration),
    /// At most this many bytes per second from the registry.
    Throttle(usize),
    /// Answer the first request with a 503 and close.
    Unavailable,
    /// Close both directions after this many bytes from strata (an
    /// upload broken off mid-body).
    ResetUploadAfter(usize),
}

pub struct Proxy {
    pub addr: String,
    pub connections: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    pub fn start(
        upstream: &str,
        fault_for: impl Fn(usize) -> Fault + Send + Sync + 'static,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let connections = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (count, stop2, upstream) = (connections.clone(), stop.clone(), upstream.to_owned());
        let fault_for = Arc::new(fault_for);
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let index = count.fetch_add(1, Ordering::SeqCst);
                let fault = fault_for(index);
                let upstream = upstream.clone();
                std::thread::spawn(move || relay(client, &upstream, fault));
            }
        });
        Self {
            addr,
            connections,
            stop,
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.addr);
    }
}

fn relay(mut client: TcpStream, upstream: &str, fault: Fault) {
    if let Fault::Unavailable = fault {
        let mut buf = [0u8; 4096];
        let _ = client.read(&mut buf);
        let _ = client.write_all(
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
        let _ = client.shutdown(Shutdown::Both);
        return;
    }
    let Ok(mut server) = TcpStream::connect(upstream) else {
        return;
    };
    let (mut client_read, mut server_write) =
        (client.try_clone().unwrap(), server.try_clone().unwrap());
    std::thread::spawn(move || {
        match fault {
            Fault::ResetUploadAfter(limit) => {
                let mut taken = (&mut client_read).take(limit as u64);
                let _ = std::io::copy(&mut taken, &mut server_write);
                if taken.limit() == 0 {
                    // The limit was reached: break the connection both ways.
                    let _ = client_read.shutdown(Shutdown::Both);
                    let _ = server_write.shutdown(Shutdown::Both);
                    return;
                }
            }
            _ => {
                let _ = std::io::copy(&mut client_read, &mut server_write);
            }
        }
        let _ = server_write.shutdown(Shutdown::Write);
    });
    let mut sent = 0usize;
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match server.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut chunk = &buf[..n];
        match fault {
            Fault::ResetAfter(limit) if sent + chunk.len() > limit => {
                let _ = client.write_all(&chunk[..limit.saturating_sub(sent)]);
                let _ = client.shutdown(Shutdown::Both);
                let _ = server.shutdown(Shutdown::Both);
                return;
            }
            Fault::StallAfter(limit, pause) if sent + chunk.len() > limit && sent <= limit => {
                let head = limit - sent;
                let _ = client.write_all(&chunk[..head]);
                sent += head;
                chunk = &chunk[head..];
                std::thread::sleep(pause);
            }
            Fault::Throttle(rate) => {
                std::thread::sleep(Duration::from_secs_f64(chunk.len() as f64 / rate as f64))
            }
            _ => {}
        }
        if client.write_all(chunk).is_err() {
            break;
        }
        sent += chunk.len();
    }
    let _ = client.shutdown(Shutdown::Both);
}
