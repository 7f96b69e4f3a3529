//! The codec: the one place where a dump's SQL text becomes the bytes Patina stores, and where
//! stored bytes become SQL again. Backup, archive, restore, verify and `/download` all go
//! through it (and so must drills and replica copies: they decode with [`decode`] and copy
//! stored bytes as they are), so a layer is added here once.
//!
//! # Layers
//!
//! Encoding ([`Encoder`]), outermost last:
//!
//! ```text
//! SQL text → compress (zstd | gzip | none) → [age-encrypt, DESIGN §14] → sha256 + size → inner writer
//! ```
//!
//! Decoding is the reverse, and nothing is decoded before it is verified:
//!
//! ```text
//! stored bytes → sha256 + size checked against the manifest ([`Verifier`])
//!              → [age-decrypt] → decompress ([`decode`]) → SQL text
//! ```
//!
//! # Encryption
//!
//! An [`Encoding`] with recipients seals the compressed stream with age (X25519 or ssh
//! recipients, [`crate::keys`]) in the standard age format, so `age -d -i identity.txt
//! X.sql.zst.age | zstd -d | sqlite3 new.db` restores without Patina. age's stream writer must be
//! finished or its output is truncated: the [`Encoder`] owns it, and [`Encoder::finish`] is the
//! only way to get the inner writer (and so the upload) back, after every layer was finished.
//! Which layers an object has is in its key ([`Layers`], [`dump_suffix`]): the key and the
//! encoder of a write are derived from the same [`Encoding`], so they cannot disagree.
//!
//! The sha256 and size a manifest records are always those of the stored bytes, the outermost
//! layer. [`decode`] takes only [`Verified`] bytes, and `Verified` is made only by a
//! [`Verifier`] whose tally matched: the stored bytes are spooled to a local file while they are
//! hashed, and only that file, once it matched, is decoded (see `restore::fetch_verified`).
//!
//! This module is pure: it works over `std::io::Read`/`Write` and imports no tokio, storage,
//! network or SQLite code. Threads and bounded buffers are the caller's (`backup` compresses on
//! its own thread); fetching stored bytes into a verified file is `restore::fetch_verified`.

use std::fmt;
use std::io::{self, Read, Write};

use sha2::{Digest as _, Sha256};

use crate::keys::{Identities, Recipients};
use crate::policy::Compression;

/// zstd level. The reference `sqlite3 .dump | zstd` uses the default, 3; on SQL dumps level 1
/// is about a quarter faster and no larger (the benchmark fixture: 296.6 MB at 1, 309.2 MB
/// at 3), and compression is half of a backup's CPU time. One thread: a backup already
/// overlaps dumping and compressing on two cores.
pub const ZSTD_LEVEL: i32 = 1;

/// gzip level: flate2's default (6), what `gzip` uses.
fn gzip_level() -> flate2::Compression {
    flate2::Compression::default()
}

/// The layers of a stored dump, as its key (and manifest) record them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Layers {
    pub compression: Compression,
    /// Sealed with age.
    pub encrypted: bool,
}

impl Layers {
    /// Every combination, in the order keys are tried when parsed (longest suffix first).
    pub const ALL: [Layers; 6] = [
        Layers::sealed(Compression::Zstd),
        Layers::sealed(Compression::Gzip),
        Layers::sealed(Compression::None),
        Layers::plain(Compression::Zstd),
        Layers::plain(Compression::Gzip),
        Layers::plain(Compression::None),
    ];

    pub const fn plain(compression: Compression) -> Layers {
        Layers {
            compression,
            encrypted: false,
        }
    }

    pub const fn sealed(compression: Compression) -> Layers {
        Layers {
            compression,
            encrypted: true,
        }
    }
}

/// The file-name suffix of a dump's data object stored with `layers`: `.sql.zst`, `.sql.gz`,
/// `.sql`, and with age encryption `.sql.zst.age`, `.sql.gz.age`, `.sql.age`.
pub fn dump_suffix(layers: Layers) -> &'static str {
    match (layers.compression, layers.encrypted) {
        (Compression::Zstd, false) => ".sql.zst",
        (Compression::Gzip, false) => ".sql.gz",
        (Compression::None, false) => ".sql",
        (Compression::Zstd, true) => ".sql.zst.age",
        (Compression::Gzip, true) => ".sql.gz.age",
        (Compression::None, true) => ".sql.age",
    }
}

/// How new stored bytes are written: compressed, and sealed for `seal`'s recipients when there
/// are any. A write path derives both its object key ([`Encoding::layers`]) and its
/// [`Encoder`] from one `Encoding` (for dumps: `Policy::dump_encoding`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoding {
    pub compression: Compression,
    pub seal: Option<Recipients>,
}

impl Encoding {
    /// Compression only (a weekly archive's tar container, which holds sealed members as they
    /// are).
    pub fn plain(compression: Compression) -> Encoding {
        Encoding {
            compression,
            seal: None,
        }
    }

    pub fn layers(&self) -> Layers {
        Layers {
            compression: self.compression,
            encrypted: self.seal.is_some(),
        }
    }
}

/// How a week's archive (a tar of its dumps as they are stored) is itself compressed: not at all
/// when its members are compressed, gzip when they are not (`.tar.gz`).
pub fn archive_compression(dumps: Compression) -> Compression {
    match dumps {
        Compression::None => Compression::Gzip,
        Compression::Zstd | Compression::Gzip => Compression::None,
    }
}

/// The file-name suffix of a week's archive holding dumps compressed with `dumps`.
pub fn archive_suffix(dumps: Compression) -> &'static str {
    match archive_compression(dumps) {
        Compression::Gzip => ".tar.gz",
        Compression::Zstd => ".tar.zst",
        Compression::None => ".tar",
    }
}

// ---------------------------------------------------------------------------------------------
// Hashing and counting

/// The sha256 (lowercase hex) and size of a run of stored bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digest {
    pub sha256: String,
    pub size: u64,
}

impl Digest {
    /// Whether these are the bytes a manifest describes.
    pub fn check(self, expected_sha256: &str, expected_size: u64) -> Result<Checked, Mismatch> {
        if self.sha256 == expected_sha256 && self.size == expected_size {
            Ok(Checked(self))
        } else {
            Err(Mismatch {
                expected: Digest {
                    sha256: expected_sha256.to_string(),
                    size: expected_size,
                },
                actual: self,
            })
        }
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256 {} ({} bytes)", self.sha256, self.size)
    }
}

/// Accumulates a [`Digest`] over bytes fed piece by piece.
#[derive(Clone, Default)]
pub struct Tally {
    hasher: Sha256,
    size: u64,
}

impl Tally {
    pub fn new() -> Tally {
        Tally::default()
    }

    pub fn update(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
        self.size += bytes.len() as u64;
    }

    /// Bytes seen so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn finish(self) -> Digest {
        Digest {
            sha256: hex::encode(self.hasher.finalize()),
            size: self.size,
        }
    }
}

/// A writer that passes bytes to `inner` and tallies those `inner` accepted.
pub struct Tallied<W> {
    inner: W,
    tally: Tally,
}

impl<W: Write> Tallied<W> {
    pub fn new(inner: W) -> Self {
        Tallied {
            inner,
            tally: Tally::new(),
        }
    }

    /// The inner writer and the digest of everything written to it.
    pub fn into_parts(self) -> (W, Digest) {
        (self.inner, self.tally.finish())
    }
}

impl<W: Write> Write for Tallied<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.tally.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

// ---------------------------------------------------------------------------------------------
// Encoding

/// The encoding layers over an inner writer: `write` takes SQL text, the inner writer receives
/// the stored bytes. [`Encoder::finish`] must be called (it writes the compressor's last frame,
/// then age's last chunk, and returns the digest the manifest records); an encoder that is
/// dropped instead hands back neither the inner writer nor a digest, so nothing can be committed
/// from it — a truncated age stream can never reach a manifest. To give up on purpose (the
/// input failed), call [`Encoder::abandon`]. In debug builds, dropping an encoder that was
/// neither finished, abandoned nor failed by a write error panics: that is a bug.
#[must_use = "an Encoder's output is incomplete until finish() is called"]
pub struct Encoder<W: Write> {
    stack: Option<Stack<W>>,
    /// A write failed: dropping without `finish` is then the expected way out.
    failed: bool,
}

enum Stack<W: Write> {
    Zstd(zstd::stream::write::Encoder<'static, Seal<W>>),
    Gzip(flate2::write::GzEncoder<Seal<W>>),
    None(Seal<W>),
}

/// The layer under the compressor: age's stream writer, or nothing.
enum Seal<W: Write> {
    Open(Tallied<W>),
    Age(age::stream::StreamWriter<Tallied<W>>),
}

impl<W: Write> Seal<W> {
    fn finish(self) -> io::Result<Tallied<W>> {
        match self {
            Seal::Open(t) => Ok(t),
            Seal::Age(w) => w.finish(),
        }
    }
}

impl<W: Write> Write for Seal<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Seal::Open(t) => t.write(buf),
            Seal::Age(w) => w.write(buf),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Seal::Open(t) => t.write_all(buf),
            Seal::Age(w) => w.write_all(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Seal::Open(t) => t.flush(),
            Seal::Age(w) => w.flush(),
        }
    }
}

impl<W: Write> Encoder<W> {
    /// An encoder writing `encoding` into `inner`: zstd at [`ZSTD_LEVEL`] on this thread, gzip at
    /// the default level, or the bytes as they are; then, with recipients, sealed with age (its
    /// header is written to `inner` at once).
    pub fn new(encoding: &Encoding, inner: W) -> io::Result<Encoder<W>> {
        let tallied = Tallied::new(inner);
        let seal = match &encoding.seal {
            None => Seal::Open(tallied),
            Some(recipients) => Seal::Age(recipients.encryptor()?.wrap_output(tallied)?),
        };
        let stack = match encoding.compression {
            Compression::Zstd => Stack::Zstd(zstd::stream::write::Encoder::new(seal, ZSTD_LEVEL)?),
            Compression::Gzip => Stack::Gzip(flate2::write::GzEncoder::new(seal, gzip_level())),
            Compression::None => Stack::None(seal),
        };
        Ok(Encoder {
            stack: Some(stack),
            failed: false,
        })
    }

    /// End every layer, innermost first (the compressor's last frame, then age's last chunk),
    /// and return the inner writer (not flushed or finished itself: that is the caller's
    /// commit) with the digest of the bytes written to it.
    pub fn finish(mut self) -> io::Result<(W, Digest)> {
        let seal = match self.stack.take().expect("an encoder is finished once") {
            Stack::Zstd(e) => e.finish()?,
            Stack::Gzip(e) => e.finish()?,
            Stack::None(s) => s,
        };
        Ok(seal.finish()?.into_parts())
    }

    /// Give up: drop the layers and the inner writer without finishing them (an `UploadSink`
    /// dropped unfinished abandons its upload).
    pub fn abandon(mut self) {
        self.stack = None;
    }

    fn layer(&mut self) -> &mut dyn Write {
        match self
            .stack
            .as_mut()
            .expect("an encoder is not used after finish")
        {
            Stack::Zstd(e) => e,
            Stack::Gzip(e) => e,
            Stack::None(s) => s,
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let written = self.layer().write(buf);
        self.failed |= written.is_err();
        written
    }

    fn flush(&mut self) -> io::Result<()> {
        let flushed = self.layer().flush();
        self.failed |= flushed.is_err();
        flushed
    }
}

impl<W: Write> Drop for Encoder<W> {
    fn drop(&mut self) {
        debug_assert!(
            self.stack.is_none() || self.failed || std::thread::panicking(),
            "codec::Encoder dropped without finish() or abandon(): its output would be truncated"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Verifying and decoding

/// The stored bytes are not those the manifest describes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected {expected}, found {actual}")]
pub struct Mismatch {
    pub expected: Digest,
    pub actual: Digest,
}

/// Checks stored bytes, fed as they are spooled, against the digest their manifest records.
#[derive(Clone)]
pub struct Verifier {
    expected_sha256: String,
    expected_size: u64,
    tally: Tally,
}

impl Verifier {
    pub fn new(expected_sha256: &str, expected_size: u64) -> Verifier {
        Verifier {
            expected_sha256: expected_sha256.to_string(),
            expected_size,
            tally: Tally::new(),
        }
    }

    pub fn update(&mut self, bytes: &[u8]) {
        self.tally.update(bytes);
    }

    /// Bytes seen so far.
    pub fn size(&self) -> u64 {
        self.tally.size()
    }

    /// The size the manifest records.
    pub fn expected_size(&self) -> u64 {
        self.expected_size
    }

    /// Whether what was fed is exactly what the manifest describes.
    pub fn finish(self) -> Result<Checked, Mismatch> {
        self.tally
            .finish()
            .check(&self.expected_sha256, self.expected_size)
    }
}

/// Proof that a run of stored bytes matched its manifest; [`Checked::over`] attaches it to a
/// reader over those same bytes (the local file they were spooled to).
#[derive(Debug, Clone)]
pub struct Checked(Digest);

impl Checked {
    pub fn digest(&self) -> &Digest {
        &self.0
    }

    /// `stored` must read the very bytes that were checked.
    pub fn over<R: Read>(self, stored: R) -> Verified<R> {
        Verified {
            stored,
            digest: self.0,
        }
    }
}

/// A reader over stored bytes that matched their manifest: the only input [`decode`] takes.
pub struct Verified<R> {
    stored: R,
    digest: Digest,
}

impl<R: Read> Verified<R> {
    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    /// The stored bytes themselves (`/download?raw=1`).
    pub fn into_stored(self) -> R {
        self.stored
    }
}

/// Why verified stored bytes could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The object is sealed and no identities were given: nothing was read.
    #[error("it is encrypted (age) and no identity was given to decrypt it")]
    NoIdentity,
    /// None of the identities opens the object.
    #[error("none of the {0} identities given opens it")]
    NoMatchingIdentity(usize),
    /// The age header is damaged or not age (the sha256 matched, so it was stored so).
    #[error("decrypt: {0}")]
    Decrypt(String),
    #[error("decompress: {0}")]
    Io(#[from] io::Error),
}

/// The SQL text of verified stored bytes: every decoding layer, outermost first (decrypt with
/// `identities` when `layers` say the bytes are sealed, then decompress). The one decode path:
/// restore, verify, `/download` and drills all read SQL through it. A sealed object fails with
/// [`DecodeError::NoIdentity`] before a byte is read when there are no identities. Reading the
/// result fails, rather than ends early, when the sealed stream was cut short.
pub fn decode<'a, R: Read + Send + 'a>(
    layers: Layers,
    identities: Option<&Identities>,
    stored: Verified<R>,
) -> Result<Box<dyn Read + Send + 'a>, DecodeError> {
    if !layers.encrypted {
        return Ok(decompress(layers.compression, stored.stored)?);
    }
    let identities = identities.ok_or(DecodeError::NoIdentity)?;
    let decryptor =
        age::Decryptor::new_buffered(io::BufReader::with_capacity(1 << 16, stored.stored))
            .map_err(decrypt_error)?;
    let plain = decryptor.decrypt(identities.iter()).map_err(|e| match e {
        age::DecryptError::NoMatchingKeys => DecodeError::NoMatchingIdentity(identities.len()),
        e => decrypt_error(e),
    })?;
    Ok(decompress(layers.compression, plain)?)
}

fn decrypt_error(e: age::DecryptError) -> DecodeError {
    match e {
        age::DecryptError::Io(e) => DecodeError::Decrypt(e.to_string()),
        e => DecodeError::Decrypt(e.to_string().trim_end().to_string()),
    }
}

/// One layer: decompress `compressed`. Besides [`decode`], used for a weekly archive's tar
/// container, which is read as it streams (each member inside is verified on its own) and is
/// never encrypted (DESIGN §14: archives hold encrypted members as they are).
pub fn decompress<'a, R: Read + Send + 'a>(
    compression: Compression,
    compressed: R,
) -> io::Result<Box<dyn Read + Send + 'a>> {
    Ok(match compression {
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(compressed)?),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(compressed)),
        Compression::None => Box::new(compressed),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    const ALL: [Compression; 3] = [Compression::Zstd, Compression::Gzip, Compression::None];

    fn sql() -> Vec<u8> {
        let mut s = String::from("-- Patina dump\nBEGIN TRANSACTION;\n");
        for i in 0..5000 {
            s.push_str(&format!("INSERT INTO \"t\" VALUES({i},'row {i}');\n"));
        }
        s.push_str("COMMIT;\n");
        s.into_bytes()
    }

    fn encode(compression: Compression, plain: &[u8]) -> (Vec<u8>, Digest) {
        encode_with(&Encoding::plain(compression), plain)
    }

    fn encode_with(encoding: &Encoding, plain: &[u8]) -> (Vec<u8>, Digest) {
        let mut encoder = Encoder::new(encoding, Vec::new()).unwrap();
        // In pieces, as the backup's pipe hands them over.
        for piece in plain.chunks(7001) {
            encoder.write_all(piece).unwrap();
        }
        encoder.finish().unwrap()
    }

    /// Spool, verify, decode: the decode side as restore runs it, over memory.
    fn decode_checked(
        compression: Compression,
        stored: &[u8],
        expected: &Digest,
    ) -> Result<Vec<u8>, Mismatch> {
        decode_checked_with(Layers::plain(compression), None, stored, expected).map(|r| r.unwrap())
    }

    fn decode_checked_with(
        layers: Layers,
        identities: Option<&Identities>,
        stored: &[u8],
        expected: &Digest,
    ) -> Result<Result<Vec<u8>, DecodeError>, Mismatch> {
        let mut verifier = Verifier::new(&expected.sha256, expected.size);
        let mut spool = Vec::new();
        for chunk in stored.chunks(4096) {
            verifier.update(chunk);
            spool.extend_from_slice(chunk);
        }
        let verified = verifier.finish()?.over(Cursor::new(spool));
        let mut plain = Vec::new();
        Ok(decode(layers, identities, verified).and_then(|mut r| {
            r.read_to_end(&mut plain)?;
            Ok(plain)
        }))
    }

    #[test]
    fn every_compression_round_trips_and_the_digest_is_of_the_stored_bytes() {
        let plain = sql();
        for compression in ALL {
            let (stored, digest) = encode(compression, &plain);
            assert_eq!(digest.size, stored.len() as u64, "{compression:?}");
            assert_eq!(
                digest.sha256,
                hex::encode(Sha256::digest(&stored)),
                "{compression:?}"
            );
            assert_eq!(
                decode_checked(compression, &stored, &digest).unwrap(),
                plain,
                "{compression:?}"
            );
        }
    }

    #[test]
    fn the_stored_bytes_are_those_of_the_settings_patina_always_used() {
        let plain = sql();
        let (zst, _) = encode(Compression::Zstd, &plain);
        let mut z = zstd::stream::write::Encoder::new(Vec::new(), 1).unwrap();
        z.write_all(&plain).unwrap();
        assert_eq!(zst, z.finish().unwrap());

        let (gz, _) = encode(Compression::Gzip, &plain);
        let mut g = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
        g.write_all(&plain).unwrap();
        assert_eq!(gz, g.finish().unwrap());

        assert_eq!(encode(Compression::None, &plain).0, plain);
        // And the standard tools read them.
        assert_eq!(zstd::decode_all(zst.as_slice()).unwrap(), plain);
    }

    #[test]
    fn a_damaged_or_short_object_is_refused_before_any_byte_is_decoded() {
        let plain = sql();
        for compression in ALL {
            let (stored, digest) = encode(compression, &plain);
            let mut flipped = stored.clone();
            let mid = flipped.len() / 2;
            flipped[mid] ^= 0x01;
            let err = decode_checked(compression, &flipped, &digest).unwrap_err();
            assert_eq!(err.expected, digest);
            assert_eq!(err.actual.size, digest.size, "same size, other hash");
            assert_ne!(err.actual.sha256, digest.sha256);

            let short = &stored[..stored.len() - 1];
            let err = decode_checked(compression, short, &digest).unwrap_err();
            assert_eq!(err.actual.size, digest.size - 1);
            assert!(err.to_string().contains(&digest.sha256), "{err}");

            let mut long = stored.clone();
            long.push(0);
            assert!(decode_checked(compression, &long, &digest).is_err());
        }
    }

    #[test]
    fn a_truncated_compressed_stream_fails_to_decode() {
        // Bytes that were verified against a manifest of a truncated object (a backup cut
        // short) still fail loudly when decoded, rather than yield a shorter dump.
        let plain = sql();
        for compression in [Compression::Zstd, Compression::Gzip] {
            let (stored, _) = encode(compression, &plain);
            let cut = &stored[..stored.len() / 2];
            let mut verifier = Verifier::new(&hex::encode(Sha256::digest(cut)), cut.len() as u64);
            verifier.update(cut);
            let verified = verifier.finish().unwrap().over(cut);
            let mut out = Vec::new();
            let read = decode(Layers::plain(compression), None, verified)
                .unwrap()
                .read_to_end(&mut out);
            assert!(read.is_err(), "{compression:?} read {} bytes", out.len());
        }
    }

    #[test]
    fn finish_ends_the_compressed_stream_and_returns_the_inner_writer() {
        for compression in ALL {
            let mut encoder = Encoder::new(&Encoding::plain(compression), Vec::new()).unwrap();
            encoder.write_all(b"SELECT 1;\n").unwrap();
            let (inner, digest) = encoder.finish().unwrap();
            assert_eq!(digest.size, inner.len() as u64);
            let verified = Checked(digest).over(inner.as_slice());
            let mut out = String::new();
            decode(Layers::plain(compression), None, verified)
                .unwrap()
                .read_to_string(&mut out)
                .unwrap();
            assert_eq!(out, "SELECT 1;\n", "{compression:?}");
        }
        // An empty dump still is a complete stream.
        let (inner, _) = Encoder::new(&Encoding::plain(Compression::Zstd), Vec::new())
            .unwrap()
            .finish()
            .unwrap();
        assert!(!inner.is_empty());
        assert!(zstd::decode_all(inner.as_slice()).unwrap().is_empty());
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "dropped without finish() or abandon()")]
    fn dropping_an_unfinished_encoder_is_a_bug() {
        let mut encoder = Encoder::new(&Encoding::plain(Compression::Zstd), Vec::new()).unwrap();
        encoder.write_all(b"SELECT 1;\n").unwrap();
        drop(encoder);
    }

    #[test]
    fn abandoning_or_a_failed_write_drops_quietly() {
        let mut encoder = Encoder::new(&Encoding::plain(Compression::Gzip), Vec::new()).unwrap();
        encoder.write_all(b"SELECT 1;\n").unwrap();
        encoder.abandon();

        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::other("disk full"))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut encoder = Encoder::new(&Encoding::plain(Compression::None), Broken).unwrap();
        let err = encoder.write_all(b"SELECT 1;\n").unwrap_err();
        assert_eq!(err.to_string(), "disk full");
        drop(encoder);
    }

    #[test]
    fn suffixes_follow_the_layers() {
        assert_eq!(dump_suffix(Layers::plain(Compression::Zstd)), ".sql.zst");
        assert_eq!(dump_suffix(Layers::plain(Compression::Gzip)), ".sql.gz");
        assert_eq!(dump_suffix(Layers::plain(Compression::None)), ".sql");
        assert_eq!(
            dump_suffix(Layers::sealed(Compression::Zstd)),
            ".sql.zst.age"
        );
        assert_eq!(
            dump_suffix(Layers::sealed(Compression::Gzip)),
            ".sql.gz.age"
        );
        assert_eq!(dump_suffix(Layers::sealed(Compression::None)), ".sql.age");
        assert_eq!(archive_suffix(Compression::Zstd), ".tar");
        assert_eq!(archive_suffix(Compression::Gzip), ".tar");
        assert_eq!(archive_suffix(Compression::None), ".tar.gz");
    }

    // -- encryption ---------------------------------------------------------------------------

    fn keypair() -> (age::x25519::Identity, crate::keys::Recipient) {
        let id = age::x25519::Identity::generate();
        let r = crate::keys::Recipient::parse(&id.to_public().to_string()).unwrap();
        (id, r)
    }

    fn identities(ids: &[&age::x25519::Identity]) -> Identities {
        use age::secrecy::ExposeSecret;
        let text: Vec<String> = ids
            .iter()
            .map(|i| i.to_string().expose_secret().to_string())
            .collect();
        Identities::parse(&text.join("\n")).unwrap()
    }

    fn sealed_for(recipients: Vec<crate::keys::Recipient>, compression: Compression) -> Encoding {
        Encoding {
            compression,
            seal: Recipients::new(recipients),
        }
    }

    #[test]
    fn sealed_objects_round_trip_and_hide_the_sql() {
        let plain = sql();
        let (a, ra) = keypair();
        let (b, rb) = keypair();
        for compression in ALL {
            let encoding = sealed_for(vec![ra.clone(), rb.clone()], compression);
            let (stored, digest) = encode_with(&encoding, &plain);
            assert!(
                stored.starts_with(b"age-encryption.org/v1\n"),
                "{compression:?}"
            );
            assert_eq!(digest.size, stored.len() as u64);
            assert_eq!(digest.sha256, hex::encode(Sha256::digest(&stored)));
            assert!(
                memchr::memmem::find(&stored, b"INSERT INTO").is_none(),
                "{compression:?}: the SQL shows through"
            );
            // Either recipient's identity opens it; an identity file may hold several.
            for ids in [
                identities(&[&a]),
                identities(&[&b]),
                identities(&[&keypair().0, &b]),
            ] {
                let out = decode_checked_with(encoding.layers(), Some(&ids), &stored, &digest)
                    .unwrap()
                    .unwrap();
                assert_eq!(out, plain, "{compression:?}");
            }
        }
    }

    #[test]
    fn a_sealed_object_without_or_with_the_wrong_identity_is_a_clear_error() {
        let (_, r) = keypair();
        let encoding = sealed_for(vec![r], Compression::Zstd);
        let (stored, digest) = encode_with(&encoding, &sql());
        let err = decode_checked_with(encoding.layers(), None, &stored, &digest)
            .unwrap()
            .unwrap_err();
        assert!(matches!(err, DecodeError::NoIdentity), "{err}");
        let stranger = identities(&[&keypair().0, &keypair().0]);
        let err = decode_checked_with(encoding.layers(), Some(&stranger), &stored, &digest)
            .unwrap()
            .unwrap_err();
        assert!(matches!(err, DecodeError::NoMatchingIdentity(2)), "{err}");

        // Stored so (the sha256 matches) but not an age file: a decrypt error, not garbage.
        let mut damaged = stored.clone();
        damaged[0] = b'b';
        let digest = Digest {
            sha256: hex::encode(Sha256::digest(&damaged)),
            size: damaged.len() as u64,
        };
        let err = decode_checked_with(encoding.layers(), Some(&stranger), &damaged, &digest)
            .unwrap()
            .unwrap_err();
        assert!(matches!(err, DecodeError::Decrypt(_)), "{err}");
    }

    #[test]
    fn a_truncated_sealed_stream_fails_to_decode_and_a_damaged_one_is_refused_first() {
        let (id, r) = keypair();
        let ids = identities(&[&id]);
        for compression in ALL {
            let encoding = sealed_for(vec![r.clone()], compression);
            let (stored, digest) = encode_with(&encoding, &sql());
            // Damaged or short against its manifest: refused before decryption starts.
            let short = &stored[..stored.len() - 1];
            assert!(decode_checked_with(encoding.layers(), Some(&ids), short, &digest).is_err());
            // A manifest of a stream cut short (an encoder that was never finished): decrypting
            // it fails rather than yielding a shorter dump.
            for cut in [stored.len() - 17, stored.len() / 2] {
                let cut = &stored[..cut];
                let digest = Digest {
                    sha256: hex::encode(Sha256::digest(cut)),
                    size: cut.len() as u64,
                };
                let out = decode_checked_with(encoding.layers(), Some(&ids), cut, &digest).unwrap();
                assert!(
                    out.is_err(),
                    "{compression:?}: {} bytes decoded",
                    out.unwrap().len()
                );
            }
        }
    }

    #[test]
    fn the_age_crate_reads_what_the_encoder_seals() {
        // The standard format: age's own one-shot decrypt opens it (the `age` program is
        // checked in the integration tests).
        let (id, r) = keypair();
        let encoding = sealed_for(vec![r], Compression::None);
        let (stored, _) = encode_with(&encoding, b"SELECT 1;\n");
        assert_eq!(age::decrypt(&id, &stored).unwrap(), b"SELECT 1;\n");
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "dropped without finish() or abandon()")]
    fn dropping_an_unfinished_sealed_encoder_is_a_bug() {
        let (_, r) = keypair();
        let mut encoder =
            Encoder::new(&sealed_for(vec![r], Compression::Zstd), Vec::new()).unwrap();
        encoder.write_all(b"SELECT 1;\n").unwrap();
        drop(encoder);
    }
}
