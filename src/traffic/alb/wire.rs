//! What the ALB door writes into tags and sends over HTTP: the kept
//! generation's tag value, and the probe's one GET through the balancer.

use std::time::Duration;

use crate::traffic::{Kept, Probe};

/// `<generation>@<RFC 3339>` or `none`.
pub(super) fn kept_text(kept: Option<Kept>) -> String {
    match kept {
        Some(k) => format!("{}@{}", k.generation, humantime::format_rfc3339_seconds(k.until)),
        None => "none".to_string(),
    }
}

pub(super) fn parse_kept(text: &str) -> Option<Kept> {
    let (generation, until) = text.split_once('@')?;
    Some(Kept {
        generation: generation.parse().ok()?,
        until: humantime::parse_rfc3339(until).ok()?,
    })
}

/// One GET of `path` on `host:port`, HTTP/1.0, within five seconds.
pub(super) async fn http_get(host: &str, port: u16, path: &str) -> Probe {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect((host, port)).await?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut head = vec![0u8; 64];
        let n = stream.read(&mut head).await?;
        Ok::<String, std::io::Error>(String::from_utf8_lossy(&head[..n]).to_string())
    };
    match tokio::time::timeout(Duration::from_secs(5), attempt).await {
        Ok(Ok(head)) => {
            let status = head.split_whitespace().nth(1).unwrap_or("no status").to_string();
            Probe {
                ok: status.starts_with('2'),
                detail: status,
            }
        }
        Ok(Err(err)) => Probe {
            ok: false,
            detail: err.to_string(),
        },
        Err(_) => Probe {
            ok: false,
            detail: "no answer within 5 s".to_string(),
        },
    }
}
