//! SHA-256, the one implementation the crate uses (blob storage, digest verification, GUIDs,
//! checksums), through aws-lc: as fast as the `sha2` crate with SHA extensions, and its AVX2
//! assembly is 1.5-2x faster than `sha2`'s portable code on CPUs without them.

/// An incremental SHA-256.
#[derive(Clone)]
pub struct Sha256(aws_lc_rs::digest::Context);

impl Default for Sha256 {
    fn default() -> Self {
        Self::new()
    }
}

impl Sha256 {
    /// A fresh hasher.
    pub fn new() -> Self {
        Sha256(aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256))
    }

    /// Adds bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// The digest.
    pub fn finalize(self) -> [u8; 32] {
        bytes_of(&self.0.finish())
    }

    /// The digest as lowercase hex.
    pub fn finalize_hex(self) -> String {
        hex::encode(self.finalize())
    }
}

/// The 32 bytes of a SHA-256 digest.
fn bytes_of(d: &aws_lc_rs::digest::Digest) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// SHA-256 of `bytes`.
pub fn digest(bytes: &[u8]) -> [u8; 32] {
    bytes_of(&aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        bytes,
    ))
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn hex_digest(bytes: &[u8]) -> String {
    hex::encode(digest(bytes))
}

/// Bytes gathered before a batch goes to [`Sha256Thread`]'s thread.
const BATCH: usize = 1 << 20;
/// Batches in flight (bounded: a slow hasher slows the writer instead of buffering).
const QUEUE: usize = 4;

enum Work {
    Bytes(Vec<u8>),
    Zeros(u64),
}

/// A SHA-256 computed on a helper thread, so that a writer hashing large outputs with BLAKE3
/// and SHA-256 uses two cores. Bytes are copied into 1 MiB batches; zero runs are sent as
/// lengths.
pub struct Sha256Thread {
    batch: Vec<u8>,
    tx: Option<std::sync::mpsc::SyncSender<Work>>,
    handle: Option<std::thread::JoinHandle<String>>,
}

impl Sha256Thread {
    /// Starts the thread.
    pub fn spawn() -> std::io::Result<Sha256Thread> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Work>(QUEUE);
        let handle = std::thread::Builder::new()
            .name("sha256".into())
            .spawn(move || {
                let mut h = Sha256::new();
                for w in rx {
                    match w {
                        Work::Bytes(b) => h.update(&b),
                        Work::Zeros(n) => crate::zeros::feed_zeros(n, |z| h.update(z)),
                    }
                }
                h.finalize_hex()
            })?;
        Ok(Sha256Thread {
            batch: Vec::with_capacity(BATCH),
            tx: Some(tx),
            handle: Some(handle),
        })
    }

    fn send(&mut self, w: Work) {
        // A send only fails when the thread is gone; `finalize_hex` reports that.
        if let Some(tx) = &self.tx
            && tx.send(w).is_err()
        {
            self.tx = None;
        }
    }

    fn flush_batch(&mut self) {
        if !self.batch.is_empty() {
            let full = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH));
            self.send(Work::Bytes(full));
        }
    }

    /// Adds bytes.
    pub fn update(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let k = (BATCH - self.batch.len()).min(bytes.len());
            self.batch.extend_from_slice(&bytes[..k]);
            bytes = &bytes[k..];
            if self.batch.len() == BATCH {
                self.flush_batch();
            }
        }
    }

    /// Adds `n` zero bytes.
    pub fn update_zeros(&mut self, n: u64) {
        self.flush_batch();
        self.send(Work::Zeros(n));
    }

    /// The digest as lowercase hex; `None` if the thread died.
    pub fn finalize_hex(mut self) -> Option<String> {
        self.flush_batch();
        let alive = self.tx.take().is_some();
        let digest = self.handle.take()?.join().ok()?;
        alive.then_some(digest)
    }
}

impl Drop for Sha256Thread {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn known_vectors() {
        assert_eq!(
            super::hex_digest(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let mut h = super::Sha256::new();
        h.update(b"ab");
        h.update(b"c");
        assert_eq!(
            h.finalize_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn thread_hash_equals_inline_hash() {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let mut inline = super::Sha256::new();
        let mut threaded = super::Sha256Thread::spawn().unwrap();
        for piece in data.chunks(70_001) {
            inline.update(piece);
            threaded.update(piece);
        }
        inline.update(&vec![0u8; 2_500_000]);
        threaded.update_zeros(2_500_000);
        inline.update(b"tail");
        threaded.update(b"tail");
        assert_eq!(threaded.finalize_hex().unwrap(), inline.finalize_hex());
    }
}
