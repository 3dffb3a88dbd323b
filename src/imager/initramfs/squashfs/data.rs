//! File contents: every file is cut into 128 KiB blocks written in order, its tail (or the whole
//! file when smaller than a block) packed into shared fragment blocks. Blocks are compressed on
//! worker threads and written in sequence order, so the bytes do not depend on the thread count;
//! a block is stored raw (size word bit 24) when compressing does not make it smaller.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, mpsc};

use super::metadata::{Codec, Packer};
use crate::io_context::IoContext;

/// Data block size (and maximum fragment block size).
pub const BLOCK_SIZE: usize = 128 * 1024;
/// Size word bit: the block is stored uncompressed.
pub const BLOCK_UNCOMPRESSED: u32 = 1 << 24;

/// Where a regular file's contents come from.
#[derive(Debug, Clone, Copy)]
pub enum Source<'a> {
    /// A file on disk, read during the write.
    Path(&'a Path),
    /// Bytes in memory.
    Bytes(&'a [u8]),
}

/// Where one file's data ended up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placed {
    /// Bytes in the file.
    pub size: u64,
    /// Absolute offset of its first block (0 without blocks).
    pub start: u64,
    /// On-disk size word of every full block.
    pub blocks: Vec<u32>,
    /// Fragment block index and offset of the tail, if any.
    pub fragment: Option<(u32, u32)>,
}

/// Every file's placement, the fragment blocks (absolute offset, size word) and the end offset.
#[derive(Debug, Default)]
pub struct DataLayout {
    /// Per input source, in input order.
    pub files: Vec<Placed>,
    /// Fragment table entries.
    pub fragments: Vec<(u64, u32)>,
    /// Absolute offset after the last block.
    pub end: u64,
}

#[derive(Debug, Clone, Copy)]
enum Tag {
    Block(usize),
    Fragment(u32),
}

struct Job {
    seq: u64,
    tag: Tag,
    data: Vec<u8>,
}

struct Done {
    seq: u64,
    tag: Tag,
    bytes: Vec<u8>,
    word: u32,
}

/// Compresses one block; the bytes to store and their size word.
fn pack_block(packer: &mut Packer, data: Vec<u8>) -> io::Result<(Vec<u8>, u32)> {
    match packer.compress(&data)? {
        Some(c) => {
            let w = c.len() as u32;
            Ok((c, w))
        }
        None => {
            let w = data.len() as u32 | BLOCK_UNCOMPRESSED;
            Ok((data, w))
        }
    }
}

/// Per file: its size and the (fragment block, offset) of its tail.
type Tails = Vec<(u64, Option<(u32, u32)>)>;

/// Reads every source in order and queues its blocks and fragment blocks; returns each file's
/// size and tail placement.
fn produce(
    sources: &[Source<'_>],
    jobs: &mpsc::SyncSender<Job>,
    abort: &AtomicBool,
) -> io::Result<Tails> {
    let mut seq = 0u64;
    let mut frag = Vec::with_capacity(BLOCK_SIZE);
    let mut frag_index = 0u32;
    let mut out = Vec::with_capacity(sources.len());
    let closed = || io::Error::other("squashfs data writer stopped");
    let mut send = |tag: Tag, data: Vec<u8>| -> io::Result<()> {
        if abort.load(Ordering::Relaxed) {
            return Err(closed());
        }
        jobs.send(Job { seq, tag, data }).map_err(|_| closed())?;
        seq += 1;
        Ok(())
    };
    // One block buffer, replaced only when a full block is handed to the compressors: small
    // files (most of a tree) reuse it.
    let mut buf = Vec::with_capacity(BLOCK_SIZE);
    for (i, src) in sources.iter().enumerate() {
        let mut reader: Box<dyn Read> = match src {
            Source::Path(p) => Box::new(File::open(p).map_err(|e| {
                io::Error::new(e.kind(), IoContext::new(p.display().to_string(), e))
            })?),
            Source::Bytes(b) => Box::new(*b),
        };
        let mut size = 0u64;
        let mut tail = None;
        loop {
            buf.clear();
            reader
                .by_ref()
                .take(BLOCK_SIZE as u64)
                .read_to_end(&mut buf)?;
            let n = buf.len();
            size += n as u64;
            if n == BLOCK_SIZE {
                let full = std::mem::replace(&mut buf, Vec::with_capacity(BLOCK_SIZE));
                send(Tag::Block(i), full)?;
                continue;
            }
            if n > 0 {
                if frag.len() + n > BLOCK_SIZE {
                    send(Tag::Fragment(frag_index), std::mem::take(&mut frag))?;
                    frag_index += 1;
                }
                tail = Some((frag_index, frag.len() as u32));
                frag.extend_from_slice(&buf[..n]);
            }
            break;
        }
        out.push((size, tail));
    }
    if !frag.is_empty() {
        send(Tag::Fragment(frag_index), frag)?;
    }
    Ok(out)
}

/// Writes the data area of the image to `out`, which is at absolute offset `at`; blocks are
/// compressed on `threads` workers.
pub fn write_data<W: Write + ?Sized>(
    sources: &[Source<'_>],
    codec: Codec,
    threads: usize,
    at: u64,
    out: &mut W,
) -> io::Result<DataLayout> {
    let threads = threads.max(1);
    let (job_tx, job_rx) = mpsc::sync_channel::<Job>(threads * 2);
    let job_rx = Mutex::new(job_rx);
    let (done_tx, done_rx) = mpsc::channel::<io::Result<Done>>();
    let abort = AtomicBool::new(false);
    let mut layout = DataLayout {
        files: vec![Placed::default(); sources.len()],
        fragments: Vec::new(),
        end: at,
    };
    let packers = (0..threads)
        .map(|_| codec.packer())
        .collect::<io::Result<Vec<_>>>()?;
    std::thread::scope(|scope| -> io::Result<()> {
        let producer = {
            let abort = &abort;
            scope.spawn(move || produce(sources, &job_tx, abort))
        };
        for mut packer in packers {
            let done_tx = done_tx.clone();
            let job_rx = &job_rx;
            scope.spawn(move || {
                loop {
                    let job = match job_rx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => break,
                    };
                    let Ok(job) = job else { break };
                    let r = pack_block(&mut packer, job.data).map(|(bytes, word)| Done {
                        seq: job.seq,
                        tag: job.tag,
                        bytes,
                        word,
                    });
                    if done_tx.send(r).is_err() {
                        break;
                    }
                }
            });
        }
        drop(done_tx);
        let consumed = consume(&done_rx, &mut layout, out);
        if consumed.is_err() {
            abort.store(true, Ordering::Relaxed);
            // Drain so the workers and the producer can finish.
            for _ in done_rx.iter() {}
        }
        let produced = producer
            .join()
            .map_err(|_| io::Error::other("squashfs data reader panicked"))?;
        consumed?;
        for (placed, (size, tail)) in layout.files.iter_mut().zip(produced?) {
            placed.size = size;
            placed.fragment = tail;
        }
        Ok(())
    })?;
    Ok(layout)
}

/// Writes finished blocks in sequence order, recording where each landed.
fn consume<W: Write + ?Sized>(
    done: &mpsc::Receiver<io::Result<Done>>,
    layout: &mut DataLayout,
    out: &mut W,
) -> io::Result<()> {
    let mut next = 0u64;
    let mut waiting: BTreeMap<u64, Done> = BTreeMap::new();
    for d in done.iter() {
        let d = d?;
        waiting.insert(d.seq, d);
        while let Some(d) = waiting.remove(&next) {
            out.write_all(&d.bytes)?;
            match d.tag {
                Tag::Block(i) => {
                    let f = &mut layout.files[i];
                    if f.blocks.is_empty() {
                        f.start = layout.end;
                    }
                    f.blocks.push(d.word);
                }
                Tag::Fragment(k) => {
                    debug_assert_eq!(k as usize, layout.fragments.len());
                    layout.fragments.push((layout.end, d.word));
                }
            }
            layout.end += d.bytes.len() as u64;
            next += 1;
        }
    }
    if !waiting.is_empty() {
        return Err(io::Error::other("squashfs data block missing"));
    }
    Ok(())
}
