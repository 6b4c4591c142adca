//! A blocking HTTP/1.1 client for the management API: one request per connection, basic
//! auth, JSON. Enough for a command-line tool; no TLS (the API listens on loopback in dev
//! setups; put a proxy in front otherwise).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use base64::Engine;
use serde_json::Value;

use crate::Error;

/// Where the API is and who calls it.
#[derive(Debug, Clone)]
pub struct Api {
    /// `host:port`.
    pub authority: String,
    /// Basic-auth user.
    pub user: String,
    /// Basic-auth password.
    pub password: String,
    /// How long a request may take.
    pub timeout: Duration,
}

/// An answer.
#[derive(Debug)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Body.
    pub body: String,
}

impl Answer {
    /// The body as JSON.
    pub fn json(&self) -> Result<Value, Error> {
        serde_json::from_str(&self.body).map_err(|e| Error::Protocol(format!("not JSON: {e}")))
    }

    /// The API's reason for a refusal, or the status.
    pub fn reason(&self) -> String {
        serde_json::from_str::<Value>(&self.body)
            .ok()
            .and_then(|v| v.get("reason").and_then(Value::as_str).map(str::to_string))
            .unwrap_or_else(|| format!("HTTP {}", self.status))
    }
}

impl Api {
    /// From a URL such as `http://guest:guest@localhost:15672` (credentials optional).
    pub fn parse(url: &str, timeout: Duration) -> Result<Api, Error> {
        let rest = url.strip_prefix("http://").ok_or_else(|| {
            Error::Usage(format!("{url}: only http:// management URLs are supported"))
        })?;
        let rest = rest.split('/').next().unwrap_or(rest);
        let (creds, authority) = match rest.rsplit_once('@') {
            Some((c, a)) => (Some(c), a),
            None => (None, rest),
        };
        let (user, password) = match creds.and_then(|c| c.split_once(':')) {
            Some((u, p)) => (u.to_string(), p.to_string()),
            None => ("guest".to_string(), "guest".to_string()),
        };
        let authority =
            if authority.contains(':') { authority.to_string() } else { format!("{authority}:80") };
        Ok(Api { authority, user, password, timeout })
    }

    /// Sends one request.
    pub fn request(&self, method: &str, path: &str, body: Option<&str>) -> Result<Answer, Error> {
        let addr = self
            .authority
            .to_socket_addrs()
            .map_err(|e| Error::Unreachable(format!("{}: {e}", self.authority)))?
            .next()
            .ok_or_else(|| Error::Unreachable(self.authority.clone()))?;
        let mut s = TcpStream::connect_timeout(&addr, self.timeout)
            .map_err(|e| Error::Unreachable(format!("{}: {e}", self.authority)))?;
        let _ = s.set_read_timeout(Some(self.timeout));
        let token = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", self.user, self.password));
        let body = body.unwrap_or("");
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Basic {token}\r\n\
             Connection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.authority,
            body.len()
        );
        s.write_all(req.as_bytes()).map_err(|e| Error::Unreachable(e.to_string()))?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).map_err(|e| Error::Unreachable(e.to_string()))?;
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| Error::Protocol("a cut answer".into()))?;
        let head = String::from_utf8_lossy(&raw[..split]).into_owned();
        let rest = &raw[split + 4..];
        let status = head
            .lines()
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| Error::Protocol("no status line".into()))?;
        let chunked = head.lines().any(|l| {
            let l = l.to_ascii_lowercase();
            l.starts_with("transfer-encoding:") && l.contains("chunked")
        });
        let body = if chunked { dechunk(rest) } else { rest.to_vec() };
        let body = String::from_utf8_lossy(&body).into_owned();
        match status {
            401 => Err(Error::Refused(Answer { status, body: body.clone() }.reason())),
            _ => Ok(Answer { status, body }),
        }
    }

    /// GET, expecting JSON.
    pub fn get(&self, path: &str) -> Result<Value, Error> {
        let a = self.request("GET", path, None)?;
        match a.status {
            200 => a.json(),
            404 => Err(Error::NotFound(path.to_string())),
            _ => Err(Error::Failed(a.reason())),
        }
    }

    /// A change (PUT, POST, DELETE): `Ok` for 2xx.
    pub fn change(&self, method: &str, path: &str, body: Option<&str>) -> Result<Answer, Error> {
        let a = self.request(method, path, body)?;
        match a.status {
            200..=299 => Ok(a),
            404 => Err(Error::NotFound(a.reason())),
            _ => Err(Error::Failed(a.reason())),
        }
    }
}

/// The body of a chunked answer, on bytes (a chunk may end inside a character).
pub fn dechunk(mut rest: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&rest[..eol]).unwrap_or("0");
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        let after = &rest[eol + 2..];
        if n == 0 || after.len() < n {
            break;
        }
        out.extend_from_slice(&after[..n]);
        rest = after[n..].strip_prefix(b"\r\n").unwrap_or(&after[n..]);
    }
    out
}

/// A path segment, percent-encoded.
pub fn seg(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_segments() {
        let api = Api::parse("http://u:p@example:15699/ignored", Duration::from_secs(1)).unwrap();
        assert_eq!(
            (api.authority.as_str(), api.user.as_str(), api.password.as_str()),
            ("example:15699", "u", "p")
        );
        let api = Api::parse("http://localhost:15672", Duration::from_secs(1)).unwrap();
        assert_eq!((api.user.as_str(), api.password.as_str()), ("guest", "guest"));
        assert!(Api::parse("https://x", Duration::from_secs(1)).is_err());
        assert_eq!(seg("/"), "%2F");
        assert_eq!(seg("127.0.0.1:5 -> x"), "127.0.0.1%3A5%20-%3E%20x");
        assert_eq!(dechunk(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"), b"abcde");
        // A chunk boundary inside a two-byte character.
        assert_eq!(dechunk(b"1\r\n\xc3\r\n1\r\n\xa9\r\n0\r\n\r\n"), "\u{e9}".as_bytes());
    }
}
