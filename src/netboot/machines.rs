//! The appliance's machine assignments: those written through the admin API (durable in the
//! metadata store, tree `netboot_assignments`, one small JSON record per name) and those of
//! the declarative `netboot.machinesFile` (read at start and on reload; read-only through the
//! API), held together as one [`AssignmentSet`] that boot requests resolve against. Also the
//! boot records ([`BootLog`]).
//!
//! Every change is checked against the whole set first (names, ties, the budget), so the set
//! in force is always valid; a file that does not check is refused whole and the previous
//! file's assignments stay.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use serde::{Deserialize, Serialize};

use super::assignment::{
    Assignment, AssignmentSet, AssignmentSpec, MAX_ASSIGNMENTS, SelectorSpec, Source,
};
use super::boots::{BootLog, BootRecord};
use super::error::NetbootError;
use crate::store::{MetaStore, SchematicStore, StoreError};

/// Metadata tree of the API's assignments, keyed by name.
const TREE: &str = "netboot_assignments";
/// Largest machines file read.
pub const MAX_FILE_BYTES: u64 = 4 << 20;

/// The machines file: `machines:`, a list of assignments with names.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MachinesFile {
    #[serde(default)]
    machines: Vec<AssignmentSpec>,
}

/// What the last load of the machines file did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct FileStatus {
    /// The file (`netboot.machinesFile`; empty when none).
    pub path: String,
    /// Assignments it holds now.
    pub assignments: usize,
    /// When it was last applied (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loaded_at: Option<String>,
    /// Why the last reload was refused (the assignments of the load before stay), if it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One assignment as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AssignmentView {
    /// Name.
    pub name: String,
    /// Where it comes from.
    pub source: Source,
    /// Which machines (normalised; `{}` for the default).
    pub selector: SelectorSpec,
    /// Schematic ID.
    pub schematic: String,
    /// Talos version.
    pub version: String,
    /// Platform.
    pub platform: String,
    /// Kernel arguments appended to the schematic's command line.
    #[serde(default)]
    pub extra_kernel_args: Vec<String>,
    /// The latest boot it served (or refused), if a record is kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_boot: Option<BootRecord>,
}

impl AssignmentView {
    /// The view of `a` with its latest boot.
    pub fn new(a: &Assignment, last_boot: Option<BootRecord>) -> AssignmentView {
        AssignmentView {
            name: a.name.clone(),
            source: a.source,
            selector: a.selector.spec(),
            schematic: a.boot.schematic.clone(),
            version: a.boot.version.tag(),
            platform: a.boot.platform.clone(),
            extra_kernel_args: a.boot.extra_kernel_args.clone(),
            last_boot,
        }
    }
}

/// Machine assignments and boot records.
pub struct Machines {
    meta: Arc<dyn MetaStore>,
    schematics: SchematicStore,
    file: Option<PathBuf>,
    set: RwLock<Arc<AssignmentSet>>,
    /// Serialises changes (API writes and file reloads).
    writes: tokio::sync::Mutex<()>,
    file_status: Mutex<FileStatus>,
    boots: BootLog,
}

/// Reads and checks the machines file at `path` (everything but ties with the API's set).
fn read_file(path: &Path, schematics: &SchematicStore) -> Result<Vec<Assignment>, NetbootError> {
    let inner = || -> Result<Vec<Assignment>, NetbootError> {
        let file = std::fs::File::open(path).map_err(NetbootError::FileRead)?;
        let mut bytes = Vec::new();
        use std::io::Read as _;
        file.take(MAX_FILE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(NetbootError::FileRead)?;
        if bytes.len() as u64 > MAX_FILE_BYTES {
            return Err(NetbootError::FileTooLarge {
                max: MAX_FILE_BYTES,
            });
        }
        let parsed: MachinesFile = if bytes.iter().all(u8::is_ascii_whitespace) {
            MachinesFile { machines: vec![] }
        } else {
            serde_yaml::from_slice(&bytes).map_err(NetbootError::FileSyntax)?
        };
        if parsed.machines.len() > MAX_ASSIGNMENTS {
            return Err(NetbootError::TooMany {
                max: MAX_ASSIGNMENTS,
            });
        }
        let mut out = Vec::with_capacity(parsed.machines.len());
        for (i, spec) in parsed.machines.iter().enumerate() {
            let Some(name) = spec.name.as_deref() else {
                return Err(NetbootError::Invalid {
                    name: format!("#{}", i + 1),
                    reason: "every entry of the machines file needs a name".into(),
                });
            };
            let a = Assignment::from_spec(name, spec, Source::File)?;
            check_schematic(schematics, &a)?;
            out.push(a);
        }
        Ok(out)
    };
    inner().map_err(|source| NetbootError::File {
        path: path.to_path_buf(),
        source: Box::new(source),
    })
}

/// Refuses an assignment whose schematic is not stored.
fn check_schematic(schematics: &SchematicStore, a: &Assignment) -> Result<(), NetbootError> {
    if schematics.contains(&a.boot.schematic)? {
        Ok(())
    } else {
        Err(NetbootError::UnknownSchematic {
            name: a.name.clone(),
            schematic: a.boot.schematic.clone(),
        })
    }
}

fn encode(a: &Assignment) -> Result<Vec<u8>, NetbootError> {
    serde_json::to_vec(&a.spec()).map_err(|source| {
        NetbootError::Store(StoreError::Encode {
            what: "machine assignment",
            source,
        })
    })
}

impl Machines {
    /// The assignments stored in `meta` and those of `machines_file` (empty: none), and the
    /// boot records. A machines file that does not check, or that ties with a stored
    /// assignment, is an error here (at start), where a reload keeps the previous set.
    /// Blocking.
    pub fn open(
        meta: Arc<dyn MetaStore>,
        schematics: SchematicStore,
        machines_file: &str,
    ) -> Result<Machines, NetbootError> {
        let mut stored = Vec::new();
        for (k, v) in meta.scan(TREE)? {
            let name = String::from_utf8_lossy(&k).into_owned();
            let corrupt =
                |source: Box<dyn std::error::Error + Send + Sync>| NetbootError::Corrupt {
                    what: "machine assignment",
                    key: name.clone(),
                    source,
                };
            let spec: AssignmentSpec =
                serde_json::from_slice(&v).map_err(|e| corrupt(Box::new(e)))?;
            stored.push(
                Assignment::from_spec(&name, &spec, Source::Api)
                    .map_err(|e| corrupt(Box::new(e)))?,
            );
        }
        let file = (!machines_file.is_empty()).then(|| PathBuf::from(machines_file));
        let mut status = FileStatus {
            path: machines_file.to_string(),
            ..FileStatus::default()
        };
        if let Some(path) = &file {
            let from_file = read_file(path, &schematics)?;
            status.assignments = from_file.len();
            status.loaded_at = Some(crate::clock::now_rfc3339());
            stored.extend(from_file);
        }
        let set = AssignmentSet::new(stored).map_err(|source| match &file {
            Some(path) => NetbootError::File {
                path: path.clone(),
                source: Box::new(source),
            },
            None => source,
        })?;
        tracing::info!(
            assignments = set.len(),
            from_file = status.assignments,
            default = set.default_assignment().map(|a| a.name.as_str()),
            "machine assignments loaded"
        );
        let boots = BootLog::open(Arc::clone(&meta))?;
        Ok(Machines {
            meta,
            schematics,
            file,
            set: RwLock::new(Arc::new(set)),
            writes: tokio::sync::Mutex::new(()),
            file_status: Mutex::new(status),
            boots,
        })
    }

    /// The assignments in force.
    pub fn current(&self) -> Arc<AssignmentSet> {
        match self.set.read() {
            Ok(s) => Arc::clone(&s),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    fn install(&self, set: AssignmentSet) {
        let set = Arc::new(set);
        match self.set.write() {
            Ok(mut s) => *s = set,
            Err(poisoned) => *poisoned.into_inner() = set,
        }
    }

    /// The boot records.
    pub fn boots(&self) -> &BootLog {
        &self.boots
    }

    /// Every assignment with its latest boot, by name.
    pub fn list(&self) -> Result<Vec<AssignmentView>, NetbootError> {
        let mut last = self.boots.last_by_assignment()?;
        Ok(self
            .current()
            .iter()
            .map(|a| AssignmentView::new(a, last.remove(&a.name)))
            .collect())
    }

    /// What the last load of the machines file did.
    pub fn file_status(&self) -> FileStatus {
        self.file_status
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }

    /// Writes the API assignment `name` (replacing one of that name); durable when it
    /// returns. Returns it and whether it is new.
    pub async fn set(
        &self,
        name: &str,
        spec: &AssignmentSpec,
    ) -> Result<(Assignment, bool), NetbootError> {
        let a = Assignment::from_spec(name, spec, Source::Api)?;
        check_schematic(&self.schematics, &a)?;
        let bytes = encode(&a)?;
        let _w = self.writes.lock().await;
        let current = self.current();
        let created = current.get(name).is_none();
        let next = current.with(a.clone())?;
        self.meta.put(TREE, name.as_bytes(), &bytes)?;
        self.meta.flush().await?;
        self.install(next);
        tracing::info!(name, selector = %a.selector, "machine assignment set");
        Ok((a, created))
    }

    /// Removes the API assignment `name`; durable when it returns.
    pub async fn remove(&self, name: &str) -> Result<Assignment, NetbootError> {
        let _w = self.writes.lock().await;
        let current = self.current();
        let Some(a) = current.get(name).cloned() else {
            return Err(NetbootError::NotFound {
                name: name.chars().take(64).collect(),
            });
        };
        if a.source != Source::Api {
            return Err(NetbootError::NameTaken {
                name: a.name,
                source_of: a.source,
            });
        }
        self.meta.remove(TREE, name.as_bytes())?;
        self.meta.flush().await?;
        self.install(current.without(name));
        tracing::info!(name, "machine assignment removed");
        Ok(a)
    }

    /// Reads the machines file again and puts its assignments in place of the previous
    /// file's; returns how many it holds. A file that does not check, or that ties with an
    /// API assignment, changes nothing (the error is kept for [`Machines::file_status`]).
    pub async fn reload_file(&self) -> Result<usize, NetbootError> {
        let Some(path) = self.file.clone() else {
            return Err(NetbootError::NoFile);
        };
        let _w = self.writes.lock().await;
        let schematics = self.schematics.clone();
        let read_path = path.clone();
        let read = tokio::task::spawn_blocking(move || read_file(&read_path, &schematics))
            .await
            .map_err(|source| {
                NetbootError::Store(StoreError::Task {
                    what: "reading the machines file",
                    source,
                })
            })?;
        let result = read.and_then(|from_file| {
            let n = from_file.len();
            self.current()
                .replace_source(Source::File, from_file)
                .map(|set| (set, n))
                .map_err(|source| NetbootError::File {
                    path: path.clone(),
                    source: Box::new(source),
                })
        });
        let mut status = self
            .file_status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match result {
            Ok((set, n)) => {
                self.install(set);
                status.assignments = n;
                status.loaded_at = Some(crate::clock::now_rfc3339());
                status.error = None;
                tracing::info!(path = %path.display(), assignments = n, "machines file reloaded");
                Ok(n)
            }
            Err(e) => {
                status.error = Some(format!("{:#}", crate::causes::Causes(&e)));
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netboot::ident::Identity;
    use crate::store::BlobStore;

    const ID: &str = "376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba";

    struct Fixture {
        dir: tempfile::TempDir,
        meta: Arc<dyn MetaStore>,
        schematics: SchematicStore,
    }

    async fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let meta: Arc<dyn MetaStore> =
            Arc::new(crate::store::SledStore::open(&dir.path().join("meta")).unwrap());
        let blobs = BlobStore::open(&dir.path().join("blobs"), Arc::clone(&meta)).unwrap();
        let schematics = SchematicStore::new(&blobs).unwrap();
        schematics.put(ID, "customization: {}\n").await.unwrap();
        Fixture {
            dir,
            meta,
            schematics,
        }
    }

    fn spec(mac: Option<&str>) -> AssignmentSpec {
        AssignmentSpec {
            name: None,
            selector: crate::netboot::SelectorSpec {
                mac: mac.map(str::to_string),
                ..Default::default()
            },
            schematic: ID.into(),
            version: "v1.11.0".into(),
            platform: None,
            extra_kernel_args: vec!["x=1".into()],
            http_boot: Default::default(),
        }
    }

    #[tokio::test]
    async fn api_assignments_are_durable_and_file_ones_read_only() {
        let f = fixture().await;
        let file = f.dir.path().join("machines.yaml");
        std::fs::write(
            &file,
            format!(
                "machines:\n  - name: default\n    selector: {{}}\n    schematic: {ID}\n    version: v1.11.0\n"
            ),
        )
        .unwrap();
        let m = Machines::open(
            Arc::clone(&f.meta),
            f.schematics.clone(),
            file.to_str().unwrap(),
        )
        .unwrap();
        let (a, created) = m.set("n1", &spec(Some("AA-BB-CC-DD-EE-01"))).await.unwrap();
        assert!(created);
        assert_eq!(a.selector.to_string(), "mac=aa:bb:cc:dd:ee:01");
        // Unknown schematics, file names and removal of file entries are refused.
        let mut unknown = spec(Some("aa:bb:cc:dd:ee:02"));
        unknown.schematic = "b".repeat(64);
        assert!(matches!(
            m.set("n2", &unknown).await,
            Err(NetbootError::UnknownSchematic { .. })
        ));
        assert!(matches!(
            m.set("default", &spec(Some("aa:bb:cc:dd:ee:03"))).await,
            Err(NetbootError::NameTaken { .. })
        ));
        assert!(matches!(
            m.remove("default").await,
            Err(NetbootError::NameTaken { .. })
        ));
        assert!(matches!(
            m.remove("nope").await,
            Err(NetbootError::NotFound { .. })
        ));
        // An API default would tie with the file's.
        assert!(matches!(
            m.set("d2", &spec(None)).await,
            Err(NetbootError::Tie { .. })
        ));
        drop(m);
        let again = Machines::open(Arc::clone(&f.meta), f.schematics.clone(), "").unwrap();
        let set = again.current();
        assert_eq!(set.len(), 1, "only the API's assignment is stored");
        let id = Identity::from_query("mac=aa:bb:cc:dd:ee:01");
        assert_eq!(set.resolve(&id).map(|a| a.name.as_str()), Some("n1"));
        again.remove("n1").await.unwrap();
        assert!(again.current().is_empty());
    }

    #[tokio::test]
    async fn a_bad_reload_keeps_the_previous_file() {
        let f = fixture().await;
        let file = f.dir.path().join("machines.yaml");
        let entry = |name: &str, mac: &str| {
            format!(
                "  - name: {name}\n    selector: {{mac: \"{mac}\"}}\n    schematic: {ID}\n    version: v1.11.0\n"
            )
        };
        std::fs::write(
            &file,
            format!("machines:\n{}", entry("f1", "52:54:00:00:00:01")),
        )
        .unwrap();
        let m = Machines::open(
            Arc::clone(&f.meta),
            f.schematics.clone(),
            file.to_str().unwrap(),
        )
        .unwrap();
        m.set("api1", &spec(Some("52:54:00:00:00:09")))
            .await
            .unwrap();
        let names =
            |m: &Machines| -> Vec<String> { m.current().iter().map(|a| a.name.clone()).collect() };
        for bad in [
            "machines: [".to_string(),
            "machine: []\n".to_string(),
            format!("machines:\n{}", entry("f1", "not-a-mac")),
            // Ties with the API's api1.
            format!("machines:\n{}", entry("f9", "52-54-00-00-00-09")),
            // Takes the API's name.
            format!("machines:\n{}", entry("api1", "52:54:00:00:00:07")),
        ] {
            std::fs::write(&file, &bad).unwrap();
            let err = m.reload_file().await.unwrap_err();
            assert!(matches!(err, NetbootError::File { .. }), "{bad}: {err}");
            assert_eq!(names(&m), ["api1", "f1"], "{bad}");
            assert!(m.file_status().error.is_some());
        }
        std::fs::write(
            &file,
            format!(
                "machines:\n{}{}",
                entry("f2", "52:54:00:00:00:02"),
                entry("f3", "52:54:00:00:00:03")
            ),
        )
        .unwrap();
        assert_eq!(m.reload_file().await.unwrap(), 2);
        assert_eq!(names(&m), ["api1", "f2", "f3"]);
        assert_eq!(m.file_status().error, None);
        // A missing file is refused too (the previous set stays).
        std::fs::remove_file(&file).unwrap();
        assert!(m.reload_file().await.is_err());
        assert_eq!(names(&m), ["api1", "f2", "f3"]);
        // At start, a bad file is an error.
        drop(m);
        std::fs::write(&file, "machines: 3\n").unwrap();
        assert!(
            Machines::open(
                Arc::clone(&f.meta),
                f.schematics.clone(),
                file.to_str().unwrap()
            )
            .is_err()
        );
    }
}
