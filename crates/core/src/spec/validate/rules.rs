//! The character rules of names, tags and variables, and CIDR parsing: pure functions on strings.

use std::net::IpAddr;

/// `^[a-z][a-z0-9-]{0,31}$`: safe in every provider's names, tags and DNS labels.
pub(super) fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && s.len() <= 32
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// `^[A-Za-z0-9_:-]{1,64}$`: DigitalOcean's tag charset, the strictest of the providers.
pub(super) fn is_tag(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | ':' | '-'))
}

/// `^[A-Z_][A-Z0-9_]*$`: portable environment variable names.
pub(super) fn is_env_key(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_uppercase() || c == '_')
        && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

/// Parses an IPv4 or IPv6 CIDR into its canonical text; the error says what was expected.
pub(super) fn parse_cidr(s: &str) -> Result<String, String> {
    let expected = || "an IPv4 or IPv6 CIDR such as 203.0.113.0/24".to_string();
    let (ip, prefix) = s.trim().split_once('/').ok_or_else(expected)?;
    let ip: IpAddr = ip.parse().map_err(|_| expected())?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let prefix: u32 = prefix.parse().ok().filter(|&p| p <= max).ok_or_else(expected)?;
    // Firewalls reject (or silently widen) a CIDR with host bits set; say which network was meant.
    let network = match ip {
        IpAddr::V4(v4) => {
            let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
            IpAddr::from((u32::from(v4) & mask).to_be_bytes())
        }
        IpAddr::V6(v6) => {
            let mask = u128::MAX.checked_shl(128 - prefix).unwrap_or(0);
            IpAddr::from((u128::from(v6) & mask).to_be_bytes())
        }
    };
    if network != ip {
        return Err(format!("a network address with no host bits set (did you mean {network}/{prefix}?)"));
    }
    Ok(format!("{ip}/{prefix}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_documented_pattern() {
        for ok in ["a", "relay", "nine-regions", "x1", &"a".repeat(32)] {
            assert!(is_name(ok), "{ok}");
        }
        for bad in ["", "Relay", "1relay", "-a", "re_lay", "relé", &"a".repeat(33)] {
            assert!(!is_name(bad), "{bad}");
        }
    }

    #[test]
    fn tags_and_env_keys_follow_the_documented_patterns() {
        assert!(is_tag("peer_cluster") && is_tag("k8s:role-1") && is_tag(&"t".repeat(64)));
        assert!(!is_tag("") && !is_tag("a b") && !is_tag("a.b") && !is_tag(&"t".repeat(65)));
        assert!(is_env_key("LOG_LEVEL") && is_env_key("_X1"));
        assert!(!is_env_key("log_level") && !is_env_key("1X") && !is_env_key(""));
    }

    #[test]
    fn cidrs_are_checked_and_canonicalised() {
        assert_eq!(parse_cidr("203.0.113.0/24").unwrap(), "203.0.113.0/24");
        assert_eq!(parse_cidr("2001:DB8::/32").unwrap(), "2001:db8::/32");
        assert_eq!(parse_cidr("0.0.0.0/0").unwrap(), "0.0.0.0/0");
        assert_eq!(parse_cidr("198.51.100.7/32").unwrap(), "198.51.100.7/32");
        assert!(parse_cidr("203.0.113.0").is_err());
        assert!(parse_cidr("203.0.113.0/33").is_err());
        assert!(parse_cidr("example.com/24").is_err());
        assert_eq!(
            parse_cidr("203.0.113.5/24").unwrap_err(),
            "a network address with no host bits set (did you mean 203.0.113.0/24?)"
        );
    }
}
