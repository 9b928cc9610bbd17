//! URLs in messages: [`redact_url`] hides the password of a store's or a
//! bus's URL before it reaches a log line or an error.

/// A `scheme://user:password@host/...` URL (a store's, a bus's) with the
/// password replaced by `***`, for messages.
///
/// ```
/// use troupe_core::redact_url;
///
/// assert_eq!(redact_url("redis://me:s3cret@cache:6379/0"), "redis://me:***@cache:6379/0");
/// assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
/// ```
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((user, host)) if user.contains(':') => {
            let name = user.split(':').next().unwrap_or_default();
            format!("{scheme}://{name}:***@{host}{tail}")
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_hidden_and_the_rest_kept() {
        assert_eq!(
            redact_url("postgres://u:secret@h:5432/db?x=1"),
            "postgres://u:***@h:5432/db?x=1"
        );
        assert_eq!(redact_url("rediss://:tok@h:6380"), "rediss://:***@h:6380");
        assert_eq!(redact_url("mysql://h"), "mysql://h");
        assert_eq!(redact_url("memory"), "memory");
    }
}
