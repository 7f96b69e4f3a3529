//! age keys (DESIGN §14), pure: recipients (public keys) that new backups are sealed for, and
//! identities (private keys) that open them, parsed from text. Reading the files they live in is
//! the caller's (`config` for `recipients_file`, `restore` for `identity_file`).
//!
//! # Fingerprints
//!
//! A recipient is named everywhere (manifests, `patina check`, `patina list`, errors) by its
//! fingerprint, which is public and matches what the usual tools print for the same key:
//!
//! - an age X25519 recipient: the `age1…` string itself, as `age-keygen -y identity.txt` prints;
//! - an ssh-ed25519 / ssh-rsa public key: OpenSSH's `SHA256:…` fingerprint (unpadded base64 of
//!   the sha256 of the key blob), as `ssh-keygen -lf key.pub` prints.
//!
//! Nothing here ever formats a secret: [`Identities`] prints only how many identities it holds
//! and the public keys of the X25519 ones, and a parse error names a line, never its text.

use std::fmt;
use std::io;
use std::sync::Arc;

use base64::Engine as _;
use sha2::{Digest as _, Sha256};

/// One recipient: a public key new backups are encrypted to.
#[derive(Clone)]
pub struct Recipient {
    fingerprint: String,
    key: RecipientKey,
}

#[derive(Clone)]
enum RecipientKey {
    X25519(age::x25519::Recipient),
    Ssh(age::ssh::Recipient),
}

impl Recipient {
    /// Parse one public key: `age1…`, or `ssh-ed25519 AAAA… [comment]` / `ssh-rsa AAAA…
    /// [comment]`. The error says what is wrong without repeating the text (which could be a
    /// secret pasted into the wrong place).
    pub fn parse(text: &str) -> Result<Recipient, RecipientError> {
        let text = text.trim();
        if looks_secret(text) {
            return Err(RecipientError::Secret);
        }
        if text.is_empty() {
            return Err(RecipientError::Empty);
        }
        if text.starts_with("ssh-") || text.starts_with("ecdsa-") || text.starts_with("sk-") {
            return match text.parse::<age::ssh::Recipient>() {
                Ok(key) => {
                    let blob = match &key {
                        age::ssh::Recipient::SshRsa(blob, _)
                        | age::ssh::Recipient::SshEd25519(blob, _) => blob,
                    };
                    Ok(Recipient {
                        fingerprint: ssh_fingerprint(blob),
                        key: RecipientKey::Ssh(key),
                    })
                }
                Err(age::ssh::ParseRecipientKeyError::Unsupported(kind)) => {
                    Err(RecipientError::UnsupportedSsh(kind))
                }
                Err(age::ssh::ParseRecipientKeyError::RsaModulusTooSmall) => Err(
                    RecipientError::Invalid("the ssh-rsa key is shorter than 2048 bits"),
                ),
                Err(age::ssh::ParseRecipientKeyError::RsaModulusTooLarge) => Err(
                    RecipientError::Invalid("the ssh-rsa key is longer than age supports"),
                ),
                Err(_) => Err(RecipientError::Invalid(
                    "not a valid ssh public key (\"ssh-ed25519 AAAA… comment\")",
                )),
            };
        }
        if text.len() >= 4 && text[..4].eq_ignore_ascii_case("age1") {
            return match text.parse::<age::x25519::Recipient>() {
                Ok(key) => Ok(Recipient {
                    fingerprint: key.to_string(),
                    key: RecipientKey::X25519(key),
                }),
                Err(reason) => Err(RecipientError::Invalid(match reason {
                    "incorrect HRP" => {
                        "not an age X25519 public key (plugin recipients are not supported)"
                    }
                    _ => "not a valid age public key (a typo, or cut short?)",
                })),
            };
        }
        Err(RecipientError::Invalid(
            "not an age public key (\"age1…\") or an ssh public key (\"ssh-ed25519 AAAA…\")",
        ))
    }

    /// `age1…` for X25519 keys, `SHA256:…` for ssh keys (see the module doc).
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    fn as_age(&self) -> &dyn age::Recipient {
        match &self.key {
            RecipientKey::X25519(k) => k,
            RecipientKey::Ssh(k) => k,
        }
    }
}

impl fmt::Debug for Recipient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.fingerprint)
    }
}

impl PartialEq for Recipient {
    fn eq(&self, other: &Recipient) -> bool {
        self.fingerprint == other.fingerprint
    }
}

impl Eq for Recipient {}

/// OpenSSH's fingerprint of a public key blob: `SHA256:` and unpadded base64 of its sha256.
fn ssh_fingerprint(blob: &[u8]) -> String {
    format!(
        "SHA256:{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(Sha256::digest(blob))
    )
}

/// Whether text is (or holds) a private key: never echoed, never accepted as a recipient.
fn looks_secret(text: &str) -> bool {
    text.len() >= 15 && text[..15].eq_ignore_ascii_case("AGE-SECRET-KEY-")
        || text.contains("PRIVATE KEY")
        || text.starts_with("AGE-PLUGIN-")
}

/// Why a recipient did not parse. Never carries the text itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecipientError {
    #[error("is empty")]
    Empty,
    #[error(
        "is a private key (an identity), not a recipient — never put it in the policy; put its public key (`age-keygen -y identity.txt`) here, and treat this one as exposed"
    )]
    Secret,
    #[error(
        "is a {0} ssh key, which age cannot encrypt to — use an ssh-ed25519 or ssh-rsa key, or an age key"
    )]
    UnsupportedSsh(String),
    #[error("is {0}")]
    Invalid(&'static str),
}

/// The recipients new backups are sealed for: at least one, no two with the same fingerprint.
/// Cheap to clone.
#[derive(Clone, PartialEq, Eq)]
pub struct Recipients(Arc<[Recipient]>);

impl Recipients {
    /// `None` when `list` is empty; duplicates (same fingerprint) are dropped, order kept.
    pub fn new(list: Vec<Recipient>) -> Option<Recipients> {
        let mut unique: Vec<Recipient> = Vec::with_capacity(list.len());
        for r in list {
            if !unique.contains(&r) {
                unique.push(r);
            }
        }
        (!unique.is_empty()).then(|| Recipients(unique.into()))
    }

    pub fn iter(&self) -> impl Iterator<Item = &Recipient> {
        self.0.iter()
    }

    /// The fingerprints, in order: what a manifest records.
    pub fn fingerprints(&self) -> Vec<String> {
        self.0.iter().map(|r| r.fingerprint.clone()).collect()
    }

    /// The age encryptor for one object (a fresh file key each time).
    pub(crate) fn encryptor(&self) -> io::Result<age::Encryptor> {
        age::Encryptor::with_recipients(self.0.iter().map(Recipient::as_age)).map_err(|e| {
            io::Error::other(format!("seal for {}: {e}", self.fingerprints().join(", ")))
        })
    }
}

impl fmt::Debug for Recipients {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.iter()).finish()
    }
}

/// One line of a recipients file that is not a recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    /// 1-based line in the file.
    pub line: usize,
    /// 1-based position of the key among the file's keys (comments and blank lines skipped).
    pub position: usize,
    pub error: RecipientError,
}

/// Parse a recipients file as `age -R` reads one: one public key per line; blank lines and
/// lines starting with `#` are skipped. Every bad line is reported.
pub fn parse_recipients_file(text: &str) -> (Vec<Recipient>, Vec<LineError>) {
    let mut found = Vec::new();
    let mut errors = Vec::new();
    let mut position = 0;
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        position += 1;
        match Recipient::parse(line) {
            Ok(r) => found.push(r),
            Err(error) => errors.push(LineError {
                line: i + 1,
                position,
                error,
            }),
        }
    }
    (found, errors)
}

/// The identities (private keys) of an identity file: what opens sealed backups. `Debug` and
/// `Display` show only how many there are and the public keys of the X25519 ones.
pub struct Identities {
    keys: Vec<Box<dyn age::Identity + Send + Sync>>,
    /// Fingerprints of the recipients these identities open, where known.
    opens: Vec<String>,
}

impl Identities {
    /// Parse an identity file: an age identity file (`AGE-SECRET-KEY-1…` lines, as
    /// `age-keygen` writes; `#` comments; any number of identities), or one unencrypted
    /// OpenSSH private key (ed25519 or rsa). Errors name a line number, never its text.
    pub fn parse(text: &str) -> Result<Identities, IdentityError> {
        if text.trim_start().starts_with("-----BEGIN") {
            return Self::parse_ssh(text);
        }
        let mut keys: Vec<Box<dyn age::Identity + Send + Sync>> = Vec::new();
        let mut opens = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match line.parse::<age::x25519::Identity>() {
                Ok(identity) => {
                    opens.push(identity.to_public().to_string());
                    keys.push(Box::new(identity));
                }
                Err(_) => return Err(IdentityError::Line(i + 1)),
            }
        }
        if keys.is_empty() {
            return Err(IdentityError::Empty);
        }
        Ok(Identities { keys, opens })
    }

    fn parse_ssh(text: &str) -> Result<Identities, IdentityError> {
        let identity = age::ssh::Identity::from_buffer(text.as_bytes(), None)
            .map_err(|_| IdentityError::Ssh("it is not an OpenSSH private key age can read"))?;
        match &identity {
            age::ssh::Identity::Unencrypted(_) => {}
            age::ssh::Identity::Encrypted(_) => {
                return Err(IdentityError::Ssh(
                    "it is protected by a passphrase, and patina cannot ask for one — use an age identity, or a copy of the key without a passphrase kept off the backup host",
                ));
            }
            age::ssh::Identity::Unsupported(_) => {
                return Err(IdentityError::Ssh(
                    "its key type is not supported — use an ssh-ed25519 or ssh-rsa key, or an age identity",
                ));
            }
        }
        let opens = age::ssh::Recipient::try_from(identity.clone())
            .ok()
            .map(|r| {
                let blob = match &r {
                    age::ssh::Recipient::SshRsa(blob, _)
                    | age::ssh::Recipient::SshEd25519(blob, _) => blob.clone(),
                };
                vec![ssh_fingerprint(&blob)]
            })
            .unwrap_or_default();
        Ok(Identities {
            keys: vec![Box::new(identity)],
            opens,
        })
    }

    /// How many identities the file holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Fingerprints of the recipients these identities open (public; for messages).
    pub fn opens(&self) -> &[String] {
        &self.opens
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &dyn age::Identity> {
        self.keys.iter().map(|k| k.as_ref() as &dyn age::Identity)
    }
}

impl fmt::Debug for Identities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Identities({} for {:?})", self.keys.len(), self.opens)
    }
}

/// Why an identity file could not be used. Never carries the file's text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("line {0} is not an age identity (AGE-SECRET-KEY-1…)")]
    Line(usize),
    #[error("it holds no identity")]
    Empty,
    #[error("{0}")]
    Ssh(&'static str),
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED25519: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHsKLqeplhpW+uObz5dvMgjz1OxfM/XXUB+VHtZ6isGN alice@rust";

    #[test]
    fn an_age_recipient_is_its_own_fingerprint() {
        let id = age::x25519::Identity::generate();
        let public = id.to_public().to_string();
        let r = Recipient::parse(&format!("  {public}\n")).unwrap();
        assert_eq!(r.fingerprint(), public);
        assert_eq!(format!("{r:?}"), public);
    }

    #[test]
    fn an_ssh_recipient_has_openssh_s_fingerprint() {
        // `ssh-keygen -lf` of this key prints this fingerprint.
        let r = Recipient::parse(ED25519).unwrap();
        let blob = base64::engine::general_purpose::STANDARD
            .decode(ED25519.split(' ').nth(1).unwrap())
            .unwrap();
        assert_eq!(r.fingerprint(), ssh_fingerprint(&blob));
        assert!(r.fingerprint().starts_with("SHA256:"));
        assert_eq!(r.fingerprint().len(), "SHA256:".len() + 43);
    }

    #[test]
    fn bad_recipients_say_why_without_repeating_themselves() {
        let secret = age::x25519::Identity::generate();
        let secret_text = {
            use age::secrecy::ExposeSecret;
            secret.to_string().expose_secret().to_string()
        };
        for (text, expected) in [
            (secret_text.as_str(), RecipientError::Secret),
            ("", RecipientError::Empty),
            (
                "age1qqqq",
                RecipientError::Invalid("not a valid age public key (a typo, or cut short?)"),
            ),
            (
                "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBHFliOyIZs1gxGF3fmDxFykQhE88wy6AKDGFBfn0R6ZuvRmENABZQa9+pj9hMki+LX0qDJbmHTiWDbYv/cmFt/Q=",
                RecipientError::UnsupportedSsh("ecdsa-sha2-nistp256".into()),
            ),
            (
                "hunter2",
                RecipientError::Invalid(
                    "not an age public key (\"age1…\") or an ssh public key (\"ssh-ed25519 AAAA…\")",
                ),
            ),
        ] {
            let err = Recipient::parse(text).map(|_| ()).unwrap_err();
            assert_eq!(err, expected, "{text}");
            if !text.is_empty() {
                assert!(!err.to_string().contains(text), "{err}");
            }
        }
    }

    #[test]
    fn a_recipients_file_reports_every_bad_line_with_its_position() {
        let a = age::x25519::Identity::generate().to_public().to_string();
        let text = format!("# ops\n{a}\n\nnot-a-key\n{ED25519}\nage1zzz\n");
        let (found, errors) = parse_recipients_file(&text);
        assert_eq!(found.len(), 2);
        assert_eq!(
            errors
                .iter()
                .map(|e| (e.line, e.position))
                .collect::<Vec<_>>(),
            vec![(4, 2), (6, 4)]
        );
    }

    #[test]
    fn recipients_drop_duplicates_and_need_one() {
        let a =
            Recipient::parse(&age::x25519::Identity::generate().to_public().to_string()).unwrap();
        let r = Recipients::new(vec![a.clone(), a.clone()]).unwrap();
        assert_eq!(r.fingerprints(), vec![a.fingerprint().to_string()]);
        assert!(Recipients::new(Vec::new()).is_none());
    }

    #[test]
    fn identity_files_hold_several_identities_and_never_print_them() {
        use age::secrecy::ExposeSecret;
        let (a, b) = (
            age::x25519::Identity::generate(),
            age::x25519::Identity::generate(),
        );
        let text = format!(
            "# created: today\n# public key: {}\n{}\n\n{}\n",
            a.to_public(),
            a.to_string().expose_secret(),
            b.to_string().expose_secret()
        );
        let ids = Identities::parse(&text).unwrap();
        assert_eq!(ids.len(), 2);
        assert_eq!(
            ids.opens(),
            &[a.to_public().to_string(), b.to_public().to_string()]
        );
        let shown = format!("{ids:?}");
        assert!(!shown.contains("AGE-SECRET-KEY"), "{shown}");

        let broken = format!("{}\nAGE-SECRET-KEY-1NOPE\n", a.to_string().expose_secret());
        let err = Identities::parse(&broken).unwrap_err();
        assert_eq!(err, IdentityError::Line(2));
        assert!(!err.to_string().contains("NOPE"));
        assert_eq!(
            Identities::parse("# nothing\n").unwrap_err(),
            IdentityError::Empty
        );
    }
}
