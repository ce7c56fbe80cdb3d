//! Header policy between browsers and apps: hop-by-hop headers are
//! stripped both ways, forwarding headers are set by the host only, apps
//! cannot grant cross-origin access, and every response carries strict
//! default security headers.

use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// What the policy does with a header, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Hop-by-hop (RFC 9110 7.6.1) or a proxy's own: never passed on.
    HopByHop,
    /// Forwarding information only the host may set.
    Forwarding,
    /// Cross-origin grants, which an app may not make.
    Cors,
    /// One of the security headers every response gets ([`DEFAULTS`]).
    SecurityDefault(usize),
    /// Anything else: passed on.
    Other,
}

/// One `match` on the name: the headers present are few, and looking up
/// each name the policy knows would hash it whether present or not (this
/// runs twice per proxied request).
fn kind(name: &HeaderName) -> Kind {
    match name.as_str() {
        "connection"
        | "keep-alive"
        | "proxy-connection"
        | "proxy-authenticate"
        | "proxy-authorization"
        | "te"
        | "trailer"
        | "transfer-encoding"
        | "upgrade" => Kind::HopByHop,
        "forwarded" | "x-forwarded-for" | "x-forwarded-proto" | "x-forwarded-host"
        | "x-real-ip" => Kind::Forwarding,
        "content-security-policy" => Kind::SecurityDefault(0),
        "referrer-policy" => Kind::SecurityDefault(1),
        "x-frame-options" => Kind::SecurityDefault(2),
        "cross-origin-opener-policy" => Kind::SecurityDefault(3),
        other if other.starts_with("access-control-") => Kind::Cors,
        _ => Kind::Other,
    }
}

/// Removes every header whose kind `drop` selects, and the headers a
/// Connection header names; returns which [`DEFAULTS`] are present (a bit
/// each). Allocates only when there is something to remove.
fn remove_where(headers: &mut HeaderMap, drop: impl Fn(Kind) -> bool) -> u8 {
    let mut defaults = 0u8;
    let mut doomed = false;
    for name in headers.keys() {
        match kind(name) {
            Kind::SecurityDefault(i) => defaults |= 1 << i,
            k => doomed |= drop(k),
        }
    }
    if doomed {
        let mut names: Vec<HeaderName> = headers
            .keys()
            .filter(|name| drop(kind(name)))
            .cloned()
            .collect();
        // Connection names further hop-by-hop headers of this message.
        names.extend(
            headers
                .get_all(header::CONNECTION)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok()),
        );
        for name in names {
            headers.remove(name);
        }
        // A named security header may have gone with them.
        defaults = headers.keys().fold(0, |bits, name| match kind(name) {
            Kind::SecurityDefault(i) => bits | 1 << i,
            _ => bits,
        });
    }
    defaults
}

/// Where a request came from, as the host tells the app.
#[derive(Debug, Clone)]
pub struct Forwarding {
    /// The client's address (`X-Forwarded-For`).
    pub client_ip: HeaderValue,
    /// `http` or `https` (`X-Forwarded-Proto`).
    pub proto: HeaderValue,
    /// The Host the browser asked for (`X-Forwarded-Host`).
    pub host: HeaderValue,
}

/// Prepares a browser's request headers for the app: hop-by-hop removed,
/// forwarding headers replaced by the host's own.
pub fn to_app(headers: &mut HeaderMap, forwarding: Forwarding) {
    remove_where(headers, |k| matches!(k, Kind::HopByHop | Kind::Forwarding));
    headers.insert(X_FORWARDED_FOR, forwarding.client_ip);
    headers.insert(X_FORWARDED_PROTO, forwarding.proto);
    headers.insert(X_FORWARDED_HOST, forwarding.host);
}

/// Security headers every response gets unless the app set a value (in
/// the order of [`Kind::SecurityDefault`]'s index).
const DEFAULTS: [(HeaderName, &str); 4] = [
    (
        header::CONTENT_SECURITY_POLICY,
        "default-src 'self'; frame-ancestors 'self'",
    ),
    (header::REFERRER_POLICY, "same-origin"),
    (header::X_FRAME_OPTIONS, "SAMEORIGIN"),
    (
        HeaderName::from_static("cross-origin-opener-policy"),
        "same-origin",
    ),
];

/// Prepares an app's response headers for the browser.
pub fn to_browser(headers: &mut HeaderMap) {
    // No CORS either: an appspace can never open itself to other origins.
    let present = remove_where(headers, |k| matches!(k, Kind::HopByHop | Kind::Cors));
    for (i, (name, value)) in DEFAULTS.into_iter().enumerate() {
        if present & (1 << i) == 0 {
            headers.insert(name, HeaderValue::from_static(value));
        }
    }
    // Never let a browser guess a type an app did not declare.
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn requests_lose_hop_by_hop_and_spoofed_forwarding() {
        let mut h = map(&[
            ("connection", "keep-alive, x-secret"),
            ("x-secret", "1"),
            ("keep-alive", "5"),
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-for", "5.6.7.8"),
            ("x-forwarded-proto", "https"),
            ("x-real-ip", "1.2.3.4"),
            ("forwarded", "for=1.2.3.4"),
            ("proxy-authorization", "Basic eDp5"),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers"),
            ("trailer", "x-checksum"),
            ("upgrade", "h2c"),
            ("accept", "text/html"),
        ]);
        to_app(
            &mut h,
            Forwarding {
                client_ip: HeaderValue::from_static("127.0.0.1"),
                proto: HeaderValue::from_static("http"),
                host: HeaderValue::from_static("a.localhost"),
            },
        );
        for gone in [
            "x-secret",
            "connection",
            "keep-alive",
            "forwarded",
            "x-real-ip",
            "proxy-authorization",
            "proxy-connection",
            "te",
            "trailer",
            "upgrade",
        ] {
            assert!(h.get(gone).is_none(), "{gone} reached the app");
        }
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(h.get("x-forwarded-for").unwrap(), "127.0.0.1");
        assert_eq!(h.get("x-forwarded-proto").unwrap(), "http");
        assert_eq!(h.get("x-forwarded-host").unwrap(), "a.localhost");
        assert_eq!(h.get("accept").unwrap(), "text/html");
    }

    #[test]
    fn responses_lose_cors_and_gain_security_headers() {
        let mut h = map(&[
            ("access-control-allow-origin", "*"),
            ("access-control-allow-credentials", "true"),
            ("x-content-type-options", "whatever"),
            ("referrer-policy", "no-referrer"),
            ("transfer-encoding", "chunked"),
        ]);
        to_browser(&mut h);
        assert!(h.keys().all(|k| !k.as_str().starts_with("access-control-")));
        assert_eq!(h.get("x-content-type-options").unwrap(), "nosniff");
        assert_eq!(h.get("referrer-policy").unwrap(), "no-referrer"); // stricter app choice kept
        assert!(h
            .get("content-security-policy")
            .unwrap()
            .to_str()
            .unwrap()
            .contains("default-src 'self'"));
        assert!(h.get("transfer-encoding").is_none());
    }

    #[test]
    fn a_security_header_the_connection_header_names_is_replaced_by_the_default() {
        let mut h = map(&[
            ("connection", "close, referrer-policy"),
            ("referrer-policy", "unsafe-url"),
            ("content-type", "text/html"),
        ]);
        to_browser(&mut h);
        assert_eq!(h.get("referrer-policy").unwrap(), "same-origin");
        assert!(h.get("connection").is_none());
        assert_eq!(h.get("content-type").unwrap(), "text/html");
    }
}
