//! URLs the registry answers with (`Location` of an upload session, `Link` of the next page), made
//! absolute against the request they answered, and the origin test that decides where credentials
//! go.

/// `reference` (a `Location` or `Link` target of the answer to a request to `base`) as an absolute
/// URL: a relative one is resolved against `base` (RFC 3986), an absolute one is taken as it is,
/// whatever its host. Whether another host may be used is each caller's decision (an upload session
/// may live on storage elsewhere and gets no credentials there; a page of a listing must not). None
/// when either is not a URL.
pub fn absolute(base: &str, reference: &str) -> Option<url::Url> {
    url::Url::parse(base).ok()?.join(reference).ok()
}

/// Whether `url` is on `origin` (scheme, host and port all the same).
pub fn same_origin(url: &str, origin: &url::Origin) -> bool {
    url::Url::parse(url).is_ok_and(|u| u.origin() == *origin)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "https://reg.example:5000/v2/team/app/blobs/uploads/";

    #[test]
    fn relative_references_resolve_against_the_request() {
        let a = |r: &str| absolute(BASE, r).map(String::from);
        assert_eq!(
            a("/v2/team/app/blobs/uploads/s1?_state=x").as_deref(),
            Some("https://reg.example:5000/v2/team/app/blobs/uploads/s1?_state=x")
        );
        assert_eq!(
            a("s2").as_deref(),
            Some("https://reg.example:5000/v2/team/app/blobs/uploads/s2")
        );
        assert_eq!(
            a("?last=b").as_deref(),
            Some("https://reg.example:5000/v2/team/app/blobs/uploads/?last=b")
        );
    }

    #[test]
    fn absolute_references_are_kept_on_the_same_host_and_on_others() {
        let same = "https://reg.example:5000/v2/team/app/blobs/uploads/s3";
        assert_eq!(absolute(BASE, same).map(String::from).as_deref(), Some(same));
        let other = "https://storage.example/upload/s4?sig=abc";
        assert_eq!(absolute(BASE, other).map(String::from).as_deref(), Some(other));
        let origin = url::Url::parse(BASE).map(|u| u.origin()).expect("static URL");
        assert!(same_origin(same, &origin));
        assert!(!same_origin(other, &origin));
        assert!(
            !same_origin("http://reg.example:5000/v2/", &origin),
            "another scheme is another origin"
        );
        assert!(!same_origin("https://reg.example/v2/", &origin), "another port is another origin");
    }

    #[test]
    fn what_is_not_a_url_is_refused() {
        assert_eq!(absolute(BASE, "http://[not-an-address/"), None);
        assert_eq!(absolute("not a base", "/v2/"), None);
        assert!(!same_origin(
            "not a url",
            &url::Url::parse(BASE).map(|u| u.origin()).expect("static URL")
        ));
    }
}
