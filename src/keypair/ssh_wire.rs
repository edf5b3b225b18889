//! The SSH wire encoding of public key blobs (RFC 4251 §5 `string`/`mpint`, RFC 4253 §6.6): a strict
//! reader for imported blobs and a writer for generated ones. Kept by hand rather than through `ssh-key` so
//! that what we accept is exactly what nova-keypairs.md §6.1 says, no more and no less.

/// Cursor over a blob. Every read fails (returns `None`) instead of reading past the end.
pub(crate) struct WireReader<'a> {
    rest: &'a [u8],
}

impl<'a> WireReader<'a> {
    pub(crate) fn new(blob: &'a [u8]) -> Self {
        Self { rest: blob }
    }

    /// A `string`: u32 big-endian length, then that many bytes.
    pub(crate) fn string(&mut self) -> Option<&'a [u8]> {
        let (len, rest) = self.rest.split_first_chunk::<4>()?;
        let len = usize::try_from(u32::from_be_bytes(*len)).ok()?;
        if rest.len() < len {
            return None;
        }
        let (value, rest) = rest.split_at(len);
        self.rest = rest;
        Some(value)
    }

    /// A non-negative `mpint`, returned as its big-endian magnitude. Negative values (high bit set
    /// without a leading zero byte) are refused, as OpenSSH and Python `cryptography` do.
    pub(crate) fn positive_mpint(&mut self) -> Option<&'a [u8]> {
        let value = self.string()?;
        match value.first() {
            Some(first) if first & 0x80 != 0 => None,
            _ => Some(value),
        }
    }

    /// True once every byte has been consumed; imported blobs must not carry trailing data.
    pub(crate) fn is_finished(&self) -> bool {
        self.rest.is_empty()
    }
}

/// Builder for a blob.
#[derive(Default)]
pub(crate) struct WireWriter {
    blob: Vec<u8>,
}

impl WireWriter {
    pub(crate) fn string(mut self, value: &[u8]) -> Self {
        // Public key fields are at most a few KiB; a u32 length cannot overflow here.
        let len = u32::try_from(value.len()).unwrap_or(u32::MAX);
        self.blob.extend_from_slice(&len.to_be_bytes());
        self.blob.extend_from_slice(value);
        self
    }

    /// Writes a non-negative integer given as big-endian magnitude in canonical `mpint` form: leading
    /// zeros stripped, one zero byte prepended when the high bit is set.
    pub(crate) fn positive_mpint(self, magnitude: &[u8]) -> Self {
        let start = magnitude.iter().position(|&b| b != 0).unwrap_or(magnitude.len());
        let trimmed = &magnitude[start..];
        match trimmed.first() {
            Some(first) if first & 0x80 != 0 => {
                let mut padded = Vec::with_capacity(trimmed.len() + 1);
                padded.push(0);
                padded.extend_from_slice(trimmed);
                self.string(&padded)
            }
            _ => self.string(trimmed),
        }
    }

    pub(crate) fn finish(self) -> Vec<u8> {
        self.blob
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_reads_strings_and_detects_the_end() {
        let blob = [0, 0, 0, 2, b'h', b'i', 0, 0, 0, 0];
        let mut reader = WireReader::new(&blob);
        assert_eq!(reader.string(), Some(&b"hi"[..]));
        assert!(!reader.is_finished());
        assert_eq!(reader.string(), Some(&b""[..]));
        assert!(reader.is_finished());
        assert_eq!(reader.string(), None);
    }

    #[test]
    fn reader_refuses_lengths_past_the_end() {
        let blob = [0, 0, 0, 3, b'h', b'i'];
        assert_eq!(WireReader::new(&blob).string(), None);
        assert_eq!(WireReader::new(&[0, 0, 1]).string(), None);
    }

    #[test]
    fn reader_refuses_negative_mpints() {
        let negative = [0, 0, 0, 1, 0x80];
        assert_eq!(WireReader::new(&negative).positive_mpint(), None);
        let positive = [0, 0, 0, 2, 0, 0x80];
        assert_eq!(WireReader::new(&positive).positive_mpint(), Some(&[0, 0x80][..]));
    }

    #[test]
    fn writer_encodes_mpints_canonically() {
        let table: [(&[u8], &[u8]); 4] = [
            (&[], &[0, 0, 0, 0]),
            (&[0, 0], &[0, 0, 0, 0]),
            (&[0x01, 0x00, 0x01], &[0, 0, 0, 3, 1, 0, 1]),
            (&[0, 0x80], &[0, 0, 0, 2, 0, 0x80]),
        ];
        for (magnitude, encoded) in table {
            assert_eq!(WireWriter::default().positive_mpint(magnitude).finish(), encoded);
        }
        assert_eq!(WireWriter::default().positive_mpint(&[0x80]).finish(), [0, 0, 0, 2, 0, 0x80]);
    }
}
