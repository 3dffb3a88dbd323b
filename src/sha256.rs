//! SHA-256 on the hot paths (blob storage, digest verification) through aws-lc, whose assembly
//! is about twice as fast as the portable `sha2` code on CPUs without SHA extensions.

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

    /// The digest as lowercase hex.
    pub fn finalize_hex(self) -> String {
        hex::encode(self.0.finish().as_ref())
    }
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn hex_digest(bytes: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes).as_ref())
}

/// Bytes gathered before a batch goes to [`Sha256Thread`]'s thread.
const BATCH: usize = 1 << 20;
/// Batches in flight (bounded: a slow hasher slows the writer instead of buffering).
const QUEUE: usize = 4;

enum Work {
    Bytes(Vec<u8>),
    Zeros(u64),
    /// `len` bytes at `offset` of the thread's file, read there.
    Range(u64, usize),
}

/// A SHA-256 computed on a helper thread, so that a writer hashing large outputs with BLAKE3
/// and SHA-256 uses two cores (SHA-256 is the slow one without SHA extensions). Bytes are
/// copied into 1 MiB batches; zero runs are sent as lengths. A thread started with
/// [`Sha256Thread::spawn_reading`] can instead be given ranges of a file, which it reads
/// itself: the caller then never waits for it until [`Sha256Thread::finalize_hex`].
pub struct Sha256Thread {
    batch: Vec<u8>,
    tx: Option<Sender>,
    handle: Option<std::thread::JoinHandle<Option<String>>>,
    /// The thread's kernel id (0 if it died before reporting it).
    tid: libc::pid_t,
}

/// The sending side of the thread's queue.
enum Sender {
    Bounded(std::sync::mpsc::SyncSender<Work>),
    Unbounded(std::sync::mpsc::Sender<Work>),
}

impl Sender {
    /// Queues `w`; false when the thread is gone.
    fn send(&self, w: Work) -> bool {
        match self {
            Sender::Bounded(tx) => tx.send(w).is_ok(),
            Sender::Unbounded(tx) => tx.send(w).is_ok(),
        }
    }
}

impl Sha256Thread {
    /// Starts the thread.
    pub fn spawn() -> std::io::Result<Sha256Thread> {
        Self::start(Some(QUEUE), None)
    }

    /// Starts a thread that also hashes ranges of `file` ([`Sha256Thread::update_range`]).
    /// Its queue is not bounded (a range is a small message; the bytes stay in the page
    /// cache), so a caller that is faster than SHA-256 runs ahead instead of waiting.
    pub fn spawn_reading(file: std::fs::File) -> std::io::Result<Sha256Thread> {
        Self::start(None, Some(file))
    }

    /// Starts the thread with a queue of `bound` messages (`None`: unbounded).
    fn start(bound: Option<usize>, file: Option<std::fs::File>) -> std::io::Result<Sha256Thread> {
        let (tx, rx) = match bound {
            Some(n) => {
                let (tx, rx) = std::sync::mpsc::sync_channel::<Work>(n);
                (Sender::Bounded(tx), rx)
            }
            None => {
                let (tx, rx) = std::sync::mpsc::channel::<Work>();
                (Sender::Unbounded(tx), rx)
            }
        };
        let (tid_tx, tid_rx) = std::sync::mpsc::sync_channel(1);
        let handle = std::thread::Builder::new().name("sha256".into()).spawn(
            move || -> Option<String> {
                // SAFETY: gettid has no preconditions.
                let _ = tid_tx.send(unsafe { libc::gettid() });
                let mut h = Sha256::new();
                let mut buf = Vec::new();
                for w in rx {
                    match w {
                        Work::Bytes(b) => h.update(&b),
                        Work::Zeros(n) => crate::zeros::feed_zeros(n, |z| h.update(z)),
                        Work::Range(offset, len) => {
                            use std::os::unix::fs::FileExt as _;
                            buf.resize(len, 0);
                            // A failed read fails the digest (`finalize_hex` gives `None`).
                            file.as_ref()?.read_exact_at(&mut buf, offset).ok()?;
                            h.update(&buf);
                        }
                    }
                }
                Some(h.finalize_hex())
            },
        )?;
        Ok(Sha256Thread {
            batch: Vec::new(),
            tx: Some(tx),
            handle: Some(handle),
            tid: tid_rx.recv().unwrap_or(0),
        })
    }

    /// The thread's kernel thread id (for scheduling changes).
    pub fn thread_id(&self) -> Option<libc::pid_t> {
        Some(self.tid).filter(|&t| t != 0)
    }

    fn send(&mut self, w: Work) {
        // A send only fails when the thread is gone; `finalize_hex` reports that.
        if let Some(tx) = &self.tx
            && !tx.send(w)
        {
            self.tx = None;
        }
    }

    fn flush_batch(&mut self) {
        if !self.batch.is_empty() {
            let full = std::mem::take(&mut self.batch);
            self.send(Work::Bytes(full));
        }
    }

    /// Adds bytes.
    pub fn update(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.batch.capacity() == 0 {
                // allocated on first use: threads fed with ranges never need it
                self.batch.reserve_exact(BATCH);
            }
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

    /// Adds the `len` bytes at `offset` of the file given to [`Sha256Thread::spawn_reading`]
    /// (they must not change any more); fails the digest on a thread without a file.
    pub fn update_range(&mut self, offset: u64, len: usize) {
        self.flush_batch();
        self.send(Work::Range(offset, len));
    }

    /// The digest as lowercase hex; `None` if the thread died.
    pub fn finalize_hex(mut self) -> Option<String> {
        self.flush_batch();
        let alive = self.tx.take().is_some();
        let digest = self.handle.take()?.join().ok()??;
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

    #[test]
    fn ranges_read_by_the_thread_hash_like_bytes() {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 241) as u8).collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, &data).unwrap();
        let mut threaded =
            super::Sha256Thread::spawn_reading(std::fs::File::open(&path).unwrap()).unwrap();
        threaded.update_range(0, 1_000_000);
        threaded.update_zeros(5);
        threaded.update(b"mixed");
        threaded.update_range(1_000_000, 2_000_000);
        let mut inline = super::Sha256::new();
        inline.update(&data[..1_000_000]);
        inline.update(&[0; 5]);
        inline.update(b"mixed");
        inline.update(&data[1_000_000..]);
        assert_eq!(threaded.finalize_hex().unwrap(), inline.finalize_hex());
        // a range beyond the end fails the digest instead of hashing short
        let mut short =
            super::Sha256Thread::spawn_reading(std::fs::File::open(&path).unwrap()).unwrap();
        short.update_range(2_999_000, 2_000);
        assert_eq!(short.finalize_hex(), None);
        // so does a range on a thread without a file
        let mut fileless = super::Sha256Thread::spawn().unwrap();
        fileless.update_range(0, 1);
        assert_eq!(fileless.finalize_hex(), None);
    }
}
