//! What one health-check runner needs, prepared once from the baked config:
//! the probe target parsed (URL, address, the HTTP request bytes, the probe
//! process spec) so that each probe only does I/O.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::net::TcpStream;

use crate::config::{HealthProbe, Healthcheck};
use crate::containment::ConfigCgroup;
use crate::process::{OutputMode, ProcessSpec};

/// One service's health check, ready to [`start`](super::start).
#[derive(Debug, Clone)]
pub struct HealthSpec {
    /// Echoed in every event.
    pub service: String,
    /// Echoed in every event so the orchestrator can drop events of a
    /// runner it has already replaced (e.g. across a restart).
    pub generation: u64,
    pub interval: Duration,
    pub timeout: Duration,
    pub retries: u32,
    pub start_period: Duration,
    pub(crate) target: ProbeTarget,
    /// In cgroup mode, where each command probe gets a cgroup of its own.
    pub(crate) cgroups: Option<ConfigCgroup>,
    /// Where a previous daemon's check of this service stood.
    pub resumed: Option<ResumedHealth>,
}

/// A health check's state handed over by a previous daemon.
#[derive(Debug, Clone, Copy)]
pub struct ResumedHealth {
    pub status: super::HealthStatus,
    pub failures: u32,
    /// How long the service had been running.
    pub up_for: std::time::Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum HealthSpecError {
    #[error(
        "service `{service}`: healthcheck `http: {url}`: https probes are not supported; \
         use a CMD probe with curl, e.g. test: [\"CMD\", \"curl\", \"-fsS\", \"{url}\"]"
    )]
    HttpsUnsupported { service: String, url: String },
    #[error(
        "service `{service}`: healthcheck `http: {url}` is not a usable URL: {why}; \
         expected http://host[:port]/path"
    )]
    BadUrl {
        service: String,
        url: String,
        why: String,
    },
    #[error(
        "service `{service}`: healthcheck `tcp: {address}` is not a TCP address: {why}; \
         expected host:port like localhost:5432"
    )]
    BadAddress {
        service: String,
        address: String,
        why: String,
    },
    #[error("service `{service}`: the healthcheck command is empty; give the program to run")]
    EmptyCommand { service: String },
}

impl HealthSpec {
    /// Prepares `check` for `service`. Command probes run like the service
    /// itself: `service_process` gives their environment, working directory,
    /// user and limits (its argv and output modes are replaced).
    pub fn new(
        service: impl Into<String>,
        generation: u64,
        check: &Healthcheck,
        service_process: &ProcessSpec,
    ) -> Result<Self, HealthSpecError> {
        let service = service.into();
        let target = match &check.probe {
            HealthProbe::Test(argv) => {
                if argv.first().is_none_or(|program| program.trim().is_empty()) {
                    return Err(HealthSpecError::EmptyCommand { service });
                }
                ProbeTarget::Exec(Box::new(ProcessSpec {
                    argv: argv.clone(),
                    // Piped so the last line of output can explain a failure.
                    stdout: OutputMode::Pipe,
                    stderr: OutputMode::Pipe,
                    ..service_process.clone()
                }))
            }
            HealthProbe::Http(url) => ProbeTarget::Http(HttpTarget::parse(url, &service)?),
            HealthProbe::Tcp(address) => {
                let endpoint =
                    Endpoint::parse(address, None).map_err(|why| HealthSpecError::BadAddress {
                        service: service.clone(),
                        address: address.clone(),
                        why,
                    })?;
                ProbeTarget::Tcp(endpoint)
            }
        };
        Ok(Self {
            service,
            generation,
            interval: check.interval.as_duration(),
            timeout: check.timeout.as_duration(),
            retries: check.retries,
            start_period: check.start_period.as_duration(),
            target,
            cgroups: None,
            resumed: None,
        })
    }

    /// Carries on a check a previous daemon ran (an upgrade): the status and
    /// failure count it had, and how long the service had been up, so the
    /// start period is not granted again.
    pub fn resumed(mut self, resumed: ResumedHealth) -> Self {
        self.resumed = Some(resumed);
        self
    }

    /// Command probes run in cgroups of their own below `cgroups` (the
    /// service's config's), so nothing they start escapes them.
    pub fn in_cgroups(mut self, cgroups: Option<ConfigCgroup>) -> Self {
        self.cgroups = cgroups;
        self
    }
}

#[derive(Debug, Clone)]
pub(crate) enum ProbeTarget {
    Exec(Box<ProcessSpec>),
    Http(HttpTarget),
    Tcp(Endpoint),
}

#[derive(Debug, Clone)]
pub(crate) struct HttpTarget {
    pub url: String,
    pub endpoint: Endpoint,
    /// The whole request, built once and written as is by every probe.
    pub request: Box<[u8]>,
}

impl HttpTarget {
    fn parse(url: &str, service: &str) -> Result<Self, HealthSpecError> {
        let bad = |why: &str| HealthSpecError::BadUrl {
            service: service.to_owned(),
            url: url.to_owned(),
            why: why.to_owned(),
        };
        let scheme_end = url
            .find("://")
            .ok_or_else(|| bad("it has no http:// scheme"))?;
        let scheme = &url[..scheme_end];
        if scheme.eq_ignore_ascii_case("https") {
            return Err(HealthSpecError::HttpsUnsupported {
                service: service.to_owned(),
                url: url.to_owned(),
            });
        }
        if !scheme.eq_ignore_ascii_case("http") {
            return Err(bad("only http:// is supported"));
        }
        let rest = &url[scheme_end + 3..];
        let rest = rest.split('#').next().unwrap_or_default();
        let (authority, path) = match rest.find(['/', '?']) {
            Some(at) => (&rest[..at], &rest[at..]),
            None => (rest, "/"),
        };
        let path = if path.starts_with('?') {
            format!("/{path}")
        } else {
            path.to_owned()
        };
        if authority.contains('@') {
            return Err(bad("credentials in the URL are not supported"));
        }
        if path.contains(|c: char| c.is_ascii_control() || c == ' ') {
            return Err(bad("the path contains spaces or control characters"));
        }
        let endpoint = Endpoint::parse(authority, Some(80)).map_err(|why| bad(&why))?;
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: kepler-healthcheck\r\n\
             Accept: */*\r\nConnection: close\r\n\r\n"
        );
        Ok(Self {
            url: url.to_owned(),
            endpoint,
            request: request.into_bytes().into_boxed_slice(),
        })
    }
}

/// A `host:port` to connect to. IP literals are parsed once; names are
/// resolved at every probe, so a changed DNS answer is picked up.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    host: Host,
    port: u16,
}

#[derive(Debug, Clone)]
enum Host {
    Ip(IpAddr),
    Name(String),
}

impl Endpoint {
    /// Parses `host:port`, `[v6]:port`, or a bare host when `default_port`
    /// is given.
    pub fn parse(authority: &str, default_port: Option<u16>) -> Result<Self, String> {
        let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
            let (host, after) = bracketed
                .split_once(']')
                .ok_or("the IPv6 address has no closing `]`")?;
            let port = match after {
                "" => None,
                _ => Some(
                    after
                        .strip_prefix(':')
                        .ok_or("expected `:port` after the IPv6 address")?,
                ),
            };
            (host, port)
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '/') {
            return Err("the host is missing".to_owned());
        }
        let port = match (port, default_port) {
            (Some(port), _) => match port.parse::<u16>() {
                Ok(port) if port > 0 => port,
                _ => return Err(format!("`{port}` is not a port (1-65535)")),
            },
            (None, Some(port)) => port,
            (None, None) => return Err("the port is missing".to_owned()),
        };
        let host = match host.parse::<IpAddr>() {
            Ok(ip) => Host::Ip(ip),
            Err(_) => Host::Name(host.to_owned()),
        };
        Ok(Self { host, port })
    }

    pub async fn connect(&self) -> std::io::Result<TcpStream> {
        match &self.host {
            // No resolver round trip (tokio would use the blocking pool).
            Host::Ip(ip) => TcpStream::connect(SocketAddr::new(*ip, self.port)).await,
            Host::Name(name) => TcpStream::connect((name.as_str(), self.port)).await,
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]:{}", self.port),
            Host::Ip(ip) => write!(f, "{ip}:{}", self.port),
            Host::Name(name) => write!(f, "{name}:{}", self.port),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(url: &str) -> Result<HttpTarget, HealthSpecError> {
        HttpTarget::parse(url, "web")
    }

    #[test]
    fn http_urls_become_a_prepared_request() {
        let target = http("http://localhost:8080/health?deep=1#frag").unwrap();
        assert_eq!(target.endpoint.to_string(), "localhost:8080");
        let request = String::from_utf8(target.request.to_vec()).unwrap();
        assert!(
            request.starts_with("GET /health?deep=1 HTTP/1.1\r\nHost: localhost:8080\r\n"),
            "{request}"
        );
        assert!(request.ends_with("Connection: close\r\n\r\n"));

        let bare = http("http://[::1]").unwrap();
        assert_eq!(bare.endpoint.to_string(), "[::1]:80");
        assert!(bare
            .request
            .starts_with(b"GET / HTTP/1.1\r\nHost: [::1]\r\n"));
        let query = http("http://10.0.0.1:81?x").unwrap();
        assert!(query.request.starts_with(b"GET /?x HTTP/1.1\r\n"));
    }

    #[test]
    fn unusable_urls_and_addresses_are_refused() {
        assert!(matches!(
            http("https://x/"),
            Err(HealthSpecError::HttpsUnsupported { .. })
        ));
        assert!(matches!(
            http("ftp://x/"),
            Err(HealthSpecError::BadUrl { .. })
        ));
        assert!(matches!(
            http("http://:80/"),
            Err(HealthSpecError::BadUrl { .. })
        ));
        assert!(matches!(
            http("http://a b/"),
            Err(HealthSpecError::BadUrl { .. })
        ));
        assert!(Endpoint::parse("db:5432", None).is_ok());
        assert!(Endpoint::parse("db", None).is_err());
        assert!(Endpoint::parse("db:0", None).is_err());
        assert!(Endpoint::parse("[::1", None).is_err());
    }
}
