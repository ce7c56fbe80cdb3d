//! Header policy between browsers and apps: hop-by-hop headers are
//! stripped both ways, forwarding headers are set by the host only, apps
//! cannot grant cross-origin access, and every response carries strict
//! default security headers.

use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Hop-by-hop headers (RFC 9110 7.6.1) plus the proxy ones. (Names are
/// `HeaderName` constants: looking a `&str` up parses it every time.)
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Forwarding headers only the host may set.
const FORWARDING: [HeaderName; 5] = [
    header::FORWARDED,
    X_FORWARDED_FOR,
    X_FORWARDED_PROTO,
    X_FORWARDED_HOST,
    HeaderName::from_static("x-real-ip"),
];

/// Removes every header in `names` that `headers` has. One pass over the
/// (few) headers present first: most messages have none of them, and a
/// removal hashes the name even when it finds nothing (this runs several
/// times per proxied request).
fn remove_all(headers: &mut HeaderMap, names: &[HeaderName]) {
    let present: Vec<HeaderName> = headers
        .keys()
        .filter(|k| names.contains(k))
        .cloned()
        .collect();
    for name in present {
        headers.remove(name);
    }
}

/// Strips hop-by-hop headers, including any the Connection header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    remove_all(headers, &HOP_BY_HOP);
}

/// Prepares a browser's request headers for the app: hop-by-hop removed,
/// forwarding headers replaced by the host's own.
pub fn to_app(headers: &mut HeaderMap, client_ip: &str, proto: &str, host: &str) {
    strip_hop_by_hop(headers);
    remove_all(headers, &FORWARDING);
    let set = |h: &mut HeaderMap, name: HeaderName, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(name, v);
        }
    };
    set(headers, X_FORWARDED_FOR, client_ip);
    set(headers, X_FORWARDED_PROTO, proto);
    set(headers, X_FORWARDED_HOST, host);
}

/// Security headers every response gets unless the app set a value.
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
    strip_hop_by_hop(headers);
    // No CORS: an appspace can never open itself to other origins.
    if headers
        .keys()
        .any(|k| k.as_str().starts_with("access-control-"))
    {
        let cors: Vec<HeaderName> = headers
            .keys()
            .filter(|k| k.as_str().starts_with("access-control-"))
            .cloned()
            .collect();
        for name in cors {
            headers.remove(name);
        }
    }
    for (name, value) in DEFAULTS {
        if !headers.contains_key(&name) {
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
        to_app(&mut h, "127.0.0.1", "http", "a.localhost");
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
}
