//! OCI layouts, oci-archives, docker-archives and layer flattening, including hostile input.

use std::collections::HashMap;
use std::io::{Cursor, Read};
use std::path::Path;

use crate::oci_support::{E, Image, gzip, tar, tar_dir, write_docker_archive, write_layout, zstd};
use image_factory::oci::verify::SyncVerifyingReader;
use image_factory::oci::{
    Descriptor, Digest, FlattenOptions, ImageManifest, ImageSource, LayoutKind, LayoutSource,
    OciError, Reference, flatten, read_file, source_opener,
};
use tokio::io::AsyncReadExt;

fn r(s: &str) -> Reference {
    s.parse().expect("reference")
}

/// An opener over in-memory blobs, verifying each.
fn mem_opener(
    blobs: HashMap<Digest, Vec<u8>>,
) -> impl FnMut(&Descriptor) -> Result<Box<dyn Read + Send>, OciError> {
    move |d: &Descriptor| {
        let bytes = blobs
            .get(&d.digest)
            .cloned()
            .ok_or_else(|| OciError::NotFound(d.digest.to_string()))?;
        Ok(
            Box::new(SyncVerifyingReader::for_descriptor(Cursor::new(bytes), d))
                as Box<dyn Read + Send>,
        )
    }
}

/// Flattens `layers` (blobs) into `dest` with `opts`.
fn flatten_blobs(
    layers: &[Vec<u8>],
    dest: &Path,
    opts: &FlattenOptions,
) -> Result<image_factory::oci::FlattenReport, OciError> {
    let img = Image::new(layers.to_vec());
    let blobs = img
        .layers
        .iter()
        .map(|(d, b)| (d.digest.clone(), b.clone()))
        .collect();
    flatten(&img.layer_descs(), &mut mem_opener(blobs), dest, opts)
}

fn sample_image() -> Image {
    Image::new(vec![
        gzip(&tar(&[
            E::Dir("etc"),
            E::File("etc/hello", b"hello"),
            E::File("usr/bin/tool", b"v1"),
        ])),
        zstd(&tar(&[
            E::File("usr/bin/tool", b"v2"),
            E::Symlink("etc/link", "hello"),
        ])),
    ])
}

async fn read_blob(
    src: &impl ImageSource,
    reference: &Reference,
    d: &Descriptor,
) -> Result<Vec<u8>, std::io::Error> {
    let mut out = Vec::new();
    let mut reader = src
        .blob(reference, d)
        .await
        .map_err(std::io::Error::other)?;
    reader.read_to_end(&mut out).await?;
    Ok(out)
}

async fn check_source(src: &LayoutSource, img: &Image) {
    let desc = src
        .resolve(&r("ghcr.io/siderolabs/imager:v1.11.0"))
        .await
        .unwrap()
        .expect("full ref");
    assert_eq!(desc.digest, img.manifest_desc.digest);
    // Same repository and tag on another registry (a mirror), and a bare tag name.
    assert!(
        src.resolve(&r("10.0.0.1:5000/siderolabs/imager:v1.11.0"))
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        src.resolve(&r("x.io/anything:bare-tag"))
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        src.resolve(&r("ghcr.io/siderolabs/imager:v9.9.9"))
            .await
            .unwrap()
            .is_none()
    );
    // By digest, including one not listed in index.json by name.
    let by_digest = src
        .resolve(&r(&format!("ghcr.io/a/b@{}", desc.digest)))
        .await
        .unwrap()
        .expect("digest");
    assert_eq!(by_digest.media_type, img.manifest_desc.media_type);
    let missing = Digest::of(b"nope");
    assert!(
        src.resolve(&r(&format!("ghcr.io/a/b@{missing}")))
            .await
            .unwrap()
            .is_none()
    );
    let reference = r("ghcr.io/siderolabs/imager:v1.11.0");
    let bytes = src
        .manifest(&reference, &desc.digest, 1 << 20)
        .await
        .unwrap();
    assert_eq!(bytes, img.manifest);
    assert!(matches!(
        src.manifest(&reference, &desc.digest, 10).await,
        Err(OciError::Limit(_))
    ));
    let m: ImageManifest = serde_json::from_slice(&bytes).unwrap();
    for (d, b) in &img.layers {
        assert_eq!(&read_blob(src, &reference, d).await.unwrap(), b);
    }
    assert_eq!(
        read_blob(src, &reference, &m.config).await.unwrap(),
        img.config
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn layout_directory_and_oci_archive() {
    let tmp = tempfile::tempdir().unwrap();
    let img = sample_image();
    let other = Image::new(vec![tar(&[E::File("x", b"y")])]);
    let dir = tmp.path().join("layout");
    write_layout(
        &dir,
        &[
            (&img, &["ghcr.io/siderolabs/imager:v1.11.0", "bare-tag"]),
            (&other, &["ghcr.io/siderolabs/installer:v1.11.0"]),
        ],
    );

    let src = LayoutSource::open(&dir).unwrap();
    assert_eq!(src.kind(), LayoutKind::Directory);
    check_source(&src, &img).await;
    let installer = src
        .resolve(&r("ghcr.io/siderolabs/installer:v1.11.0"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(installer.digest, other.manifest_desc.digest);

    let archive = tmp.path().join("bundle.tar");
    tar_dir(&dir, &archive);
    let src = LayoutSource::open_async(archive.clone()).await.unwrap();
    assert_eq!(src.kind(), LayoutKind::OciArchive);
    assert_eq!(src.refs().len(), 3);
    check_source(&src, &img).await;

    // Flatten straight from the archive through the async source.
    let reference = r("ghcr.io/siderolabs/imager:v1.11.0");
    let dest = tmp.path().join("root");
    let layers = img.layer_descs();
    let report = tokio::task::block_in_place(|| {
        let mut open = source_opener(&src, &reference, tokio::runtime::Handle::current());
        flatten(&layers, &mut open, &dest, &FlattenOptions::default())
    })
    .unwrap();
    assert_eq!(std::fs::read(dest.join("usr/bin/tool")).unwrap(), b"v2");
    assert_eq!(
        std::fs::read_link(dest.join("etc/link")).unwrap(),
        Path::new("hello")
    );
    assert!(report.entries >= 4);
}

#[tokio::test]
async fn tampered_blobs_are_detected() {
    let tmp = tempfile::tempdir().unwrap();
    let img = sample_image();
    let dir = tmp.path().join("layout");
    write_layout(&dir, &[(&img, &["ghcr.io/siderolabs/imager:v1.11.0"])]);
    let reference = r("ghcr.io/siderolabs/imager:v1.11.0");
    let (layer, bytes) = &img.layers[0];
    let path = dir.join("blobs/sha256").join(layer.digest.hex());

    // Same size, one byte changed: the read that completes the blob fails, naming the digest.
    let mut bad = bytes.clone();
    let last = bad.len() - 1;
    bad[last] ^= 0xff;
    std::fs::write(&path, &bad).unwrap();
    let src = LayoutSource::open(&dir).unwrap();
    let err = read_blob(&src, &reference, layer).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    assert!(err.to_string().contains(layer.digest.as_str()), "{err}");

    // Different size: refused when opened.
    std::fs::write(&path, b"short").unwrap();
    assert!(matches!(
        src.blob(&reference, layer).await,
        Err(OciError::DigestMismatch { .. })
    ));

    // A tampered manifest.
    let mpath = dir
        .join("blobs/sha256")
        .join(img.manifest_desc.digest.hex());
    let mut m = img.manifest.clone();
    m[10] ^= 1;
    std::fs::write(&mpath, &m).unwrap();
    let err = src
        .manifest(&reference, &img.manifest_desc.digest, 1 << 20)
        .await
        .unwrap_err();
    assert!(matches!(err, OciError::DigestMismatch { .. }), "{err}");

    // Tampering inside an oci-archive.
    std::fs::write(&path, bytes).unwrap();
    std::fs::write(&mpath, &img.manifest).unwrap();
    let archive = tmp.path().join("a.tar");
    tar_dir(&dir, &archive);
    let mut raw = std::fs::read(&archive).unwrap();
    let pos = raw
        .windows(bytes.len())
        .position(|w| w == &bytes[..])
        .unwrap();
    raw[pos + bytes.len() / 2] ^= 0x55;
    std::fs::write(&archive, &raw).unwrap();
    let src = LayoutSource::open(&archive).unwrap();
    assert!(read_blob(&src, &reference, layer).await.is_err());
}

#[tokio::test]
async fn hostile_archives_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let traversal = tmp.path().join("t.tar");
    std::fs::write(
        &traversal,
        tar(&[E::File("index.json", b"{}"), E::File("../escape", b"x")]),
    )
    .unwrap();
    assert!(matches!(
        LayoutSource::open(&traversal),
        Err(OciError::Unsafe(_))
    ));
    let absolute = tmp.path().join("abs.tar");
    std::fs::write(&absolute, tar(&[E::File("/index.json", b"{}")])).unwrap();
    assert!(matches!(
        LayoutSource::open(&absolute),
        Err(OciError::Unsafe(_))
    ));
    // A blob that is a symlink.
    let d = Digest::of(b"x");
    let link = tmp.path().join("l.tar");
    let name = format!("blobs/sha256/{}", d.hex());
    std::fs::write(
        &link,
        tar(&[
            E::File("index.json", br#"{"schemaVersion":2,"manifests":[]}"#),
            E::Symlink(&name, "/etc/passwd"),
        ]),
    )
    .unwrap();
    assert!(matches!(
        LayoutSource::open(&link),
        Err(OciError::Unsafe(_))
    ));
    // Truncated archive: the last entry's data runs past the end of the file.
    let good = tmp.path().join("layout");
    let img = sample_image();
    write_layout(&good, &[(&img, &["v1"])]);
    let archive = tmp.path().join("cut.tar");
    tar_dir(&good, &archive);
    let raw = std::fs::read(&archive).unwrap();
    std::fs::write(&archive, &raw[..raw.len() - 1024 - 300]).unwrap();
    assert!(LayoutSource::open(&archive).is_err());
    // Oversized index.json.
    let big = tmp.path().join("big");
    std::fs::create_dir(&big).unwrap();
    std::fs::write(big.join("index.json"), vec![b' '; 5 << 20]).unwrap();
    assert!(matches!(LayoutSource::open(&big), Err(OciError::Limit(_))));
}

#[tokio::test(flavor = "multi_thread")]
async fn docker_archive() {
    let tmp = tempfile::tempdir().unwrap();
    let layers = vec![
        tar(&[
            E::File("etc/os-release", b"ID=test"),
            E::File("bin/sh", b"sh"),
        ]),
        tar(&[
            E::File("etc/.wh.os-release", b""),
            E::File("etc/new", b"new"),
        ]),
    ];
    let path = tmp.path().join("image.tar");
    let config = write_docker_archive(
        &path,
        &layers,
        &["ghcr.io/siderolabs/imager:v1.11.0", "busybox:latest"],
    );
    let src = LayoutSource::open(&path).unwrap();
    assert_eq!(src.kind(), LayoutKind::DockerArchive);
    let reference = r("ghcr.io/siderolabs/imager:v1.11.0");
    let desc = src
        .resolve(&reference)
        .await
        .unwrap()
        .expect("RepoTag resolves");
    assert_eq!(desc.media_type, image_factory::oci::MEDIA_DOCKER_MANIFEST);
    assert!(
        src.resolve(&r("docker.io/library/busybox:latest"))
            .await
            .unwrap()
            .is_some()
    );
    let m: ImageManifest = serde_json::from_slice(
        &src.manifest(&reference, &desc.digest, 1 << 20)
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(m.layers.len(), 2);
    assert_eq!(
        read_blob(&src, &reference, &m.config).await.unwrap(),
        config
    );
    let by_digest = src
        .resolve(&r(&format!("ghcr.io/x/y@{}", desc.digest)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(by_digest.digest, desc.digest);
    let dest = tmp.path().join("root");
    tokio::task::block_in_place(|| {
        let mut open = source_opener(&src, &reference, tokio::runtime::Handle::current());
        flatten(&m.layers, &mut open, &dest, &FlattenOptions::default())
    })
    .unwrap();
    assert!(!dest.join("etc/os-release").exists());
    assert_eq!(std::fs::read(dest.join("etc/new")).unwrap(), b"new");
}

#[test]
fn whiteouts_and_opaque_directories() {
    let tmp = tempfile::tempdir().unwrap();
    let lower = gzip(&tar(&[
        E::Dir("a"),
        E::File("a/keep", b"1"),
        E::File("a/gone", b"2"),
        E::Dir("b"),
        E::File("b/old", b"3"),
        E::Dir("b/sub"),
        E::File("b/sub/deep", b"4"),
        E::File("c", b"file becomes dir"),
        E::Dir("d"),
        E::File("d/x", b"5"),
    ]));
    let upper = zstd(&tar(&[
        E::File("a/.wh.gone", b""),
        E::File("b/sub/fresh", b"6"),
        E::File("b/.wh..wh..opq", b""),
        E::File("b/new", b"7"),
        E::Dir("c"),
        E::File("c/inside", b"8"),
        E::File(".wh.d", b""),
        E::File("zz/.wh.nothing", b""),
        E::File("yy/.wh..wh..opq", b""),
    ]));
    let dest = tmp.path().join("root");
    flatten_blobs(
        &[lower.clone(), upper.clone()],
        &dest,
        &FlattenOptions::default(),
    )
    .unwrap();
    let exists = |p: &str| std::fs::symlink_metadata(dest.join(p)).is_ok();
    assert!(exists("a/keep") && !exists("a/gone"));
    assert!(!exists("b/old") && !exists("b/sub/deep"));
    assert!(exists("b/sub/fresh") && exists("b/new"));
    assert!(dest.join("c").is_dir() && exists("c/inside"));
    assert!(!exists("d"));
    assert!(!exists("zz") && !exists("yy"), "whiteouts create nothing");
    assert!(!exists("a/.wh.gone") && !exists("b/.wh..wh..opq"));

    // read_file sees the same merged view without extracting.
    let img = Image::new(vec![lower, upper]);
    let blobs: HashMap<_, _> = img
        .layers
        .iter()
        .map(|(d, b)| (d.digest.clone(), b.clone()))
        .collect();
    let mut open = mem_opener(blobs);
    let layers = img.layer_descs();
    assert_eq!(
        read_file(&layers, &mut open, "a/keep", 100)
            .unwrap()
            .as_deref(),
        Some(&b"1"[..])
    );
    assert_eq!(read_file(&layers, &mut open, "a/gone", 100).unwrap(), None);
    assert_eq!(read_file(&layers, &mut open, "b/old", 100).unwrap(), None);
    assert_eq!(
        read_file(&layers, &mut open, "b/new", 100)
            .unwrap()
            .as_deref(),
        Some(&b"7"[..])
    );
    assert_eq!(read_file(&layers, &mut open, "d/x", 100).unwrap(), None);
    assert_eq!(read_file(&layers, &mut open, "nothing", 100).unwrap(), None);
    assert!(matches!(
        read_file(&layers, &mut open, "a/keep", 0),
        Err(OciError::Limit(_))
    ));
}

#[test]
fn filters_modes_links_and_labels() {
    let tmp = tempfile::tempdir().unwrap();
    let layer = tar(&[
        E::FileMode("usr/install/amd64/vmlinuz", b"kernel", 0o4755),
        E::Labeled(
            "usr/lib/grub/i386-pc/boot.img",
            b"grub",
            "system_u:object_r:grub_t:s0",
        ),
        E::Hardlink(
            "usr/install/amd64/vmlinuz.hard",
            "usr/install/amd64/vmlinuz",
        ),
        E::File("etc/passwd", b"skipped"),
        E::Symlink("usr/install/amd64/rel", "../../lib"),
        E::Fifo("usr/install/amd64/fifo"),
    ]);
    let dest = tmp.path().join("root");
    let opts = FlattenOptions {
        prefixes: vec!["usr/install/amd64/".into(), "usr/lib/grub/".into()],
        record_selinux: true,
        ..FlattenOptions::default()
    };
    let report = flatten_blobs(&[layer], &dest, &opts).unwrap();
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dest.join("usr/install/amd64/vmlinuz"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o755, "setuid dropped, mode kept");
    assert_eq!(
        std::fs::read(dest.join("usr/install/amd64/vmlinuz.hard")).unwrap(),
        b"kernel"
    );
    assert!(!dest.join("etc").exists());
    assert!(!dest.join("usr/install/amd64/fifo").exists());
    assert_eq!(report.skipped.len(), 1);
    assert_eq!(
        report
            .selinux_labels
            .get("usr/lib/grub/i386-pc/boot.img")
            .map(String::as_str),
        Some("system_u:object_r:grub_t:s0")
    );
}

/// Asserts `layers` are refused and nothing appears outside `tmp/root`.
fn assert_refused(layers: &[Vec<u8>], what: &str) -> OciError {
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let dest = tmp.path().join("root");
    let err = flatten_blobs(layers, &dest, &FlattenOptions::default()).expect_err(what);
    let leaked: Vec<_> = std::fs::read_dir(&outside).unwrap().collect();
    assert!(leaked.is_empty(), "{what}: wrote outside the root");
    let siblings: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .collect();
    assert_eq!(siblings.len(), 2, "{what}: {siblings:?}");
    err
}

#[test]
fn malicious_layers_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("outside");
    let err = assert_refused(&[tar(&[E::File("../outside/x", b"x")])], "dot-dot");
    assert!(matches!(err, OciError::Unsafe(_)), "{err}");
    let err = assert_refused(&[tar(&[E::File("/etc/x", b"x")])], "absolute");
    assert!(matches!(err, OciError::Unsafe(_)), "{err}");
    // Symlink escape: a -> <outside>, then a/x (same layer and across layers).
    let target = outside.to_string_lossy().into_owned();
    let err = assert_refused(
        &[tar(&[E::Symlink("a", &target), E::File("a/x", b"x")])],
        "symlink escape",
    );
    assert!(matches!(err, OciError::Unsafe(_)), "{err}");
    assert_refused(
        &[
            tar(&[E::Symlink("a", "../outside")]),
            tar(&[E::File("a/x", b"x")]),
        ],
        "symlink escape across layers",
    );
    assert_refused(
        &[
            tar(&[E::Symlink("a", "/")]),
            tar(&[E::File("a/.wh.x", b"")]),
        ],
        "whiteout through a symlink",
    );
    // Hardlink escapes: outside the root, to a symlink, to something not extracted.
    assert_refused(
        &[tar(&[E::Hardlink("h", "../outside/secret")])],
        "hardlink dot-dot",
    );
    assert_refused(
        &[tar(&[E::Hardlink("h", "/etc/passwd")])],
        "hardlink absolute",
    );
    assert_refused(
        &[tar(&[
            E::Symlink("s", "/etc/passwd"),
            E::Hardlink("h", "s"),
        ])],
        "hardlink to symlink",
    );
    assert_refused(
        &[tar(&[E::Hardlink("h", "missing")])],
        "hardlink to nothing",
    );
    // Truncated tars: mid-entry, at a block boundary without the end marker, truncated gzip.
    let full = tar(&[E::File("a", &[7u8; 3000]), E::File("b", b"b")]);
    assert_refused(&[full[..1500].to_vec()], "cut inside data");
    assert_refused(&[full[..512 + 3072].to_vec()], "cut at a block boundary");
    let gz = gzip(&full);
    assert_refused(&[gz[..gz.len() / 2].to_vec()], "cut gzip");
}

/// A reader yielding a gzip stream of a tar holding one file of `size` zero bytes, produced
/// lazily (never more than what the consumer pulls).
struct ZeroBomb(
    flate2::read::GzEncoder<std::io::Chain<Cursor<Vec<u8>>, std::io::Take<std::io::Repeat>>>,
);

impl ZeroBomb {
    fn new(size: u64) -> ZeroBomb {
        let mut h = tar::Header::new_gnu();
        h.set_path("zeros").unwrap();
        h.set_size(size);
        h.set_mode(0o644);
        h.set_cksum();
        let head = Cursor::new(h.as_bytes().to_vec());
        ZeroBomb(flate2::read::GzEncoder::new(
            Read::chain(head, Read::take(std::io::repeat(0), size)),
            flate2::Compression::best(),
        ))
    }
}

impl Read for ZeroBomb {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

#[test]
fn decompression_bomb_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("root");
    // 1 GiB of zeros, gzip-compressed on the fly; the digest is irrelevant (never reached).
    let desc = Descriptor::for_bytes(image_factory::oci::MEDIA_OCI_LAYER_GZIP, b"");
    let mut open = |_: &Descriptor| Ok(Box::new(ZeroBomb::new(1 << 30)) as Box<dyn Read + Send>);
    let err = flatten(
        std::slice::from_ref(&desc),
        &mut open,
        &dest,
        &FlattenOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(err, OciError::Limit(_)), "{err}");
    let written = std::fs::metadata(dest.join("zeros"))
        .map(|m| m.len())
        .unwrap_or(0);
    assert!(
        written < 64 << 20,
        "stopped early ({written} bytes written)"
    );
    // read_file is guarded the same way.
    let err = read_file(&[desc], &mut open, "zeros", u64::MAX).unwrap_err();
    assert!(matches!(err, OciError::Limit(_)), "{err}");
    // A total-size budget applies to uncompressed layers as well.
    let opts = FlattenOptions {
        max_total_bytes: 4096,
        ..FlattenOptions::default()
    };
    let big = tar(&[E::File("f", &[1u8; 8192])]);
    assert!(matches!(
        flatten_blobs(&[big], &tmp.path().join("r2"), &opts),
        Err(OciError::Limit(_))
    ));
}
