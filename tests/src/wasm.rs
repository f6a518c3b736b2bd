//! WebAssembly helpers: [`with_marker`] makes a new version of a component (a new digest)
//! with the same behaviour, for hot swap tests and benchmarks.

/// `bytes` plus a custom section: a new version (new digest) of a component with the same
/// behaviour, for hot swap tests and benchmarks.
pub fn with_marker(bytes: &[u8], marker: &str) -> Vec<u8> {
    fn leb(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    let name = b"ctxhost-test-marker";
    let mut payload = Vec::new();
    leb(name.len(), &mut payload);
    payload.extend_from_slice(name);
    payload.extend_from_slice(marker.as_bytes());
    let mut out = bytes.to_vec();
    out.push(0);
    leb(payload.len(), &mut out);
    out.extend_from_slice(&payload);
    out
}
