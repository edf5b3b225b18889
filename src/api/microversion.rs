//! Compute API microversions: parsing the request headers, range checks and the response headers
//! (`spec/nova-keypairs.md` §4).

use axum::http::{HeaderMap, HeaderValue};

use super::error::ApiError;

/// A compute API microversion `2.X`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct MicroVersion {
    major: u32,
    minor: u32,
}

impl MicroVersion {
    pub const MIN: Self = Self::new(2, 1);
    /// The maximum we claim: the maximum python-novaclient knows. Nothing in os-keypairs changed after 2.92.
    pub const MAX: Self = Self::new(2, 96);

    pub const fn new(major: u32, minor: u32) -> Self {
        Self { major, minor }
    }

    /// True when this version is at least `2.minor`.
    pub fn at_least(self, minor: u32) -> bool {
        self >= Self::new(2, minor)
    }

    /// Parses a header value (already trimmed): `latest` or `MajorNum.MinorNum` without leading zeros.
    fn parse(value: &str) -> Option<Self> {
        if value == "latest" {
            return Some(Self::MAX);
        }
        let (major, minor) = value.split_once('.')?;
        let is_number = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !is_number(major) || !is_number(minor) || major.starts_with('0') || (minor.starts_with('0') && minor != "0")
        {
            return None;
        }
        Some(Self { major: major.parse().ok()?, minor: minor.parse().ok()? })
    }

    /// Reads the requested version from `OpenStack-API-Version` (the `compute` entry) or, failing that,
    /// `X-OpenStack-Nova-API-Version`; 2.1 when neither names one.
    ///
    /// A malformed value is 400 (no version headers); a version outside [MIN, MAX] is 406, which echoes the
    /// requested version, so it is returned with the error.
    pub fn negotiate(headers: &HeaderMap) -> Result<Self, (ApiError, Option<Self>)> {
        let Some(raw) = requested_value(headers) else {
            return Ok(Self::MIN);
        };
        let version = Self::parse(&raw).ok_or_else(|| (ApiError::malformed_version(&raw), None))?;
        if version < Self::MIN || version > Self::MAX {
            return Err((
                ApiError::unsupported_version(&version.to_string(), &Self::MIN.to_string(), &Self::MAX.to_string()),
                Some(version),
            ));
        }
        Ok(version)
    }

    /// Adds the echo headers and `Vary` to a `/v2.1` response.
    pub fn write_headers(self, headers: &mut HeaderMap) {
        let text = self.to_string();
        if let Ok(value) = HeaderValue::from_str(&format!("compute {text}")) {
            headers.insert("openstack-api-version", value);
        }
        if let Ok(value) = HeaderValue::from_str(&text) {
            headers.insert("x-openstack-nova-api-version", value);
        }
        headers.append("vary", HeaderValue::from_static("OpenStack-API-Version"));
        headers.append("vary", HeaderValue::from_static("X-OpenStack-Nova-API-Version"));
    }
}

impl std::fmt::Display for MicroVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// The raw, trimmed version string the request asks for, if any.
///
/// As Nova reads them: repeated headers count as one comma-separated list; in `OpenStack-API-Version` the
/// last `compute` entry that carries a version wins (entries without one are skipped); the legacy header's
/// last comma-separated value is used, even when it is empty (then malformed).
fn requested_value(headers: &HeaderMap) -> Option<String> {
    let joined = |name: &str| {
        let values: Vec<String> =
            headers.get_all(name).iter().map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()).collect();
        (!values.is_empty()).then(|| values.join(","))
    };
    let from_new_header = joined("openstack-api-version").and_then(|text| {
        text.rsplit(',').find_map(|entry| {
            let (service, version) = entry.trim().split_once(char::is_whitespace)?;
            let version = version.trim();
            (service.eq_ignore_ascii_case("compute") && !version.is_empty()).then(|| version.to_owned())
        })
    });
    if from_new_header.is_some() {
        return from_new_header;
    }
    let legacy = joined("x-openstack-nova-api-version")?;
    Some(legacy.rsplit(',').next().unwrap_or("").trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).expect("header value"));
        }
        map
    }

    type Outcome = Result<String, (String, u16)>;

    fn negotiated(pairs: &[(&'static str, &str)]) -> Result<String, (String, u16)> {
        MicroVersion::negotiate(&headers(pairs))
            .map(|v| v.to_string())
            .map_err(|(e, _)| (e.code.to_owned(), e.status.as_u16()))
    }

    #[test]
    fn negotiation_follows_the_spec_table() {
        let ok = |v: &str| Ok(v.to_owned());
        let bad = |code: &str, status| Err((code.to_owned(), status));
        let table: Vec<(&[(&'static str, &str)], Outcome)> = vec![
            (&[], ok("2.1")),
            (&[("openstack-api-version", "compute 2.35")], ok("2.35")),
            (&[("openstack-api-version", "COMPUTE 2.35")], ok("2.35")),
            (&[("openstack-api-version", "  compute  2.10 ")], ok("2.10")),
            (&[("openstack-api-version", "volume 3.0, compute 2.35")], ok("2.35")),
            (&[("openstack-api-version", "volume 3.0")], ok("2.1")),
            (&[("openstack-api-version", "volume 3.0"), ("x-openstack-nova-api-version", "2.5")], ok("2.5")),
            (&[("openstack-api-version", "compute 2.7"), ("x-openstack-nova-api-version", "2.5")], ok("2.7")),
            (&[("x-openstack-nova-api-version", " 2.92 ")], ok("2.92")),
            (&[("openstack-api-version", "compute latest")], ok("2.96")),
            (&[("x-openstack-nova-api-version", "latest")], ok("2.96")),
            (&[("openstack-api-version", "compute LATEST")], bad("KPS.1006", 400)),
            (&[("openstack-api-version", "compute Latest")], bad("KPS.1006", 400)),
            (&[("openstack-api-version", "compute 2")], bad("KPS.1006", 400)),
            (&[("openstack-api-version", "compute 2.01")], bad("KPS.1006", 400)),
            (&[("openstack-api-version", "compute 02.1")], bad("KPS.1006", 400)),
            (&[("openstack-api-version", "compute 2.1.1")], bad("KPS.1006", 400)),
            (&[("openstack-api-version", "compute")], ok("2.1")),
            (&[("openstack-api-version", "compute "), ("x-openstack-nova-api-version", "2.35")], ok("2.35")),
            (&[("openstack-api-version", "compute 2.2, compute 2.35")], ok("2.35")),
            (&[("openstack-api-version", "compute 2.2"), ("openstack-api-version", "compute 2.35")], ok("2.35")),
            (&[("x-openstack-nova-api-version", "2.2, 2.35")], ok("2.35")),
            (&[("x-openstack-nova-api-version", "")], bad("KPS.1006", 400)),
            (&[("openstack-api-version", "compute 2.10 x")], bad("KPS.1006", 400)),
            (&[("openstack-api-version", "compute 2.97")], bad("KPS.1007", 406)),
            (&[("openstack-api-version", "compute 2.200")], bad("KPS.1007", 406)),
            (&[("openstack-api-version", "compute 2.0")], bad("KPS.1007", 406)),
            (&[("openstack-api-version", "compute 3.0")], bad("KPS.1007", 406)),
            (&[("openstack-api-version", "compute 1.1")], bad("KPS.1007", 406)),
        ];
        for (input, expected) in table {
            assert_eq!(negotiated(input), expected, "{input:?}");
        }
    }

    #[test]
    fn unsupported_version_message_echoes_the_request() {
        let (error, echoed) =
            MicroVersion::negotiate(&headers(&[("openstack-api-version", "compute 2.200")])).expect_err("406");
        assert_eq!(error.message, "Version 2.200 is not supported by the API. Minimum is 2.1 and maximum is 2.96.");
        assert_eq!(echoed, Some(MicroVersion::new(2, 200)));
    }

    #[test]
    fn response_headers_echo_and_vary() {
        let mut map = HeaderMap::new();
        MicroVersion::new(2, 35).write_headers(&mut map);
        assert_eq!(map["openstack-api-version"], "compute 2.35");
        assert_eq!(map["x-openstack-nova-api-version"], "2.35");
        let vary: Vec<_> = map.get_all("vary").iter().collect();
        assert_eq!(vary, ["OpenStack-API-Version", "X-OpenStack-Nova-API-Version"]);
    }
}
