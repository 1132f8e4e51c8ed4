//! Parsing `WWW-Authenticate` headers (RFC 7235): several challenges, quoted strings, commas inside
//! quotes.

use std::collections::BTreeMap;

/// One authentication challenge: scheme and parameters (names lowercased).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// Lowercased scheme (`basic`, `bearer`).
    pub scheme: String,
    /// Parameters such as realm, service, scope.
    pub params: BTreeMap<String, String>,
}

fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~/".contains(c)
}

/// The scope a challenge says the credentials lacked (`error="insufficient_scope"`): the token was
/// accepted but does not grant that.
pub fn insufficient_scope(header: &str) -> Option<String> {
    parse(header)
        .into_iter()
        .find(|c| c.params.get("error").is_some_and(|e| e == "insufficient_scope"))
        .map(|c| c.params.get("scope").cloned().unwrap_or_default())
}

/// Parses every challenge in a header value; malformed trailing parts are ignored.
pub fn parse(header: &str) -> Vec<Challenge> {
    let chars: Vec<char> = header.chars().collect();
    let mut i = 0;
    let mut out: Vec<Challenge> = Vec::new();
    let skip_ws = |i: &mut usize| {
        while *i < chars.len() && (chars[*i] == ' ' || chars[*i] == '\t') {
            *i += 1;
        }
    };
    let read_token = |i: &mut usize| {
        let s = *i;
        while *i < chars.len() && is_token_char(chars[*i]) {
            *i += 1;
        }
        chars[s..*i].iter().collect::<String>()
    };
    while i < chars.len() {
        skip_ws(&mut i);
        while i < chars.len() && (chars[i] == ',' || chars[i] == ' ') {
            i += 1;
        }
        let tok = read_token(&mut i);
        if tok.is_empty() {
            i += 1;
            continue;
        }
        skip_ws(&mut i);
        if i < chars.len() && chars[i] == '=' {
            // A parameter of the current challenge.
            i += 1;
            skip_ws(&mut i);
            let value = if i < chars.len() && chars[i] == '"' {
                i += 1;
                let mut v = String::new();
                while i < chars.len() && chars[i] != '"' {
                    if chars[i] == '\\' && i + 1 < chars.len() {
                        i += 1;
                    }
                    v.push(chars[i]);
                    i += 1;
                }
                i += 1;
                v
            } else {
                // Unquoted values are tokens by the RFC, but registries send unquoted URLs
                // (`realm=https://...`): take everything up to the next comma.
                let s = i;
                while i < chars.len() && chars[i] != ',' {
                    i += 1;
                }
                chars[s..i].iter().collect::<String>().trim().to_string()
            };
            if let Some(c) = out.last_mut() {
                c.params.insert(tok.to_ascii_lowercase(), value);
            }
        } else {
            out.push(Challenge { scheme: tok.to_ascii_lowercase(), params: BTreeMap::new() });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_with_quoted_commas() {
        let c = parse(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].scheme, "bearer");
        assert_eq!(c[0].params["realm"], "https://auth.example/token");
        assert_eq!(c[0].params["scope"], "repository:a/b:pull,push");
    }

    #[test]
    fn several_challenges() {
        let c = parse(r#"Basic realm="r", Bearer realm="https://t/x", service=reg"#);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].scheme, "basic");
        assert_eq!(c[1].params["service"], "reg");
        assert_eq!(c[1].params["realm"], "https://t/x");
    }

    #[test]
    fn unquoted_urls_case_and_errors() {
        let c = parse(
            r#"BEARER Realm=https://auth.example:8443/token?x=1 , service="reg", error="insufficient_scope""#,
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].scheme, "bearer");
        assert_eq!(c[0].params["realm"], "https://auth.example:8443/token?x=1");
        assert_eq!(c[0].params["service"], "reg");
        assert_eq!(c[0].params["error"], "insufficient_scope");
    }

    #[test]
    fn escapes_empty_values_and_garbage() {
        let c = parse(r#"Basic realm="a \"quoted\" realm", Bearer realm="""#);
        assert_eq!(c[0].params["realm"], r#"a "quoted" realm"#);
        assert_eq!(c[1].params["realm"], "");
        assert!(parse("").is_empty());
        assert!(parse(" , ,").is_empty());
        // Unterminated quotes and stray characters must not panic.
        let c = parse(r#"Bearer realm="https://x"#);
        assert_eq!(c[0].params["realm"], "https://x");
        let _ = parse("=\"=,;;\u{1F600} Bearer");
    }
}
